"""Atomic checkpoints: ``model.pt`` (best by a validation metric) and ``last.pt`` (resumable).

Files are written to a temporary file in the same folder and renamed, so a crash never leaves a
half-written checkpoint (DESIGN.md, "Reliability"). Everything saved is plain tensors and numbers,
so it loads with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from ..utils import atomic_torch_save, remove_stale_temp_files
from .checkpoint_io import load_model_state, read_checkpoint
from .model_options import write_model_options
from .rng_state import capture_random_states, restore_random_states
from .sharing import SHARED_KIND, strip_training_data

__all__ = ["load_weights", "CheckpointHandler"]

logger = logging.getLogger(__name__)


def as_flag(value: bool | int | str, name: str) -> bool:
    """A boolean option that may arrive as a command-line string (``--resume false``)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no", ""):
            return False
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    return bool(value)


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)


def load_weights(
    network: torch.nn.Module, path: str | Path, map_location: str | torch.device = "cpu"
) -> torch.nn.Module:
    """Load ``model.pt`` (a state dict, or a dict with a ``model`` entry) into ``network``.

    Raises:
        FileNotFoundError: naming the checkpoint when it does not exist.
        ValueError: naming the checkpoint when it is truncated or not a PyTorch file, or when it does not fit
            ``network`` (the differing tensors, their shapes and the likely config option; see
            :func:`medmoe.engines.checkpoint_io.explain_mismatch`).
    """
    state = read_checkpoint(path, map_location)
    shared = isinstance(state, Mapping) and state.get("kind") == SHARED_KIND
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    load_model_state(_unwrap(network), state, path)
    if shared and strip_training_data(state)[1]:
        logger.warning(
            f"{path} is a model for sharing: its support bank is empty, so the retriever fills missing views without "
            "training supports (see medmoe.engines.sharing); training on your own data refills it"
        )
    return network


class CheckpointHandler:
    """Save the best model by ``metric_name`` and a resumable ``last.pt`` every epoch; optionally resume.

    Args:
        save_dir: output folder (created).
        network: the model (DDP wrappers are unwrapped).
        optimizer: saved into ``last.pt``.
        lr_scheduler: optional, saved into ``last.pt``.
        metric_name: validation metric deciding the best model (higher is better; NaN never wins).
        best_filename / last_filename: file names.
        resume: load ``last.pt`` (if present) when the trainer starts; ``"true"`` / ``"false"`` strings from a
            command line are accepted.
        rank: only rank 0 writes.
        companion_files: path (relative to ``save_dir``, or absolute) -> ``write(path)``: files a checkpoint needs
            beside it (the adni_i2moe bundle's ``tabular_preprocessing.json``). They are written with the run's first
            ``last.pt``, at the end of the first epoch, so a run that fails earlier (a bad file found while the
            dataset is cached) leaves nothing in ``save_dir``.

    Use ``attach(trainer, evaluator)``: ``last.pt`` is written after every training epoch,
    ``model.pt`` when the evaluator's metric improves (or every epoch without an evaluator). When the trainer starts,
    temp files of an earlier save that was killed mid-write are removed from ``save_dir`` (and logged;
    :func:`medmoe.utils.remove_stale_temp_files`).
    """

    def __init__(
        self,
        save_dir: str | Path,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler=None,
        metric_name: str | None = None,
        best_filename: str = "model.pt",
        last_filename: str = "last.pt",
        resume: bool = False,
        rank: int = 0,
        companion_files: Mapping[str | Path, Callable[[Path], object]] | None = None,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.companion_files = dict(companion_files or {})
        self.network, self.optimizer, self.lr_scheduler = network, optimizer, lr_scheduler
        self.metric_name, self.best_filename, self.last_filename = metric_name, best_filename, last_filename
        self.resume, self.rank = as_flag(resume, "resume"), int(rank)
        self.best = -math.inf

    @property
    def last_path(self) -> Path:
        return self.save_dir / self.last_filename

    def attach(self, trainer: Engine, evaluator: Engine | None = None) -> None:
        if self.rank == 0:  # a save killed mid-write (kill -9) left its temp file: remove it, with a warning
            trainer.add_event_handler(Events.STARTED, lambda _: remove_stale_temp_files(self.save_dir))
        if self.resume:
            trainer.add_event_handler(Events.STARTED, self._resume)
        if self.rank != 0:
            return
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._save_last, trainer)
        if evaluator is not None and self.metric_name:
            evaluator.add_event_handler(Events.COMPLETED, self._save_best)
            trainer.add_event_handler(Events.COMPLETED, self._warn_if_no_best)
        else:
            trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: self._write_best())

    def _write_best(self) -> None:
        atomic_torch_save(self.save_dir / self.best_filename, _unwrap(self.network).state_dict())
        write_model_options(self.save_dir / self.best_filename, self.network)  # what inference checks its config by

    def _save_best(self, evaluator: Engine) -> None:
        value = evaluator.state.metrics.get(self.metric_name, float("nan"))
        if value == value and value > self.best:
            self.best = value
            self._write_best()
            logger.info(f"saved {self.save_dir / self.best_filename} ({self.metric_name}={value:.4f})")

    def _warn_if_no_best(self, trainer: Engine) -> None:
        if self.best == -math.inf:  # the metric was NaN in every validation, e.g. one class in the validation split
            logger.warning(
                f"validation metric '{self.metric_name}' was never finite, so {self.save_dir / self.best_filename} "
                f"was not written; check the validation split's labels, or evaluate {self.last_path} with --ckpt_path"
            )

    def _save_last(self, trainer: Engine) -> None:
        for name, write in self.companion_files.items():  # before last.pt: a checkpoint never lacks them
            write(self.save_dir / name)
        self.companion_files = {}  # once per run
        state = {
            "model": _unwrap(self.network).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "trainer": {"epoch": trainer.state.epoch, "iteration": trainer.state.iteration},
            "best": self.best,
            "random": capture_random_states(_train_loader(trainer)),  # for an exact resume
        }
        if self.lr_scheduler is not None:
            state["lr_scheduler"] = self.lr_scheduler.state_dict()
        scaler = _grad_scaler(trainer)
        if scaler is not None:  # AMP: the loss scale it has settled on
            state["grad_scaler"] = scaler.state_dict()
        atomic_torch_save(self.last_path, state)

    def _resume(self, trainer: Engine) -> None:
        if not self.last_path.is_file():
            logger.warning(f"resume requested but {self.last_path} does not exist: starting from scratch")
            return
        state = read_checkpoint(self.last_path)
        if not isinstance(state, Mapping) or not {"model", "optimizer", "trainer"} <= set(state):
            raise ValueError(f"{self.last_path} is not a resumable checkpoint (no model / optimizer / trainer state)")
        load_model_state(_unwrap(self.network), state["model"], self.last_path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise ValueError(f"optimizer state in {self.last_path} does not fit this optimizer: {err}") from err
        if self.lr_scheduler is not None and "lr_scheduler" in state:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        scaler = _grad_scaler(trainer)
        if scaler is not None and "grad_scaler" in state:
            scaler.load_state_dict(state["grad_scaler"])
        trainer.state.epoch = int(state["trainer"]["epoch"])
        trainer.state.iteration = int(state["trainer"]["iteration"])
        self.best = float(state.get("best", -math.inf))
        if "random" in state:
            restore_random_states(state["random"], _train_loader(trainer), str(self.last_path))
        else:
            logger.warning(f"{self.last_path} holds no random states (an older medmoe wrote it): resume is not exact")
        logger.info(f"resumed from {self.last_path} at epoch {trainer.state.epoch}")


def _train_loader(trainer: Engine):
    """The trainer's data: a MONAI trainer's ``data_loader``, else what ``run`` was given."""
    return getattr(trainer, "data_loader", None) or trainer.state.dataloader


def _grad_scaler(trainer: Engine):
    """The enabled AMP gradient scaler of a MONAI trainer (``trainer.scaler_``), or None."""
    scaler = getattr(trainer, "scaler_", None)
    return scaler if scaler is not None and scaler.is_enabled() else None
