"""TabularPreprocessor (fitted on training rows only), TabularToVectord and load_tabular_cohort."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medmoe.data import CohortError, FillMissingModalitiesd, TabularPreprocessor, TabularToVectord, load_tabular_cohort

BLOCKS = {"clinical": {"numeric": ["age", "mmse"], "categorical": ["sex"]}, "csf": {"numeric": ["ptau"]}}
TRAIN = [
    {"id": "a", "age": "60", "mmse": "30", "sex": "F", "ptau": "10"},
    {"id": "b", "age": "80", "mmse": "20", "sex": "M", "ptau": "30"},
    {"id": "c", "age": "", "mmse": "25", "sex": "F", "ptau": ""},
    {"id": "d", "age": "70", "mmse": "", "sex": "", "ptau": "50"},
]


def fitted(**kwargs) -> TabularPreprocessor:
    return TabularPreprocessor(BLOCKS, **kwargs).fit(TRAIN, "id")


def test_fit_learns_min_max_mean_and_mode_from_the_rows_given() -> None:
    prep = fitted()
    state = prep.state["clinical"]
    assert state["numeric"]["age"] == {"min": 60.0, "max": 80.0, "mean": 70.0}
    assert state["numeric"]["mmse"] == {"min": 20.0, "max": 30.0, "mean": 25.0}
    assert state["categorical"]["sex"] == {"categories": ["F", "M"], "mode": "F"}
    assert prep.state["csf"]["numeric"]["ptau"] == {"min": 10.0, "max": 50.0, "mean": 30.0}
    assert prep.num_features == {"clinical": 4, "csf": 1}
    assert prep.feature_names("clinical") == ["age", "mmse", "sex=F", "sex=M"]


def test_scaling_imputation_and_one_hot() -> None:
    prep = fitted()
    out = prep.transform_row({"age": "75", "mmse": "", "sex": "M", "ptau": "20"})
    np.testing.assert_allclose(out["clinical"], [0.75, 0.5, 0.0, 1.0])  # mmse imputed with the train mean 25
    np.testing.assert_allclose(out["csf"], [0.25])
    imputed = prep.transform_row({"age": "", "mmse": "20", "sex": "", "ptau": "90"})["clinical"]
    np.testing.assert_allclose(imputed, [0.5, 0.0, 1.0, 0.0])  # age: mean 70; sex: mode F
    assert prep.transform_row({"age": "", "mmse": "20", "sex": "", "ptau": "90"})["csf"][0] == pytest.approx(2.0)
    assert out["clinical"].dtype == np.float32


def test_validation_and_test_rows_do_not_change_the_fit() -> None:
    """Fitting on train only: scaling val/test rows (even far outside the training range) never refits."""
    prep = fitted()
    before = json.dumps(prep.to_dict(), sort_keys=True)
    for row in (
        {"age": "120", "mmse": "0", "sex": "M", "ptau": "500"},
        {"age": "1", "mmse": "", "sex": "F", "ptau": ""},
    ):
        prep.transform_row(row)
    assert json.dumps(prep.to_dict(), sort_keys=True) == before
    # a fit that (wrongly) included a test row would move the min-max: the train-only scaling is the reference
    leaky = TabularPreprocessor(BLOCKS).fit([*TRAIN, {"id": "t", "age": "120", "mmse": "0", "sex": "X", "ptau": "500"}])
    row = {"age": "75", "mmse": "25", "sex": "M", "ptau": "20"}
    assert prep.transform_row(row)["clinical"][0] == pytest.approx(0.75)
    assert leaky.transform_row(row)["clinical"][0] != pytest.approx(0.75)


def test_unseen_category_is_explicit() -> None:
    row = {"age": "70", "mmse": "25", "sex": "Other", "ptau": "20"}
    np.testing.assert_allclose(fitted().transform_row(row)["clinical"][2:], [0.0, 0.0])
    with pytest.raises(ValueError, match="category 'Other' was not seen in training"):
        fitted(handle_unknown="error").transform_row(row, "id='z'")


def test_numeric_categories_are_canonical_and_censored_values_parse() -> None:
    prep = TabularPreprocessor({"b": {"numeric": ["abeta"], "categorical": ["apoe4"]}})
    prep.fit([{"abeta": "200", "apoe4": "0"}, {"abeta": ">1700", "apoe4": "1.0"}])
    assert prep.state["b"]["categorical"]["apoe4"]["categories"] == ["0", "1"]
    assert prep.state["b"]["numeric"]["abeta"]["max"] == 1700.0
    np.testing.assert_allclose(prep.transform_row({"abeta": "<200", "apoe4": " 1 "})["b"], [0.0, 0.0, 1.0])


def test_all_missing_block_is_absent_not_imputed() -> None:
    out = fitted().transform_row({"age": "70", "mmse": "NA", "sex": "F", "ptau": ""})
    assert out["csf"] is None and out["clinical"] is not None


def test_json_round_trip(tmp_path: Path) -> None:
    prep = fitted(handle_unknown="error")
    path = prep.to_json(tmp_path / "models" / "tabular.json")
    loaded = TabularPreprocessor.from_json(path)
    row = {"age": "65", "mmse": "", "sex": "M", "ptau": "35"}
    for block in BLOCKS:
        np.testing.assert_array_equal(loaded.transform_row(row)[block], prep.transform_row(row)[block])
    assert loaded.handle_unknown == "error"
    with pytest.raises(FileNotFoundError, match="written by training"):
        TabularPreprocessor.from_json(tmp_path / "nope.json")


def test_bad_input_errors_name_the_problem() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        TabularPreprocessor(BLOCKS).transform_row(TRAIN[0])
    with pytest.raises(ValueError, match=r"id='b', column 'age': 'old' is not a number"):
        TabularPreprocessor(BLOCKS).fit([TRAIN[0], {**TRAIN[1], "age": "old"}], "id")
    with pytest.raises(ValueError, match="column 'ptau' has no value in the 2 training rows"):
        TabularPreprocessor(BLOCKS).fit([{**r, "ptau": ""} for r in TRAIN[:2]])
    with pytest.raises(ValueError, match=r"no column\(s\) \['ptau'\]"):
        TabularPreprocessor(BLOCKS).fit([{k: v for k, v in r.items() if k != "ptau"} for r in TRAIN])
    with pytest.raises(ValueError, match="listed twice"):
        TabularPreprocessor({"a": {"numeric": ["x"]}, "b": {"categorical": ["x"]}})
    with pytest.raises(ValueError, match="zero rows"):
        TabularPreprocessor(BLOCKS).fit([])
    with pytest.raises(KeyError, match="S9: no column"):
        fitted().transform_row({"age": "1"}, "S9")


def test_dictionary_transform_builds_vectors_and_the_mask() -> None:
    prep = fitted()
    to_vector = TabularToVectord(prep, ["mri", "clinical", "csf"], id_key="id")
    fill = FillMissingModalitiesd(["mri", "clinical", "csf"], {"mri": (1, 4, 4, 4), "clinical": (4,), "csf": (1,)})
    sample = to_vector({"id": "x", "age": "70", "mmse": "", "sex": "F", "ptau": "", "modality_mask": [False]})
    assert sample["modality_mask"].tolist() == [False, True, False] and "csf" not in sample and "mri" not in sample
    filled = fill(sample)
    assert filled["csf"].isnan().all() and filled["mri"].isnan().all()  # NaN placeholders, never zeros
    assert filled["clinical"].tolist() == pytest.approx([0.5, 0.5, 1.0, 0.0])
    with_mri = to_vector({"id": "y", "mri": "a.nii.gz", "age": "", "mmse": "", "sex": "", "ptau": "10"})
    assert with_mri["modality_mask"].tolist() == [True, False, True]
    with pytest.raises(ValueError, match=r"id='z', column 'ptau'"):
        to_vector({"id": "z", "age": "", "mmse": "", "sex": "", "ptau": "high"})
    with pytest.raises(ValueError, match="not in modalities"):
        TabularToVectord(prep, ["mri", "clinical"])


def _write(path: Path, rows: list[dict]) -> Path:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_load_tabular_cohort_accepts_tabular_only_rows_and_reports_bad_rows(tmp_path: Path) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), tmp_path / "a.nii.gz")
    base = {"mri": "", "age": "70", "mmse": "25", "sex": "F", "ptau": "", "dx": "1"}
    rows = [
        {"id": "a", **base, "mri": "a.nii.gz", "split": "train"},
        {"id": "b", **base, "split": "val"},  # no MRI, clinical present: fine
    ]
    cohort = load_tabular_cohort(_write(tmp_path / "ok.csv", rows), ["mri"], BLOCKS, {"dx": 3}, id_column="id")
    records = cohort.records("val")
    assert records[0]["age"] == "70" and "mri" not in records[0]
    bad = [
        *rows,
        {"id": "c", **base, "age": "", "mmse": "", "sex": "", "split": "train"},  # nothing at all
        {"id": "d", **base, "ptau": "lots", "split": "train"},
    ]
    with pytest.raises(CohortError) as err:
        load_tabular_cohort(_write(tmp_path / "bad.csv", bad), ["mri"], BLOCKS, {"dx": 3}, id_column="id")
    message = str(err.value)
    assert "row 4 (id='c'): no modality present" in message
    assert "row 5 (id='d'): column 'ptau': 'lots' is not a number" in message
