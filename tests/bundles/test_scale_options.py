"""The bundle options ``cache`` and ``precision`` on tiny gamma_m4oe runs (fundus + OCT, segmentation)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from bundle_runner import ok, run_bundle
from test_gamma_m4oe import small

from medmoe.data import make_gamma_demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return make_gamma_demo(tmp_path_factory.mktemp("gamma"), num_cases=24, fundus_size=64, num_bscans=4, bscan_size=32)


def test_disk_cache_trains_one_epoch_like_the_ram_cache(cohort: Path, tmp_path: Path) -> None:
    cache = tmp_path / "disk_cache"
    disk_run = small(cohort, tmp_path / "disk", max_epochs=1, cache="disk", cache_dir=str(cache))
    ok(run_bundle("gamma_m4oe", "train.json", **disk_run))
    rows = pd.read_csv(cohort)
    assert len(list(cache.glob("*.pt"))) == int(rows["split"].isin(["train", "val"]).sum())  # one file per sample
    assert not (tmp_path / "disk" / "cache").exists()  # cache_dir, not the default under bundle_root

    ok(run_bundle("gamma_m4oe", "train.json", **small(cohort, tmp_path / "ram", max_epochs=1)))  # default cache "ram"
    assert not (tmp_path / "ram" / "cache").exists()
    disk, ram = (torch.load(tmp_path / r / "models" / "model.pt", weights_only=True) for r in ("disk", "ram"))
    assert disk.keys() == ram.keys()
    for key in disk:
        torch.testing.assert_close(disk[key], ram[key], rtol=0, atol=1e-6, msg=key)  # the same samples

    # evaluation through the disk cache (the cup Dice on the photograph uses each sample's recorded crop geometry)
    metrics = {}
    for mode in ("disk", "ram"):
        run = small(
            cohort, tmp_path / "ram", cache=mode, cache_dir=str(cache), output_dir=str(tmp_path / mode / "eval")
        )
        ok(run_bundle("gamma_m4oe", "train.json", "evaluate.json", **run, **{"eval_writer#n_bootstrap": 20}))
        metrics[mode] = json.loads((tmp_path / mode / "eval" / "metrics.json").read_text())["tasks"]
    for task, name in (("glaucoma", "auroc"), ("glaucoma", "accuracy"), ("cup", "dice"), ("cup", "dice_network")):
        assert metrics["disk"][task][name] == pytest.approx(metrics["ram"][task][name], abs=1e-6), (task, name)
    assert metrics["disk"]["cup"]["n"] == metrics["ram"]["cup"]["n"] > 0


def test_bf16_trains_on_cpu_and_fp16_there_is_refused(cohort: Path, tmp_path: Path) -> None:
    ok(run_bundle("gamma_m4oe", "train.json", **small(cohort, tmp_path / "bf16", max_epochs=1, precision="bf16")))
    weights = torch.load(tmp_path / "bf16" / "models" / "model.pt", weights_only=True)
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in weights.values())  # fp32 master weights
    refused = run_bundle("gamma_m4oe", "train.json", **small(cohort, tmp_path / "fp16", max_epochs=1, precision="fp16"))
    assert refused.returncode != 0
    assert "precision 'fp16' needs a CUDA device (device is 'cpu'); use --precision bf16 or fp32" in refused.stderr
