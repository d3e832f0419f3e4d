"""End to end: the embed_m4oe bundle trains, resumes, evaluates, infers and runs DDP on a tiny demo cohort.

Each run goes through ``python -m monai.bundle run`` in a subprocess exactly as a user types it, with config
ids overridden on the command line (tiny images, few epochs, outputs under ``tmp_path``).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from bundle_runner import ok, run_bundle, torchrun

from medmoe.data import make_embed_demo

TASKS = ("density", "birads", "risk")
MODALITIES = ("ffdm_cc", "ffdm_mlo", "s2d_cc", "s2d_mlo")

pytestmark = pytest.mark.slow


def bundle(*configs: str, **kwargs) -> subprocess.CompletedProcess:
    return run_bundle("embed_m4oe", *configs, **kwargs)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return make_embed_demo(tmp_path_factory.mktemp("demo"), num_exams=24, image_size=(48, 40))


def small(cohort: Path, root: Path, **extra) -> dict:
    """Overrides for a fast run: 32x32 images, batch 4, outputs in ``root``."""
    return {
        "bundle_root": str(root),
        "cohort_csv": str(cohort),
        "image_size": [32, 32],
        "batch_size": 4,
        "device": "cpu",
        **extra,
    }


def test_train_resume_evaluate_infer(cohort: Path, tmp_path: Path) -> None:
    rows = pd.read_csv(cohort)
    test_index = rows.index[rows["split"] == "test"]
    rows.loc[test_index[0], "s2d_mlo"] = None  # test exams with missing views for the retriever to fill
    rows.loc[test_index[1], ["ffdm_cc", "s2d_cc"]] = None
    images = cohort.parent
    cohort = tmp_path / "cohort.csv"
    rows.to_csv(cohort, index=False)
    run = small(cohort, tmp_path / "b", data_root=str(images))
    ok(bundle("train.json", **run, max_epochs=2))
    models = tmp_path / "b" / "models"
    weights = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("embedder") for k in weights) and not any(k.startswith("module.") for k in weights)
    assert torch.load(models / "last.pt", map_location="cpu", weights_only=True)["trainer"]["epoch"] == 2

    resumed = ok(bundle("train.json", **run, max_epochs=3, resume=True))
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert torch.load(models / "last.pt", map_location="cpu", weights_only=True)["trainer"]["epoch"] == 3

    ok(bundle("train.json", "evaluate.json", **run, **{"eval_writer#n_bootstrap": 50}))
    eval_dir = tmp_path / "b" / "eval"
    rows = pd.read_csv(cohort)
    test_ids = set(rows.loc[rows["split"] == "test", "exam_id"])
    predictions = pd.read_csv(eval_dir / "predictions.csv")
    assert set(predictions["id"]) == test_ids
    for task, classes in zip(TASKS, (4, 3, 2), strict=True):
        probs = predictions[[f"{task}_prob_{k}" for k in range(classes)]].to_numpy()
        assert abs(probs.sum(1) - 1).max() < 1e-5
    metrics = json.loads((eval_dir / "metrics.json").read_text())["tasks"]
    assert set(metrics) == set(TASKS)
    for task in TASKS:
        labelled = rows.loc[(rows["split"] == "test") & rows[task].notna()]
        assert metrics[task]["n"] == len(labelled)
        assert metrics[task]["accuracy"] is None or 0.0 <= metrics[task]["accuracy"] <= 1.0
    contributions = pd.read_csv(eval_dir / "modality_contributions.csv")
    assert len(contributions) == len(test_ids) * len(TASKS)
    assert (contributions[list(MODALITIES)].sum(1) - 1).abs().max() < 1e-5
    assert (eval_dir / "modality_contributions.png").stat().st_size > 1000
    assert (eval_dir / "report" / "report.md").is_file()
    retrieved = pd.read_csv(eval_dir / "retrieval.csv")  # the default fill: one row per missing test view
    test_rows = rows.loc[rows["split"] == "test"]
    missing = {(e, v) for v in MODALITIES for e in test_rows.loc[test_rows[v].isna(), "exam_id"]}
    assert missing and set(zip(retrieved["id"], retrieved["modality"], strict=True)) == missing
    train_ids = set(rows.loc[rows["split"] == "train", "exam_id"])
    assert all(set(s.split(";")) <= train_ids for s in retrieved["support_ids"])
    assert (eval_dir / "retrieval_experts.png").stat().st_size > 1000

    unlabelled = tmp_path / "unlabelled.csv"
    rows[["exam_id", *MODALITIES]].to_csv(unlabelled, index=False)
    ok(bundle("train.json", "inference.json", **small(unlabelled, tmp_path / "b"), data_root=str(images)))
    inferred = pd.read_csv(tmp_path / "b" / "inference" / "predictions.csv")
    assert list(inferred["id"]) == list(rows["exam_id"])
    assert not (tmp_path / "b" / "inference" / "metrics.json").exists()
    inferred_fills = pd.read_csv(tmp_path / "b" / "inference" / "retrieval.csv")
    assert len(inferred_fills) == int(rows[list(MODALITIES)].isna().sum().sum())  # every missing view, every exam


def test_multi_gpu_config_two_cpu_processes(cohort: Path, tmp_path: Path) -> None:
    """multi_gpu_train.json with 2 gloo processes; the default retriever keeps one bank of training exams."""
    run = small(cohort, tmp_path / "ddp")
    ok(bundle("train.json", "multi_gpu_train.json", launcher=torchrun(2), **run, max_epochs=1))
    models = tmp_path / "ddp" / "models"
    state = torch.load(models / "last.pt", map_location="cpu", weights_only=True)
    assert state["trainer"]["epoch"] == 1
    rows = pd.read_csv(cohort)
    train_rows = int((rows["split"] == "train").sum())
    per_rank_iterations = -(-train_rows // 2) // 4 + (1 if (-(-train_rows // 2)) % 4 else 0)
    assert state["trainer"]["iteration"] == per_rank_iterations  # each rank saw half the training set
    events = list((tmp_path / "ddp" / "logs").glob("events.out.tfevents.*"))
    assert len(events) == 2, events  # rank 0's trainer and evaluator writers; rank 1 writes nothing

    weights = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    bank = "missing_fill.retriever.bank."
    filled = weights[bank + "filled"]
    ids = {i for i, f in zip(weights[bank + "_extra_state"]["ids"], filled.tolist()) if f}
    assert ids == set(rows.loc[rows["split"] == "train", "exam_id"])  # both ranks' exams, training split only
    ok(bundle("train.json", "evaluate.json", **run, **{"eval_writer#n_bootstrap": 10}))
    assert (tmp_path / "ddp" / "eval" / "metrics.json").is_file()


def test_learned_fill_option_trains_and_evaluates(cohort: Path, tmp_path: Path) -> None:
    """``--missing_modality learned``: a learned token bank instead of the retriever, and no retriever losses."""
    run = small(cohort, tmp_path / "l", missing_modality="learned")
    ok(bundle("train.json", **run, max_epochs=1))
    weights = torch.load(tmp_path / "l" / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "missing_fill.missing_tokens" in weights
    assert not any(".retriever." in k for k in weights)
    ok(bundle("train.json", "evaluate.json", **run, **{"eval_writer#n_bootstrap": 10}))
    metrics = json.loads((tmp_path / "l" / "eval" / "metrics.json").read_text())["tasks"]
    assert set(metrics) == set(TASKS)
    assert not (tmp_path / "l" / "eval" / "retrieval.csv").exists()  # the retrieval writer is off


def test_bad_cohort_fails_before_training_and_names_the_row(cohort: Path, tmp_path: Path) -> None:
    rows = pd.read_csv(cohort)
    rows.loc[3, "ffdm_cc"] = "images/nowhere.dcm"
    rows.loc[5, "density"] = 7
    bad = tmp_path / "bad.csv"
    rows.to_csv(bad, index=False)
    proc = bundle("train.json", **small(bad, tmp_path / "b", data_root=str(cohort.parent)), max_epochs=1)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert "row 5" in message and "nowhere.dcm" in message
    assert "row 7" in message and "density" in message
    assert not (tmp_path / "b" / "models").exists()


def test_default_demo_run_learns_every_task(tmp_path: Path) -> None:
    """README command (1) as shipped (default cohort, model and epochs), then evaluate.json on the test split.

    Spread over seeds 0-1 and the AVX2 code paths of PyTorch and MKL (benchmarks/learning_spread.py): AUROC density
    0.902-0.947, BI-RADS 0.760-0.869, risk 0.825-0.868; every threshold at least 0.16 below the worst run.
    """
    cache = {"MEDMOE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "2"}
    ok(bundle("train.json", env=cache, bundle_root=str(tmp_path / "b")))
    ok(bundle("train.json", "evaluate.json", env=cache, bundle_root=str(tmp_path / "b")))
    metrics = json.loads((tmp_path / "b" / "eval" / "metrics.json").read_text())["tasks"]
    assert metrics["density"]["auroc"] > 0.6 and metrics["birads"]["auroc"] > 0.6, metrics
    assert metrics["risk"]["auroc"] > 0.55, metrics
