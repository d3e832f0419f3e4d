"""GAMMA demo cohort: layout, determinism, learnable signal, cache; FillMissingMasksd."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from medmoe.transforms import CupDiscToLabel, read_oct
from monai.data import list_data_collate
from PIL import Image

from medmoe.data import FillMissingMasksd, FillMissingModalitiesd, gamma_demo_cohort, load_cohort, make_gamma_demo
from medmoe.data.demo_gamma import render_bscans, render_fundus


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_gamma_demo(tmp_path_factory.mktemp("gamma"), num_cases=24, fundus_size=64, num_bscans=4, bscan_size=32)


def test_layout_and_cohort(demo: Path) -> None:
    root = demo.parent
    table = pd.read_csv(demo, dtype=str, keep_default_na=False)
    assert len(table) == 24 and set(table["split"]) == {"train", "val", "test"}
    assert (table["fundus"] != "").all()
    assert (table["oct"] == "").any() and (table["cup"] == "").any() and (table["glaucoma"] == "").any()
    assert set(table["glaucoma"]) - {""} == {"0", "1", "2"}
    case = table[(table["oct"] != "") & (table["cup"] != "")].iloc[0]
    fundus = np.asarray(Image.open(root / case["fundus"]))
    assert fundus.shape == (64, 64, 3) and (root / case["fundus"]).suffix == ".jpg"
    mask = np.asarray(Image.open(root / case["cup"]))
    assert set(np.unique(mask)) == {0, 128, 255}
    assert read_oct(root / case["oct"]).shape == (4, 32, 32)
    assert sorted(p.name for p in (root / case["oct"]).iterdir()) == [f"{k}_image.png" for k in range(4)]
    grades = pd.read_csv(root / "glaucoma_grading_training_GT.csv")
    assert list(grades.columns) == ["data", "non", "early", "mid_advanced"]
    cohort = load_cohort(demo, ["fundus", "oct"], {"glaucoma": 3}, id_column="case_id", path_columns=["cup"])
    assert len(cohort.records("train")) > 0


def test_deterministic(demo: Path, tmp_path: Path) -> None:
    again = make_gamma_demo(tmp_path, num_cases=24, fundus_size=64, num_bscans=4, bscan_size=32)
    assert again.read_text() == demo.read_text()
    a = next((demo.parent / "Disc_Cup_Mask").iterdir())
    assert a.read_bytes() == (tmp_path / "Disc_Cup_Mask" / a.name).read_bytes()


def test_signal_cup_ratio_in_mask_and_oct() -> None:
    """A larger cup-to-disc ratio gives a larger cup in the mask and a thinner nerve-fibre layer in the OCT."""
    areas, rims = [], []
    for cdr in (0.3, 0.55, 0.8):
        _, mask = render_fundus(np.random.default_rng(0), 64, (32, 40), 8, cdr)
        label = CupDiscToLabel()(torch.as_tensor(mask)[None])
        areas.append(float((label == 2).sum() / (label >= 1).sum()))
        scans = render_bscans(np.random.default_rng(0), 4, 64, cdr).astype(float)
        rims.append(float((scans[:, :, :8] > 150).mean()))  # bright layer away from the disc
    assert areas == sorted(areas) and abs(areas[1] - 0.55**2) < 0.1
    assert rims == sorted(rims, reverse=True)


def test_cache_and_bad_arguments(tmp_path: Path) -> None:
    kwargs = dict(num_cases=12, fundus_size=48, num_bscans=2, bscan_size=16)
    first = gamma_demo_cohort(tmp_path, **kwargs)
    assert first.is_file() and (first.parent / "demo_info.json").is_file()
    stamp = first.stat().st_mtime_ns
    assert gamma_demo_cohort(tmp_path, **kwargs) == first and first.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="unknown argument"):
        gamma_demo_cohort(tmp_path, colour=True)
    with pytest.raises(ValueError, match="num_cases"):
        make_gamma_demo(tmp_path / "x", num_cases=3)


def test_fill_missing_masks_lets_samples_collate() -> None:
    fill = FillMissingMasksd("cup", shape=(1, 4, 4))
    present = fill({"cup": torch.ones(1, 4, 4)})
    absent = fill({"cup": None})
    assert bool(present["cup_present"]) and not bool(absent["cup_present"])
    assert absent["cup"].dtype == torch.int64 and absent["cup"].abs().sum() == 0
    batch = list_data_collate([present, fill({}), absent])
    assert batch["cup"].shape == (3, 1, 4, 4) and batch["cup_present"].tolist() == [True, False, False]
    with pytest.raises(ValueError, match="mask 'cup'"):
        fill({"cup": torch.ones(1, 5, 4)})


def test_fill_missing_modalities_with_per_key_shapes() -> None:
    shapes = {"fundus": (3, 4, 4), "oct": (1, 2, 4, 4)}
    fill = FillMissingModalitiesd(["fundus", "oct"], shape=shapes)
    out = fill({"fundus": torch.zeros(3, 4, 4), "modality_mask": np.array([True, False])})
    assert out["oct"].shape == (1, 2, 4, 4) and torch.isnan(out["oct"]).all()
    with pytest.raises(ValueError, match="expected"):
        fill({"fundus": torch.zeros(1, 4, 4), "modality_mask": np.array([True, False])})
    with pytest.raises(ValueError, match="no entry"):
        FillMissingModalitiesd(["fundus", "oct"], shape={"fundus": (3, 4, 4)})
