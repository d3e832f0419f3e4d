"""Every baseline config (``bundles/<name>/configs/baseline_*.json``) builds, trains one epoch over train.json and
evaluates with evaluate.json layered on top, writing the per-case files that ``python -m medmoe.apps.evaluate
compare`` and ``python -m medmoe.apps.baselines`` pair with the MoE model's.

The runs go through ``monai.bundle.run``, the function behind ``python -m monai.bundle run``, in this process: the
subprocess tests of each bundle already cover the command line, and one interpreter start per run would cost more
than the tiny runs themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from bundle_runner import REPO
from monai.bundle import run

from medmoe.data import make_adni_demo, make_fastmri_demo, make_gamma_demo

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:parsing config_file")]


def _gamma(folder: Path) -> Path:
    return make_gamma_demo(folder, num_cases=40, fundus_size=64, num_bscans=4, bscan_size=32)


def _adni(folder: Path) -> Path:
    return make_adni_demo(folder, num_subjects=40, image_size=16)


def _fastmri(folder: Path) -> Path:
    return make_fastmri_demo(folder, num_volumes=20, num_slices=4, image_size=32)


# bundle -> (tiny demo cohort, tiny overrides, id column of the cohort)
SMALL: dict[str, tuple[Callable[[Path], Path], dict, str]] = {
    "gamma_m4oe": (
        _gamma,
        {"image_size": [32, 32], "num_bscans": 4, "bscan_size": [16, 16], "batch_size": 4},
        "case_id",
    ),
    "adni_i2moe": (_adni, {"image_size": [16, 16, 16], "batch_size": 8}, "subject_id"),
    "fastmri_i2m2": (_fastmri, {"image_size": [24, 24], "batch_size": 4}, "slice_id"),
}

# what the trained weights of each baseline must (and must not) hold: the config built the model it names
WEIGHTS = {
    "gamma_m4oe/baseline_unet.json": (("encoder.model.", "decoder.", "segmentation_head.", "head.heads.glaucoma"), ()),
    "gamma_m4oe/baseline_fundus_only.json": (("backbone.", "head.heads.glaucoma"), ("decoder.", "seg_heads.")),
    "adni_i2moe/baseline_fusion.json": (("encoders.encoders.mri.", "backbone."), ("reweight.", "experts.")),
    "fastmri_i2m2/baseline_intra.json": (("unimodal.",), ("joint.",)),
    "fastmri_i2m2/baseline_inter.json": (("joint.",), ("unimodal.",)),
}
SEGMENTING = {"gamma_m4oe/baseline_unet.json"}


def test_every_baseline_config_is_tested():
    shipped = {f"{p.parent.parent.name}/{p.name}" for b in SMALL for p in (REPO / "bundles" / b).glob("configs/*.json")}
    assert {c for c in shipped if "/baseline_" in c} == set(WEIGHTS)


def _run(bundle: str, configs: list[str], **overrides) -> None:
    folder = REPO / "bundles" / bundle / "configs"
    run(config_file=[str(folder / c) for c in configs], device="cpu", **overrides)


@pytest.mark.parametrize("bundle", list(SMALL))
def test_baselines_train_one_epoch_and_evaluate(bundle: str, tmp_path: Path) -> None:
    make_cohort, small, id_column = SMALL[bundle]
    cohort = make_cohort(tmp_path / "demo")
    rows = pd.read_csv(cohort, dtype={id_column: str})
    test_ids = set(rows.loc[rows["split"] == "test", id_column])
    for name in sorted(c for c in WEIGHTS if c.startswith(f"{bundle}/")):
        config = name.split("/")[1]
        root = tmp_path / Path(config).stem
        common = {"bundle_root": str(root), "cohort_csv": str(cohort), **small}
        _run(bundle, ["train.json", config], **common, max_epochs=1)
        last = torch.load(root / "models" / "last.pt", map_location="cpu", weights_only=True)
        assert last["trainer"]["epoch"] == 1, name
        weights = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
        has, lacks = WEIGHTS[name]
        assert all(any(k.startswith(p) for k in weights) for p in has), (name, sorted(weights)[:8])
        assert not any(k.startswith(p) for k in weights for p in lacks), name

        _run(bundle, ["train.json", config, "evaluate.json"], **common, **{"eval_writer#n_bootstrap": 20})
        out = root / "eval"
        predictions = pd.read_csv(out / "predictions.csv", dtype={"id": str})
        if "split" in predictions:  # fastMRI scores the validation rows too (they choose the thresholds)
            predictions = predictions[predictions["split"] == "test"]
        assert set(predictions["id"]) == test_ids, name
        probs = [c for c in predictions if "_prob_" in c]
        assert probs and predictions[probs].notna().all().all(), name
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["tasks"], name
        if name in SEGMENTING:
            cases = pd.read_csv(out / "segmentation.csv", dtype={"id": str})
            assert set(cases["id"]) == set(rows.loc[(rows["split"] == "test") & rows["cup"].notna(), id_column])
            assert cases["dice_cup"].between(0, 1).all() and len(cases) > 0, name
        else:
            assert not (out / "segmentation.csv").exists(), name


def test_adni_fusion_baseline_is_the_i2moe_backbone_without_experts():
    # baseline_fusion.json replaces network_def (an override cannot keep part of the one it replaces); the encoders
    # and backbone settings are train.json's top-level ids `encoders` / `backbone_kwargs`, and every other key it
    # sets must equal train.json's
    folder = REPO / "bundles" / "adni_i2moe" / "configs"
    i2moe = json.loads((folder / "train.json").read_text())["network_def"]
    fusion = json.loads((folder / "baseline_fusion.json").read_text())["network_def"]
    assert fusion.pop("name") == "fusion" and i2moe.pop("name") == "i2moe"
    assert fusion == {k: i2moe[k] for k in fusion}
    assert fusion["encoders"] == "@encoders" and fusion["backbone_kwargs"] == "@backbone_kwargs"
