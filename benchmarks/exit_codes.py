"""Exit codes of a training run that finds a bad file while the dataset is cached (issue 22, "abort at exit").

Run: ``python benchmarks/exit_codes.py [--runs 20] [--variants medmoe monai] [--out results/exit_codes.json]``.

Builds a small adni_i2moe demo cohort, truncates the voxel data of the first training MRI (the header still reads,
so cohort validation passes and the error comes while ``CacheDataset`` decodes it), and runs
``python -m monai.bundle run`` on ``train.json`` ``--runs`` times per variant, side by side:

- ``medmoe``: the bundle as shipped (``medmoe.data.CacheDataset``, which joins its caching threads on error);
- ``monai``: the same with ``monai.data.CacheDataset`` (``--train#dataset``, ``--validate#dataset``), the reference.

Every run must exit 1 with the message naming the file and leave nothing in ``models/`` or ``eval/``. With MONAI's
class some runs abort with ``terminate called without an active exception`` (exit -6, SIGABRT): its daemon caching
threads are still inside PyTorch calls when the interpreter finalizes (see ``medmoe/data/cache_dataset.py``).
Prints and writes JSON: per variant the count of each exit code, of runs that printed the message, that printed
``terminate called``, and that left outputs behind.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from medmoe.data import make_adni_demo
from medmoe.utils import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "medmoe": {},
    "monai": {  # the bundle's datasets rebuilt as monai.data.CacheDataset (make_dataset's RAM mode is medmoe's)
        "train#dataset": "$monai.data.CacheDataset(@cohort.records('train'), @train#preprocessing, progress=False)",
        "validate#dataset": "$monai.data.CacheDataset(@cohort.records(@validate#split), @validate#preprocessing, "
        "progress=False)",
    },
}


def bad_cohort(folder: Path) -> tuple[Path, Path]:
    """A 40-subject, 16^3 adni demo cohort whose first training MRI has half of its voxel data cut off."""
    csv = make_adni_demo(folder, num_subjects=40, image_size=16)
    rows = pd.read_csv(csv, dtype=str, keep_default_na=False)
    first = rows[(rows["split"] == "train") & (rows["mri"] != "")].iloc[0]
    path = csv.parent / first["mri"]
    raw = gzip.decompress(path.read_bytes())
    header = 352  # NIfTI-1 header + extension flag; the voxels follow
    path.write_bytes(gzip.compress(raw[: header + (len(raw) - header) // 2]))
    return csv, path


def run_once(csv: Path, root: Path, overrides: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    """One ``monai.bundle run`` of adni_i2moe's train.json on ``csv`` with outputs under ``root``."""
    config = REPO / "bundles" / "adni_i2moe" / "configs" / "train.json"
    args = {
        "bundle_root": str(root),
        "cohort_csv": str(csv),
        "image_size": "[16,16,16]",
        "batch_size": "8",
        "device": "cpu",
        "max_epochs": "1",
        **overrides,
    }
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", f"['{config}']"]
    for key, value in args.items():
        cmd += [f"--{key}", value]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=timeout
    )


def count(csv: Path, bad: Path, variant: str, runs: int, work: Path, timeout: int = 600) -> dict:
    """Run ``variant`` ``runs`` times; the tallies of exit codes, messages and outputs left behind."""
    codes, message, aborts, left, seconds = Counter(), 0, 0, 0, []
    for i in range(runs):
        root = work / f"{variant}_{i}"
        start = time.perf_counter()
        proc = run_once(csv, root, VARIANTS[variant], timeout)
        seconds.append(time.perf_counter() - start)
        codes[proc.returncode] += 1
        message += f"{bad}: not a readable NIfTI file" in proc.stderr
        aborts += "terminate called" in proc.stderr
        left += any((root / d).exists() and any((root / d).iterdir()) for d in ("models", "eval"))
        shutil.rmtree(root, ignore_errors=True)
        print(f"{variant} run {i + 1}/{runs}: exit {proc.returncode} ({seconds[-1]:.1f} s)", flush=True)
    return {
        "runs": runs,
        "exit_codes": {str(k): v for k, v in sorted(codes.items())},
        "runs_with_message": message,
        "runs_with_terminate_called": aborts,
        "runs_leaving_outputs": left,
        "mean_seconds_per_run": sum(seconds) / len(seconds),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["medmoe", "monai"])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "exit_codes.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="medmoe_exit_codes_") as tmp:
        csv, bad = bad_cohort(Path(tmp) / "demo")
        results = {variant: count(csv, bad, variant, args.runs, Path(tmp)) for variant in args.variants}
    results["environment"] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "OMP_NUM_THREADS": "1",
    }
    print(json.dumps(results, indent=2))
    atomic_write_text(Path(args.out), json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
