"""embed_m4oe's baselines (configs/baseline_dense_vit.json, baseline_single_view.json): each overrides train.json by
id, trains one epoch on a tiny demo cohort and evaluate.json layered on top writes its test predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from bundle_runner import REPO, ok, run_bundle
from monai.bundle import ConfigParser

from medmoe.data import make_embed_demo

CONFIGS = REPO / "bundles" / "embed_m4oe" / "configs"
BASELINES = {"baseline_dense_vit.json": "dense_vit", "baseline_single_view.json": "single_view_vit"}


def parsed(*files: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in files])
    return parser


@pytest.mark.parametrize("config", list(BASELINES))
def test_baseline_matches_the_m4oe_sizes_and_drops_its_losses(config):
    m4oe, base = parsed("train.json").get("network_def"), parsed("train.json", config)
    net = base.get("network_def")
    assert net["name"] == BASELINES[config]
    for key in ("patch_size", "hidden_size", "mlp_dim", "num_heads", "dropout_rate", "in_channels", "image_size"):
        assert net[key] == m4oe[key], key  # the same width, tokens and regularisation as the bundle's M4oE
    assert net["depth"] == m4oe["msoe_depth"] + m4oe["fusion_depth"]
    base["device"] = "cpu"
    assert base.get_parsed_content("loss").aux_weights == {}  # no MI loss, no retriever losses
    for key in ("max_epochs", "seed", "batch_size", "learning_rate", "cohort", "preprocessing", "train#augmentation"):
        assert base.get(key) == parsed("train.json").get(key), key  # same budget, cohort, splits, transforms


@pytest.mark.slow
@pytest.mark.parametrize("config", list(BASELINES))
def test_baseline_trains_one_epoch_and_evaluates(config, tmp_path: Path) -> None:
    cohort = make_embed_demo(tmp_path / "demo", num_exams=16, image_size=(40, 32))
    run = {
        "bundle_root": str(tmp_path / "b"),
        "cohort_csv": str(cohort),
        "data_root": str(cohort.parent),
        "image_size": [32, 32],
        "batch_size": 4,
        "device": "cpu",
    }
    ok(run_bundle("embed_m4oe", "train.json", config, **run, max_epochs=1))
    weights = torch.load(tmp_path / "b" / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("blocks.0.mlp.fc1") for k in weights)  # timm's dense ViT block, no experts
    assert not any("experts" in k or "retriever" in k for k in weights)
    ok(run_bundle("embed_m4oe", "train.json", config, "evaluate.json", **run, **{"eval_writer#n_bootstrap": 10}))
    predictions = pd.read_csv(tmp_path / "b" / "eval" / "predictions.csv")
    rows = pd.read_csv(cohort)
    assert set(predictions["id"]) == set(rows.loc[rows["split"] == "test", "exam_id"])
    assert abs(predictions[[f"density_prob_{k}" for k in range(4)]].sum(1) - 1).max() < 1e-5
    metrics = json.loads((tmp_path / "b" / "eval" / "metrics.json").read_text())["tasks"]
    assert set(metrics) == {"density", "birads", "risk"}
    assert not (tmp_path / "b" / "eval" / "modality_contributions.csv").exists()  # an M4oE-only interpretation
