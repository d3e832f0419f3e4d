"""End to end: the gamma_m4oe bundle trains, resumes, evaluates (grade AUROC + cup Dice) and infers on a tiny demo
cohort; the disc + cup (3-class) option; a case without a fundus.

Each run goes through ``python -m monai.bundle run`` in a subprocess exactly as a user types it, with config
ids overridden on the command line (tiny images, few epochs, outputs under ``tmp_path``).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from bundle_runner import ok, run_bundle, torchrun
from PIL import Image

from medmoe.data import make_gamma_demo

pytestmark = pytest.mark.slow


def bundle(*configs: str, **kwargs) -> subprocess.CompletedProcess:
    return run_bundle("gamma_m4oe", *configs, **kwargs)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """40 demo eyes; the OCT of the first train and first test eye is dropped so that both paths see a missing OCT."""
    path = make_gamma_demo(tmp_path_factory.mktemp("gamma"), num_cases=40, fundus_size=64, num_bscans=4, bscan_size=32)
    rows = pd.read_csv(path, dtype=str, keep_default_na=False)
    for split in ("train", "test"):
        rows.loc[rows.index[rows["split"] == split][0], "oct"] = ""
    rows.to_csv(path, index=False)
    return path


def small(cohort: Path, root: Path, **extra) -> dict:
    """Overrides for a fast run: 32 x 32 fundus, 4 B-scans of 16 x 16 (16 tokens each), batch 4."""
    return {
        "bundle_root": str(root),
        "cohort_csv": str(cohort),
        "image_size": [32, 32],
        "num_bscans": 4,
        "bscan_size": [16, 16],
        "batch_size": 4,
        "device": "cpu",
        **extra,
    }


def test_train_resume_evaluate_infer(cohort: Path, tmp_path: Path) -> None:
    run = small(cohort, tmp_path / "b")
    ok(bundle("train.json", **run, max_epochs=1))
    models = tmp_path / "b" / "models"
    assert torch.load(models / "last.pt", map_location="cpu", weights_only=True)["trainer"]["epoch"] == 1
    resumed = ok(bundle("train.json", **run, max_epochs=2, resume=True))
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert torch.load(models / "last.pt", map_location="cpu", weights_only=True)["trainer"]["epoch"] == 2
    weights = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("volume_embedders.oct") for k in weights)
    assert any(k.startswith("seg_heads.cup") for k in weights)

    ok(bundle("train.json", "evaluate.json", **run, **{"eval_writer#n_bootstrap": 20}))
    eval_dir = tmp_path / "b" / "eval"
    rows = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    test = rows[rows["split"] == "test"]
    predictions = pd.read_csv(eval_dir / "predictions.csv", dtype={"id": str})
    assert set(predictions["id"]) == set(test["case_id"])
    probs = predictions[[f"glaucoma_prob_{k}" for k in range(3)]].to_numpy()
    assert abs(probs.sum(1) - 1).max() < 1e-5
    metrics = json.loads((eval_dir / "metrics.json").read_text())["tasks"]
    assert metrics["glaucoma"]["n"] == int((test["glaucoma"] != "").sum())
    assert metrics["cup"]["n"] == int((test["cup"] != "").sum()) > 0
    assert metrics["cup"]["resolution"] == "original"  # against the 64 x 64 GAMMA masks, not the 32 x 32 input
    assert 0.0 <= metrics["cup"]["dice"] <= 1.0 and 0.0 <= metrics["cup"]["dice_network"] <= 1.0
    per_case = pd.read_csv(eval_dir / "segmentation.csv", dtype={"id": str})
    assert set(per_case["id"]) == set(test.loc[test["cup"] != "", "case_id"])
    assert {"dice_cup", "iou_cup", "hd95_cup", "network_dice_cup"} <= set(per_case.columns)
    contributions = pd.read_csv(eval_dir / "modality_contributions.csv")
    assert len(contributions) == len(test) * 2  # glaucoma and cup

    unlabelled = tmp_path / "unlabelled.csv"
    rows[["case_id", "fundus", "oct"]].to_csv(unlabelled, index=False)
    ok(bundle("train.json", "inference.json", **small(unlabelled, tmp_path / "b"), data_root=str(cohort.parent)))
    inferred = pd.read_csv(tmp_path / "b" / "inference" / "predictions.csv", dtype={"id": str})
    assert list(inferred["id"]) == list(rows["case_id"])
    for case, fundus in zip(rows["case_id"], rows["fundus"]):  # masks on the original photographs
        mask = np.asarray(Image.open(tmp_path / "b" / "inference" / "cup_masks" / f"{case}.png"))
        width, height = Image.open(cohort.parent / fundus).size
        assert mask.shape == (height, width) == (64, 64) and set(np.unique(mask)) <= {0, 255}
    assert not (tmp_path / "b" / "inference" / "metrics.json").exists()


def test_multi_gpu_config_two_cpu_processes(cohort: Path, tmp_path: Path) -> None:
    ok(
        bundle(
            "train.json", "multi_gpu_train.json", launcher=torchrun(2), **small(cohort, tmp_path / "ddp"), max_epochs=1
        )
    )
    state = torch.load(tmp_path / "ddp" / "models" / "last.pt", map_location="cpu", weights_only=True)
    assert state["trainer"]["epoch"] == 1
    train_rows = int((pd.read_csv(cohort)["split"] == "train").sum())
    per_rank = math.ceil(train_rows / 2)
    assert state["trainer"]["iteration"] == math.ceil(per_rank / 4)  # each rank saw half the training set


def test_retriever_fills_missing_oct_under_ddp(cohort: Path, tmp_path: Path) -> None:
    """``--missing_modality retriever`` with 2 gloo processes; evaluation lists the OCT retrieved for each test eye
    without one, from training eyes only."""
    run = small(cohort, tmp_path / "r", missing_modality="retriever")
    ok(bundle("train.json", "multi_gpu_train.json", launcher=torchrun(2), **run, max_epochs=1))
    ok(bundle("train.json", "evaluate.json", **run, **{"eval_writer#n_bootstrap": 10}))
    rows = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    test = rows[rows["split"] == "test"]
    retrieved = pd.read_csv(tmp_path / "r" / "eval" / "retrieval.csv", dtype=str)
    assert set(retrieved["id"]) == set(test.loc[test["oct"] == "", "case_id"]) and set(retrieved["modality"]) == {"oct"}
    train_ids = set(rows.loc[rows["split"] == "train", "case_id"])
    assert all(set(s.split(";")) <= train_ids for s in retrieved["support_ids"])


def test_disc_and_cup_three_classes(cohort: Path, tmp_path: Path) -> None:
    """``mask_classes=3``: background / rim / cup; evaluate gives per-case cup and disc Dice, inference 0/128/255."""
    run = small(cohort, tmp_path / "b", mask_classes=3)
    ok(bundle("train.json", **run, max_epochs=1))
    weights = torch.load(tmp_path / "b" / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert weights["seg_heads.cup.out.conv.conv.bias"].shape == (3,)
    ok(bundle("train.json", "evaluate.json", **run, **{"eval_writer#n_bootstrap": 20}))
    rows = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    masked = rows.loc[(rows["split"] == "test") & (rows["cup"] != ""), "case_id"]
    per_case = pd.read_csv(tmp_path / "b" / "eval" / "segmentation.csv", dtype={"id": str})
    assert set(per_case["id"]) == set(masked)
    for region in ("cup", "disc"):
        assert per_case[f"dice_{region}"].between(0, 1).all() and per_case[f"network_dice_{region}"].notna().all()
    cup = json.loads((tmp_path / "b" / "eval" / "metrics.json").read_text())["tasks"]["cup"]
    assert set(cup["dice_per_region"]) == {"cup", "disc"} and cup["dice_per_region"]["disc"]["n"] == len(masked)
    ok(bundle("train.json", "inference.json", **run))
    grey = [np.asarray(Image.open(p)) for p in (tmp_path / "b" / "inference" / "cup_masks").iterdir()]
    assert len(grey) == len(rows) and all(g.shape == (64, 64) and set(np.unique(g)) <= {0, 128, 255} for g in grey)


def test_a_case_without_fundus_fails_before_training_naming_it(cohort: Path, tmp_path: Path) -> None:
    rows = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    case = rows.loc[rows["split"] == "val", "case_id"].iloc[0]
    rows.loc[rows["case_id"] == case, "fundus"] = ""
    bad = tmp_path / "no_fundus.csv"
    rows.to_csv(bad, index=False)
    proc = bundle("train.json", **small(bad, tmp_path / "b", data_root=str(cohort.parent)), max_epochs=1)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"case_id='{case}'): no 'fundus' image" in message, message[-3000:]
    assert not (tmp_path / "b" / "models").exists()


def test_default_demo_run_learns_grade_and_cup(tmp_path: Path) -> None:
    """README command as shipped (default cohort, model and 40 epochs), then evaluate.json on the test split.

    About 70 s training + 15 s evaluation on one thread. Spread over seeds 0-1 and the AVX2 code paths of PyTorch and
    MKL (benchmarks/learning_spread.py): glaucoma AUROC 1.000 in every run, accuracy 0.867-1.000 (majority class
    0.53), cup Dice 0.883-0.911 (all three trivial baselines 0.0). Every threshold is at least 0.1 below the worst run.
    """
    cache = {"MEDMOE_CACHE": str(tmp_path / "cache")}
    ok(bundle("train.json", env=cache, bundle_root=str(tmp_path / "b")))
    ok(bundle("train.json", "evaluate.json", env=cache, bundle_root=str(tmp_path / "b")))
    eval_dir = tmp_path / "b" / "eval"
    metrics = json.loads((eval_dir / "metrics.json").read_text())["tasks"]
    labels = pd.read_csv(eval_dir / "predictions.csv")["glaucoma_label"]
    labels = labels[labels >= 0]
    majority = labels.value_counts().max() / len(labels)
    assert metrics["glaucoma"]["n"] == len(labels) and majority < 0.6
    assert metrics["glaucoma"]["auroc"] > 0.9, metrics  # chance 0.5
    assert metrics["glaucoma"]["accuracy"] > max(0.65, majority + 0.1), (majority, metrics)
    per_case = pd.read_csv(eval_dir / "segmentation.csv", dtype={"id": str})
    assert metrics["cup"]["dice"] == pytest.approx(per_case["dice_cup"].mean())
    assert metrics["cup"]["dice"] > 0.75, metrics  # empty, centred-disc and mean-mask predictions all score 0.0
