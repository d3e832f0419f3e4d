"""build_adni_cohort: ADNIMERGE-style rows -> the adni_i2moe cohort CSV that load_tabular_cohort accepts."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medmoe.data import TabularPreprocessor, build_adni_cohort, load_tabular_cohort

BLOCKS = {
    "clinical": {"numeric": ["age", "education", "mmse"], "categorical": ["sex", "apoe4"]},
    "biospecimen": {"numeric": ["abeta", "ptau", "ttau"]},
}


def merge_table(path: Path, n: int = 12) -> Path:
    diagnoses = ["CN", "MCI", "Dementia", ""]
    rows = []
    for i in range(n):
        base = {
            "RID": i,
            "PTID": f"002_S_{i:04d}",
            "DX": diagnoses[i % 4],
            "AGE": f"{70 + i}",
            "PTGENDER": "Male" if i % 2 else "Female",
            "PTEDUCAT": "16",
            "MMSE": f"{30 - i % 5}",
            "APOE4": str(i % 3),
            "ABETA": ">1700" if i == 0 else ("" if i == 1 else "900"),
            "PTAU": "<8" if i == 2 else ("" if i == 1 else "25"),
            "TAU": "" if i == 1 else "250",
        }
        rows += [{**base, "VISCODE": "bl"}, {**base, "VISCODE": "m12", "DX": "Dementia"}]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_build_cohort_maps_columns_labels_and_images(tmp_path: Path) -> None:
    images = tmp_path / "t1"
    images.mkdir()
    for i in (0, 3, 5):
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), images / f"002_S_{i:04d}.nii.gz")
    out = build_adni_cohort(merge_table(tmp_path / "ADNIMERGE.csv"), tmp_path / "cohort" / "c.csv", image_dir=images)
    rows = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(rows) == 12 and rows["subject_id"].is_unique  # baseline visit only
    assert rows["diagnosis"].tolist()[:4] == ["0", "1", "2", ""]
    assert rows.loc[0, "mri"] == "../t1/002_S_0000.nii.gz" and rows.loc[1, "mri"] == ""
    assert rows.loc[0, "sex"] == "F" and rows.loc[1, "sex"] == "M" and rows.loc[0, "abeta"] == ">1700"
    cohort = load_tabular_cohort(out, ["mri"], BLOCKS, {"diagnosis": 3}, id_column="subject_id")
    prep = TabularPreprocessor(BLOCKS).fit(cohort.records("train"), "subject_id")
    assert prep.num_features == {"clinical": 3 + 2 + 3, "biospecimen": 3}


def test_bad_tables_are_reported(tmp_path: Path) -> None:
    table = merge_table(tmp_path / "m.csv")
    with pytest.raises(ValueError, match="no row with VISCODE == 'm06'"):
        build_adni_cohort(table, tmp_path / "c.csv", visit="m06")
    bad = pd.read_csv(table, dtype=str, keep_default_na=False)
    bad.loc[0, "DX"] = "Unknown"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="row 2: DX 'Unknown'"):
        build_adni_cohort(tmp_path / "bad.csv", tmp_path / "c.csv")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['TAU'\]"):
        bad.drop(columns=["TAU"]).to_csv(tmp_path / "no_tau.csv", index=False)
        build_adni_cohort(tmp_path / "no_tau.csv", tmp_path / "c.csv")


def test_relative_image_dir_is_resolved_against_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "t1").mkdir()
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / "t1" / "002_S_0000.nii.gz")
    merge_table(tmp_path / "ADNIMERGE.csv")
    monkeypatch.chdir(tmp_path)
    out = build_adni_cohort("ADNIMERGE.csv", "out/cohort.csv", image_dir="t1")
    rows = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert rows.loc[0, "mri"] == "../t1/002_S_0000.nii.gz"
    cohort = load_tabular_cohort(out, ["mri"], BLOCKS, {"diagnosis": 3}, id_column="subject_id")
    path = Path(cohort.records()[0]["mri"])
    assert path.is_absolute() and path.resolve() == (tmp_path / "t1" / "002_S_0000.nii.gz").resolve()
