"""GAMMA folder layout -> cohort CSV."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medmoe.data import CohortError, load_cohort
from medmoe.data.gamma_adapter import GAMMA_COLUMNS, build_gamma_cohort, gamma_records, read_gamma_grades


def _png(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


@pytest.fixture
def gamma(tmp_path: Path) -> Path:
    """5 cases: 0004 has no OCT, 0005 no grade; masks for 0001 and 0003 only."""
    images = tmp_path / "multi-modality_images"
    for case in ("0001", "0002", "0003", "0004", "0005"):
        _png(images / case / f"{case}.png")
        if case != "0004":
            for k in (0, 1, 10, 2):
                _png(images / case / case / f"{k}_image.png")
    pd.DataFrame(
        {"data": [1, 2, 3, 4], "non": [1, 0, 0, 1], "early": [0, 1, 0, 0], "mid_advanced": [0, 0, 1, 0]}
    ).to_csv(tmp_path / "glaucoma_grading_training_GT.csv", index=False)
    for case in ("0001", "0003"):
        _png(tmp_path / "Disc_Cup_Mask" / f"{case}.png", 255)
    return tmp_path


def test_layout_to_cohort(gamma: Path) -> None:
    table = build_gamma_cohort(gamma, output_csv=gamma / "cohort.csv")
    assert tuple(table.columns) == GAMMA_COLUMNS
    assert list(table["case_id"]) == ["0001", "0002", "0003", "0004", "0005"]
    assert list(table["glaucoma"]) == ["0", "1", "2", "0", ""]
    assert table.loc[0, "fundus"] == "multi-modality_images/0001/0001.png"
    assert table.loc[0, "oct"] == "multi-modality_images/0001/0001"
    assert table.loc[3, "oct"] == ""
    assert list(table["cup"] != "") == [True, False, True, False, False]
    assert set(table["split"]) <= {"train", "val", "test"}
    written = pd.read_csv(gamma / "cohort.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(written, table.reset_index(drop=True))
    cohort = load_cohort(
        gamma / "cohort.csv",
        ["fundus", "oct"],
        {"glaucoma": 3},
        id_column="case_id",
        required_splits=(),
        path_columns=["cup"],
    )
    records = cohort.records()
    assert [r["glaucoma"] for r in records] == [0, 1, 2, 0, -1]
    assert [("cup" in r) for r in records] == [True, False, True, False, False]
    assert Path(records[0]["cup"]).is_file() and Path(records[0]["oct"]).is_dir()
    assert list(records[3]["modality_mask"]) == [True, False]
    (gamma / "Disc_Cup_Mask" / "0003.png").unlink()
    (gamma / "multi-modality_images" / "0002" / "0002" / "0_image.png").write_bytes(b"junk")
    for k in (1, 2, 10):
        (gamma / "multi-modality_images" / "0002" / "0002" / f"{k}_image.png").unlink()
    with pytest.raises(ValueError, match="0003.png") as err:
        load_cohort(
            gamma / "cohort.csv",
            ["fundus", "oct"],
            {"glaucoma": 3},
            id_column="case_id",
            required_splits=(),
            path_columns=["cup"],
        )
    assert "row 3" in str(err.value) and "unreadable" in str(err.value)


def test_without_grades_or_masks(gamma: Path) -> None:
    (gamma / "glaucoma_grading_training_GT.csv").unlink()
    table = build_gamma_cohort(gamma, masks_dir=None)
    assert (table["glaucoma"] == "").all() and (table["cup"] == "").all()


def test_bad_grade_rows_are_named(gamma: Path) -> None:
    bad = pd.DataFrame(
        {"data": ["0001", "0002", "0002"], "non": [1, 1, 1], "early": [1, 0, 0], "mid_advanced": [0, 0, 0]}
    )
    with pytest.raises(ValueError, match=r"row 2 .*one-hot") as err:
        read_gamma_grades(bad)
    assert "row 4" in str(err.value) and "duplicate" in str(err.value)
    with pytest.raises(ValueError, match="missing column"):
        read_gamma_grades(pd.DataFrame({"data": [1]}))
    with pytest.raises(ValueError, match="file not found"):
        build_gamma_cohort(gamma, grades="nowhere.csv")
    extra = pd.DataFrame({"data": [9], "non": [1], "early": [0], "mid_advanced": [0]})
    with pytest.raises(ValueError, match="case '0009'"):
        build_gamma_cohort(gamma, grades=extra)
    with pytest.raises(ValueError, match="no case folder"):
        build_gamma_cohort(gamma / "empty")


def _cohort(gamma: Path, table: pd.DataFrame):
    table.to_csv(gamma / "cohort.csv", index=False)
    return load_cohort(
        gamma / "cohort.csv",
        ["fundus", "oct"],
        {"glaucoma": 3},
        id_column="case_id",
        required_splits=(),
        path_columns=["cup"],
    )


def test_records_keep_the_mask_path_for_original_resolution_scoring(gamma: Path) -> None:
    cohort = _cohort(gamma, build_gamma_cohort(gamma))
    records = gamma_records(cohort)
    assert [r["case_id"] for r in records] == ["0001", "0002", "0003", "0004", "0005"]
    assert records[0]["cup_path"] == records[0]["cup"] and Path(records[0]["cup_path"]).is_file()
    assert records[1]["cup_path"] == "" and "cup" not in records[1]
    split = records[0]["case_id"], cohort.table.loc[0, "split"]
    assert split[0] in [r["case_id"] for r in gamma_records(cohort, split[1])]


def test_a_case_without_fundus_is_an_error_naming_it_or_a_warned_skip(gamma: Path, caplog) -> None:
    """The fundus is required (the FOV crop and the cup segmentation need it); an absent OCT is fine."""
    table = build_gamma_cohort(gamma)
    table.loc[1, "fundus"] = ""  # 0002: OCT only
    cohort = _cohort(gamma, table)
    with pytest.raises(CohortError, match=r"row 3 \(case_id='0002'\): no 'fundus' image") as err:
        gamma_records(cohort, "train")  # the whole cohort is checked, whatever the split
    assert len(err.value.problems) == 1 and "missing_fundus='skip'" in str(err.value)
    with caplog.at_level("WARNING", logger="medmoe.data.gamma_adapter"):
        records = gamma_records(cohort, missing_fundus="skip")
    assert [r["case_id"] for r in records] == ["0001", "0003", "0004", "0005"]
    assert "skipping case '0002'" in caplog.text and "0004" not in caplog.text  # 0004 lacks only the OCT
    with pytest.raises(ValueError, match="'error' or 'skip'"):
        gamma_records(cohort, missing_fundus="ignore")
    with pytest.raises(ValueError, match="not a modality"):
        gamma_records(cohort, image_key="slo")


def test_missing_grade_table_warns_or_raises(gamma: Path, caplog) -> None:
    (gamma / "glaucoma_grading_training_GT.csv").unlink()
    with caplog.at_level("WARNING", logger="medmoe.data.gamma_adapter"):
        table = build_gamma_cohort(gamma)
    assert (table["glaucoma"] == "").all()
    assert "no grade table" in caplog.text and "glaucoma_grading_training_GT.xlsx" in caplog.text
    with pytest.raises(ValueError, match="no grade table"):
        build_gamma_cohort(gamma, require_grades=True)
    with pytest.raises(ValueError, match="require_grades"):
        build_gamma_cohort(gamma, grades=None, require_grades=True)


def test_xlsx_grade_sheet_is_read_or_named_with_how_to_export(gamma: Path) -> None:
    (gamma / "glaucoma_grading_training_GT.csv").unlink()
    (gamma / "glaucoma_grading_training_GT.xlsx").write_bytes(b"PK\x03\x04 not a real workbook")
    with pytest.raises(ValueError, match=r"glaucoma_grading_training_GT\.xlsx.*Export it to CSV"):
        build_gamma_cohort(gamma)  # without openpyxl (not a medmoe dependency), or with it on a damaged file
