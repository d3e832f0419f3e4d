"""End to end: the fastmri_i2m2 bundle trains, evaluates, infers and runs DDP on a tiny k-space demo cohort.

Each run goes through ``python -m monai.bundle run`` in a subprocess exactly as a user types it, with config
ids overridden on the command line (32 x 32 k-space, one epoch, outputs under ``tmp_path``).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from bundle_runner import ok, run_bundle, torchrun

from medmoe.data import make_fastmri_demo

TASKS = ("acl", "meniscus", "cartilage", "other")

pytestmark = pytest.mark.slow


def bundle(*configs: str, **kwargs) -> subprocess.CompletedProcess:
    return ok(run_bundle("fastmri_i2m2", *configs, **kwargs))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return make_fastmri_demo(tmp_path_factory.mktemp("demo"), num_volumes=20, num_slices=4, image_size=32)


def small(cohort: Path, root: Path, **extra) -> dict:
    return {
        "bundle_root": str(root),
        "cohort_csv": str(cohort),
        "image_size": [24, 24],
        "batch_size": 4,
        "device": "cpu",
        **extra,
    }


def test_train_evaluate_infer(cohort: Path, tmp_path: Path) -> None:
    run = small(cohort, tmp_path / "b")
    bundle("train.json", **run, max_epochs=1)
    weights = torch.load(tmp_path / "b" / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("unimodal.") for k in weights) and any(k.startswith("joint.") for k in weights)

    bundle("train.json", "evaluate.json", **run, **{"eval_writer#n_bootstrap": 20})
    rows = pd.read_csv(cohort)
    test_ids = set(rows.loc[rows["split"] == "test", "slice_id"])
    predictions = pd.read_csv(tmp_path / "b" / "eval" / "predictions.csv")
    assert set(predictions.loc[predictions["split"] == "test", "id"]) == test_ids
    assert set(predictions["split"]) == {"val", "test"}  # val rows choose the decision thresholds
    for task in TASKS:
        assert (predictions[f"{task}_prob_0"] + predictions[f"{task}_prob_1"] - 1).abs().max() < 1e-5
    metrics = json.loads((tmp_path / "b" / "eval" / "metrics.json").read_text())["tasks"]
    assert set(metrics) == set(TASKS)
    for task in TASKS:
        assert metrics[task]["n"] == int(((rows["split"] == "test") & rows[task].notna()).sum())
        assert 0.0 <= metrics[task]["balanced_accuracy"] <= 1.0 and metrics[task]["threshold"] is not None
    experts = json.loads((tmp_path / "b" / "eval" / "expert_metrics.json").read_text())
    assert set(experts) == {"magnitude", "phase", "joint"} and all(set(e) == set(TASKS) for e in experts.values())
    assert experts["joint"]["acl"]["n"] == metrics["acl"]["n"]  # every test slice has both modalities

    unlabelled = tmp_path / "unlabelled.csv"
    rows[["slice_id", "kspace", "slice"]].to_csv(unlabelled, index=False)
    bundle("train.json", "inference.json", **small(unlabelled, tmp_path / "b"), data_root=str(cohort.parent))
    inferred = pd.read_csv(tmp_path / "b" / "inference" / "predictions.csv")
    assert list(inferred["id"]) == list(rows["slice_id"])
    assert not (tmp_path / "b" / "inference" / "metrics.json").exists()


def test_multi_gpu_config_two_cpu_processes(cohort: Path, tmp_path: Path) -> None:
    bundle("train.json", "multi_gpu_train.json", launcher=torchrun(2), **small(cohort, tmp_path / "ddp"), max_epochs=1)
    models = tmp_path / "ddp" / "models"
    assert (models / "model.pt").is_file()
    state = torch.load(models / "last.pt", map_location="cpu", weights_only=True)
    train_rows = int((pd.read_csv(cohort)["split"] == "train").sum())
    per_epoch = math.ceil(math.ceil(train_rows / 2) / 4)  # each rank sees half the training slices, batch 4
    assert math.ceil(train_rows / 4) != per_epoch  # (a run without the DistributedSampler would count differently)
    assert state["trainer"] == {"epoch": 1, "iteration": per_epoch}


def test_pretrain_experts_then_fine_tune_the_product(cohort: Path, tmp_path: Path) -> None:
    run = small(cohort, tmp_path / "b")
    bundle("train.json", "pretrain.json", **run, max_epochs=1)
    pretrained = tmp_path / "b" / "models" / "pretrain" / "model.pt"
    start = torch.load(pretrained, map_location="cpu", weights_only=True)
    bundle("train.json", **run, max_epochs=1, learning_rate=0.0, init_weights=str(pretrained))
    end = torch.load(tmp_path / "b" / "models" / "last.pt", map_location="cpu", weights_only=True)["model"]
    for key, value in start.items():  # learning rate 0: fine-tuning started from, and kept, the pretrained weights
        torch.testing.assert_close(end[key], value)


def test_robustness_sweep_writes_auroc_per_noise_level(cohort: Path, tmp_path: Path) -> None:
    """Level 0 is the plain evaluation (same checkpoint, same test split); noise reaches the inputs at level 50."""
    run = small(cohort, tmp_path / "b")
    bundle("train.json", **run, max_epochs=1)
    bundle("train.json", "robustness.json", **run, noise_levels=[0, 25, 50])
    out = tmp_path / "b" / "eval" / "robustness"
    result = json.loads((out / "robustness.json").read_text())
    assert result["levels"] == [0.0, 25.0, 50.0] and set(result["auroc"]) == set(TASKS)
    for values in result["auroc"].values():
        assert len(values) == 3 and all(v is None or 0.0 <= v <= 1.0 for v in values)
    assert (out / "robustness.png").stat().st_size > 1000

    bundle("train.json", "evaluate.json", **run, **{"eval_writer#n_bootstrap": 0})
    metrics = json.loads((tmp_path / "b" / "eval" / "metrics.json").read_text())["tasks"]
    scored = [t for t in TASKS if metrics[t]["auroc"] is not None]
    assert scored
    for task in TASKS:
        if task in scored:
            assert result["auroc"][task][0] == pytest.approx(metrics[task]["auroc"], abs=1e-6), task
        else:
            assert result["auroc"][task][0] is None, task
    assert any(result["auroc"][t][2] != pytest.approx(result["auroc"][t][0], abs=1e-6) for t in scored), result


def test_default_demo_run_learns_where_the_signal_is(tmp_path: Path) -> None:
    """README command as shipped (default cohort, model and 40 epochs), then evaluate.json on the test split.

    About 90-120 s training + 10 s evaluation on one thread. Spread over seeds 0-1 and the AVX2 code paths of
    PyTorch and MKL (benchmarks/learning_spread.py): AUROC acl 0.987-0.994, meniscus 1.000, other 0.999-1.000 (chance
    0.5); mean AUROC over the four tasks 0.877-0.993 (cartilage carries no signal in the demo, so its AUROC is noise
    and the mean is not asserted), I2M2 minus the magnitude expert +0.131 to +0.205. Asserted: each signal task
    > 0.85 and I2M2 above the magnitude expert, both at least 0.13 beyond the worst run.
    """
    cache = {"MEDMOE_CACHE": str(tmp_path / "cache")}
    bundle("train.json", env=cache, bundle_root=str(tmp_path / "b"))
    bundle("train.json", "evaluate.json", env=cache, bundle_root=str(tmp_path / "b"))
    eval_dir = tmp_path / "b" / "eval"
    metrics = json.loads((eval_dir / "metrics.json").read_text())["tasks"]
    for task in ("acl", "meniscus", "other"):
        assert metrics[task]["auroc"] > 0.85, (task, metrics[task])
    experts = json.loads((eval_dir / "expert_metrics.json").read_text())
    mean_i2m2 = sum(metrics[t]["auroc"] for t in TASKS) / len(TASKS)
    mean_magnitude = sum(experts["magnitude"][t]["auroc"] for t in TASKS) / len(TASKS)
    assert mean_i2m2 > mean_magnitude, (mean_i2m2, mean_magnitude)
