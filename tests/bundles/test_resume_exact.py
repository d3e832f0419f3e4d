"""kill -9 in the middle of a training run, then ``--resume true``: the result equals the uninterrupted run's."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from bundle_runner import REPO, ok, run_bundle
from test_adni_i2moe import small

from medmoe.data import make_adni_demo

pytestmark = pytest.mark.slow


def _args(cohort: Path, root: Path, **extra) -> dict:
    return small(cohort, root, batch_size=4, max_epochs=3, **extra)


def _start(args: dict) -> subprocess.Popen:
    config = REPO / "bundles" / "adni_i2moe" / "configs" / "train.json"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", f"['{config}']"]
    for key, value in args.items():
        cmd += [f"--{key}", str(value).replace("'", '"') if not isinstance(value, str) else value]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _epoch(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["trainer"]["epoch"])
    except (FileNotFoundError, ValueError, RuntimeError, EOFError, OSError):
        return 0


def test_kill_9_mid_run_then_resume_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    cohort = make_adni_demo(tmp_path / "demo", num_subjects=40, image_size=16)
    ok(run_bundle("adni_i2moe", "train.json", **_args(cohort, tmp_path / "straight")))
    straight = torch.load(tmp_path / "straight" / "models" / "last.pt", map_location="cpu", weights_only=True)

    killed = tmp_path / "killed"
    for delay in (random.uniform(0.0, 0.2), 0.0, 0.0):  # a later try if the run finished before the kill
        shutil.rmtree(killed, ignore_errors=True)
        proc = _start(_args(cohort, killed))
        deadline = time.monotonic() + 600
        while _epoch(killed / "models" / "last.pt") < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(delay)  # somewhere after epoch 1
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        if 1 <= _epoch(killed / "models" / "last.pt") < 3:  # killed before the end of the run
            break
    else:
        pytest.fail("the run always ended before it could be killed")

    ok(run_bundle("adni_i2moe", "train.json", **_args(cohort, killed, resume=True)))
    resumed = torch.load(killed / "models" / "last.pt", map_location="cpu", weights_only=True)
    assert resumed["trainer"] == straight["trainer"] and resumed["best"] == straight["best"]
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    best = [torch.load(r / "models" / "model.pt", weights_only=True) for r in (tmp_path / "straight", killed)]
    assert all(torch.equal(best[0][k], best[1][k]) for k in best[0])
