"""The fastMRI-style demo cohort: readable k-space, volume-level splits, determinism, cache, label signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from medmoe.transforms import read_kspace

from medmoe.data import fastmri_demo_cohort, load_cohort, make_fastmri_demo
from medmoe.data.demo_fastmri import FASTMRI_COLUMNS, FASTMRI_LABELS, render_slice

SMALL = {"num_volumes": 12, "num_slices": 3, "image_size": 32}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_fastmri_demo(tmp_path_factory.mktemp("fastmri"), **SMALL)


def test_files_readable_and_columns(demo: Path) -> None:
    table = pd.read_csv(demo, dtype=str, keep_default_na=False)
    assert list(table.columns) == list(FASTMRI_COLUMNS)
    assert len(table) == 12 * 3 and table["slice_id"].is_unique
    for _, row in table.iloc[::5].iterrows():
        kspace = read_kspace(demo.parent / row["kspace"], int(row["slice"]))
        assert kspace.shape == (1, 32, 32) and str(kspace.dtype) == "torch.complex64"
    cohort = load_cohort(
        demo, ["kspace"], dict.fromkeys(FASTMRI_LABELS, 2), id_column="slice_id", extra_columns=["slice"]
    )
    record = cohort.records("train")[0]
    assert record["slice"] in {"0", "1", "2"} and Path(record["kspace"]).is_file()


def test_split_by_volume_and_missing_labels(demo: Path) -> None:
    table = pd.read_csv(demo, dtype=str, keep_default_na=False)
    assert (table.groupby("volume")["split"].nunique() == 1).all()
    assert set(table["split"]) == {"train", "val", "test"}
    labels = table[list(FASTMRI_LABELS)]
    assert set(np.unique(labels.to_numpy())) <= {"", "0", "1"}
    assert 0.0 < (labels == "").to_numpy().mean() < 0.25


def test_deterministic(demo: Path, tmp_path: Path) -> None:
    again = make_fastmri_demo(tmp_path / "again", **SMALL)
    assert again.read_bytes() == demo.read_bytes()
    name = pd.read_csv(demo)["kspace"].iloc[0]
    assert np.array_equal(read_kspace(demo.parent / name).numpy(), read_kspace(again.parent / name).numpy())


def test_cache_reused(tmp_path: Path) -> None:
    first = fastmri_demo_cohort(tmp_path, num_volumes=8, num_slices=1, image_size=32)
    stamp = first.stat().st_mtime_ns
    assert fastmri_demo_cohort(tmp_path, num_volumes=8, num_slices=1, image_size=32) == first
    assert first.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="unknown argument"):
        fastmri_demo_cohort(tmp_path, volumes=3)
    with pytest.raises(ValueError, match="num_volumes"):
        make_fastmri_demo(tmp_path / "bad", num_volumes=2)


def _flip(label: str) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free image with no pathology and with only ``label``, same anatomy and positions."""
    none = dict.fromkeys(FASTMRI_LABELS, 0)
    a = render_slice(np.random.default_rng(7), none, 64, noise=0.0)
    b = render_slice(np.random.default_rng(7), {**none, label: 1}, 64, noise=0.0)
    return a, b


@pytest.mark.parametrize(
    "label, magnitude_changes, phase_changes",
    [("acl", True, False), ("meniscus", False, True), ("cartilage", False, True), ("other", True, True)],
)
def test_label_signal_lives_in_its_modality(label: str, magnitude_changes: bool, phase_changes: bool) -> None:
    a, b = _flip(label)
    knee = (np.abs(a) > 0.05) & (np.abs(b) > 0.05)
    assert (not np.allclose(np.abs(a), np.abs(b))) == magnitude_changes
    assert (not np.allclose(np.angle(a)[knee], np.angle(b)[knee])) == phase_changes


def test_cartilage_moves_the_phase_dip() -> None:
    """Cartilage moves the phase dip onto the magnitude dip: each modality alone shows one dip either way."""
    a, b = _flip("cartilage")
    knee = np.abs(a) > 0.05
    dip_a = (np.angle(a) < -0.6) & knee
    dip_b = (np.angle(b) < -0.6) & knee
    assert dip_a.sum() > 0 and dip_b.sum() == pytest.approx(dip_a.sum(), rel=0.5)
    assert not np.array_equal(dip_a, dip_b)
