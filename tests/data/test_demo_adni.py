"""The ADNI-style demo cohort: files, columns, missingness, the label's dependence on the modalities, the cache."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medmoe.data import adni_demo_cohort, load_tabular_cohort, make_adni_demo
from medmoe.data.demo_adni import ADNI_COLUMNS, render_volume

BLOCKS = {
    "clinical": {"numeric": ["age", "education", "mmse"], "categorical": ["sex", "apoe4"]},
    "biospecimen": {"numeric": ["abeta", "ptau", "ttau"]},
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_adni_demo(tmp_path_factory.mktemp("adni"), num_subjects=200, image_size=16)


def test_files_columns_and_splits(demo: Path) -> None:
    rows = pd.read_csv(demo, dtype=str, keep_default_na=False)
    assert tuple(rows.columns) == ADNI_COLUMNS and len(rows) == 200
    assert set(rows["split"]) == {"train", "val", "test"}
    assert set(rows["diagnosis"]) <= {"", "0", "1", "2"} and {"0", "1", "2"} <= set(rows["diagnosis"])
    first = rows.loc[rows["mri"] != "", "mri"].iloc[0]
    image = nib.load(demo.parent / first)
    assert image.shape == (16, 16, 16) and image.get_data_dtype() == np.int16
    np.testing.assert_allclose(np.diag(image.affine)[:3], [7.0, 7.0, 7.0])
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    cohort = load_tabular_cohort(demo, ["mri"], BLOCKS, {"diagnosis": 3}, id_column="subject_id")  # validates
    assert len(cohort) == 200


def test_missing_data_of_every_kind(demo: Path) -> None:
    rows = pd.read_csv(demo, dtype=str, keep_default_na=False)
    bio = rows[["abeta", "ptau", "ttau"]]
    assert (rows["mri"] == "").sum() > 0 and (rows["diagnosis"] == "").sum() > 0
    assert (bio == "").all(axis=1).sum() > 0  # whole biospecimen block missing
    assert ((bio == "").any(axis=1) & ~(bio == "").all(axis=1)).sum() > 0  # single missing cells
    assert (rows[["age", "mmse", "sex", "apoe4"]] == "").any(axis=1).sum() > 0


def test_label_needs_more_than_one_modality(demo: Path) -> None:
    """MMSE (redundant with the MRI) tracks the label; APOE4 and p-tau alone do not explain it, their XOR does."""
    rows = pd.read_csv(demo)
    rows = rows.dropna(subset=["diagnosis", "mmse", "apoe4", "ptau"])
    dx = rows["diagnosis"].to_numpy()
    assert rows.loc[dx == 0, "mmse"].mean() > rows.loc[dx == 2, "mmse"].mean() + 2
    carrier, high = rows["apoe4"].to_numpy() > 0, rows["ptau"].to_numpy() > 29
    # each alone: the mean diagnosis differs little between its groups; the XOR separates them clearly
    gap = lambda flag: abs(dx[flag].mean() - dx[~flag].mean())  # noqa: E731
    assert gap(carrier ^ high) > 0.4
    assert gap(carrier) < gap(carrier ^ high) / 2 and gap(high) < gap(carrier ^ high) / 2


def test_mri_factors_are_visible_in_the_volume() -> None:
    """Enlarged ventricles darken the centre; small hippocampi remove bright voxels."""
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    normal = render_volume(rng(), False, False, 24)
    ventricles = render_volume(rng(), False, True, 24)
    hippocampus = render_volume(rng(), True, False, 24)
    assert (ventricles < 300).sum() > (normal < 300).sum() + 50
    assert (hippocampus > 1300).sum() < (normal > 1300).sum() - 20


def test_deterministic_and_argument_checks(tmp_path: Path) -> None:
    a = make_adni_demo(tmp_path / "a", num_subjects=20, image_size=16, seed=3)
    b = make_adni_demo(tmp_path / "b", num_subjects=20, image_size=16, seed=3)
    assert a.read_text() == b.read_text()
    path = pd.read_csv(a, dtype=str, keep_default_na=False).query("mri != ''")["mri"].iloc[0]
    np.testing.assert_array_equal(nib.load(a.parent / path).get_fdata(), nib.load(b.parent / path).get_fdata())
    with pytest.raises(ValueError, match="num_subjects must be >= 20"):
        make_adni_demo(tmp_path / "c", num_subjects=5)
    with pytest.raises(ValueError, match="image_size must be >= 16"):
        make_adni_demo(tmp_path / "c", image_size=8)


def test_cached_on_first_use(tmp_path: Path) -> None:
    first = adni_demo_cohort(tmp_path, num_subjects=20, image_size=16)
    assert first.parent.name == "adni_i2moe_v1_num_subjects20_image_size16_seed0"
    stamp = first.stat().st_mtime_ns
    assert adni_demo_cohort(tmp_path, num_subjects=20, image_size=16) == first and first.stat().st_mtime_ns == stamp
    assert (first.parent / "demo_info.json").is_file()
    with pytest.raises(ValueError, match="unknown argument"):
        adni_demo_cohort(tmp_path, volumes=3)
