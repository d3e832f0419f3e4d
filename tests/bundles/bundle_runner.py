"""Run ``python -m monai.bundle run`` in a subprocess, as a user types it, for the bundle tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def torchrun(nproc: int = 2) -> tuple[str, ...]:
    """Launcher prefix for ``nproc`` local processes (gloo on CPU)."""
    exe = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    return (exe, "--standalone", f"--nproc_per_node={nproc}")


def run_bundle(
    bundle: str,
    *configs: str,
    launcher: tuple[str, ...] = (sys.executable,),
    env: dict | None = None,
    timeout: int = 900,
    **overrides,
) -> subprocess.CompletedProcess:
    """Run ``bundles/<bundle>/configs/<configs...>`` with ``--key value`` overrides; return the finished process.

    Values that are not strings go through JSON (lists, numbers, booleans). One OpenMP thread that sleeps while
    it waits, so the subprocess and the other xdist worker do not stall each other on 2 cores.
    """
    folder = REPO / "bundles" / bundle / "configs"
    cmd = [
        *launcher,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        "[" + ",".join(f"'{folder / c}'" for c in configs) + "]",
    ]
    for key, value in overrides.items():
        cmd += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout
    )


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Assert the run succeeded, showing the end of its output otherwise."""
    output = f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"exit {proc.returncode}\n{output}"
    return proc
