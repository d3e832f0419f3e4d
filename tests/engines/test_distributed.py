"""finish_distributed: a torchrun run that got to its end exits 0 with its output flushed."""

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_a_finished_single_process_group_exits_zero_with_everything_flushed(tmp_path):
    marker = tmp_path / "written.txt"
    proc = _run(f"""
        import logging, os, sys
        import torch.distributed as dist
        from medmoe.engines import finish_distributed
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="0")
        dist.init_process_group("gloo", rank=0, world_size=1, init_method="tcp://127.0.0.1:0")
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        logging.getLogger("x").info("logged before the end")
        print("printed before the end", end="")  # no newline: only a flush gets it out
        open({str(marker)!r}, "w").write("ok")
        finish_distributed()
        print("never reached")
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "printed before the end" and "logged before the end" in proc.stderr
    assert marker.read_text() == "ok"


def test_an_error_before_the_end_still_fails_and_teardown_only_mode_returns():
    proc = _run("""
        import torch.distributed as dist
        from medmoe.engines import finish_distributed
        dist.init_process_group("gloo", rank=0, world_size=1, init_method="tcp://127.0.0.1:0")
        finish_distributed(exit_process=False)
        assert not dist.is_initialized()
        print("went on")
        raise RuntimeError("a failure after the teardown")
    """)
    assert proc.returncode == 1 and proc.stdout.strip() == "went on" and "a failure after the teardown" in proc.stderr
