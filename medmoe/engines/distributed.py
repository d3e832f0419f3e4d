"""End a successful distributed (torchrun) run without PyTorch's teardown abort.

After a DDP run has finished and written everything, a rank sometimes still dies at interpreter exit with
``terminate called without an active exception`` (exit -6, SIGABRT): gloo's worker threads and the DDP reducer
hold work objects with tensors, and when those are destroyed during interpreter finalization they try to take the
GIL of an interpreter being torn down (PyTorch pull request 179291 describes the mechanism). It was seen three times in
this project's CI runs (two 2-process bundle runs, one ``mp.spawn`` unit test whose workers had destroyed their
process group) and not in 52 runs made to reproduce it: rare, but torchrun then reports the whole job as failed
although every output is on disk.

:func:`finish_distributed` is the bundles' last ``finalize`` step: every rank waits at a barrier, destroys the
process group, flushes the logs and standard streams, and leaves with ``os._exit(0)``, skipping the interpreter
finalization where the abort happens. It runs only when the run got there without an error: a failure raises before
and exits as usual (non-zero, with its traceback). Every writer the bundles use has already flushed (checkpoints
and CSVs are written atomically, MONAI's TensorBoard handlers flush after each write).
"""

from __future__ import annotations

import logging
import os
import sys

import torch.distributed as dist

__all__ = ["finish_distributed"]


def finish_distributed(exit_process: bool = True) -> None:
    """Barrier, destroy the default process group, flush, and (by default) end the process with exit code 0.

    Args:
        exit_process: end the process with ``os._exit(0)`` after the teardown (the bundles' ``finalize``); False
            only tears down (for callers that go on, e.g. tests).

    Example:
        in ``multi_gpu_train.json``: ``"finalize": ["$medmoe.engines.finish_distributed()"]``
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    if not exit_process:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing more can be written to it anyway
            pass
    os._exit(0)
