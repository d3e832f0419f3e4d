import json

import numpy as np
import pytest
import torch
from PIL import Image

from medmoe.data import CohortError, FillMissingModalitiesd, load_cohort

MODALITIES = ["cc", "mlo"]
TASKS = {"density": 4, "risk": 2}


@pytest.fixture
def image_dir(tmp_path):
    for name in ("a_cc.png", "a_mlo.png", "b_cc.png", "c_mlo.png"):
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "corrupt.png").write_bytes(b"not a png at all")
    return tmp_path


def write_csv(path, rows):
    header = "exam_id,cc,mlo,density,risk,split"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_valid_cohort_gives_records_with_masks_and_missing_labels(image_dir):
    csv = write_csv(
        image_dir / "cohort.csv",
        ["a,a_cc.png,a_mlo.png,2,0,train", "b,b_cc.png,,-1,1,train", "c,,c_mlo.png,3,,val"],
    )
    cohort = load_cohort(csv, MODALITIES, TASKS)
    train = cohort.records("train")
    assert [r["exam_id"] for r in train] == ["a", "b"]
    assert train[1]["cc"] == str(image_dir / "b_cc.png") and "mlo" not in train[1]
    np.testing.assert_array_equal(train[1]["modality_mask"], [True, False])
    assert train[1]["density"] == -1 and train[1]["risk"] == 1
    assert len(cohort.records("val")) == 1 and len(cohort.records()) == 3
    assert cohort.records("val")[0]["risk"] == -1  # empty and -1 both mean "label missing"


def test_every_bad_row_is_reported_at_once(image_dir):
    csv = write_csv(
        image_dir / "bad.csv",
        [
            "a,a_cc.png,a_mlo.png,2,0,train",
            "a,b_cc.png,,1,0,train",  # duplicate id
            "d,missing.png,,1,0,train",  # missing file
            "e,corrupt.png,,1,0,train",  # unreadable
            "f,b_cc.png,,7,0,train",  # label out of range
            "g,b_cc.png,,x,0,train",  # label not an integer
            "h,,,1,0,train",  # no modality
            "i,b_cc.png,,1,0,holdout",  # unknown split
        ],
    )
    with pytest.raises(CohortError) as err:
        load_cohort(csv, MODALITIES, TASKS)
    text = str(err.value)
    assert "rows 2, 3: duplicate exam_id 'a'" in text
    assert "row 4 (exam_id='d'): column 'cc': file not found" in text
    assert "row 5 (exam_id='e'): column 'cc'" in text and "unreadable" in text
    assert "row 6 (exam_id='f'): column 'density': label '7'" in text
    assert "row 7 (exam_id='g'): column 'density': label 'x'" in text
    assert "row 8 (exam_id='h'): no modality present" in text
    assert "row 9 (exam_id='i'): column 'split': unknown split 'holdout'" in text
    assert "split 'val' is empty" in text
    assert len(err.value.problems) == 8


def test_missing_columns_and_file(tmp_path):
    (tmp_path / "c.csv").write_text("exam_id,cc\nx,a.png\n")
    with pytest.raises(CohortError, match=r"missing column\(s\) \['mlo', 'density', 'risk', 'split'\]"):
        load_cohort(tmp_path / "c.csv", MODALITIES, TASKS)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_cohort(tmp_path / "nope.csv", MODALITIES, TASKS)


def test_inference_cohort_without_labels_or_splits(image_dir):
    (image_dir / "inf.csv").write_text("exam_id,cc,mlo\na,a_cc.png,a_mlo.png\n")
    cohort = load_cohort(
        image_dir / "inf.csv", MODALITIES, TASKS, split_column=None, require_labels=False, required_splits=()
    )
    (rec,) = cohort.records()
    assert rec["density"] == -1 and rec["risk"] == -1


def test_monai_json_datalist(image_dir):
    datalist = {
        "training": [{"exam_id": "a", "cc": "a_cc.png", "mlo": "a_mlo.png", "density": 1, "risk": 0}],
        "validation": [{"exam_id": "c", "cc": "", "mlo": "c_mlo.png", "density": 2, "risk": 1}],
    }
    (image_dir / "list.json").write_text(json.dumps(datalist))
    cohort = load_cohort(image_dir / "list.json", MODALITIES, TASKS)
    assert [r["exam_id"] for r in cohort.records("val")] == ["c"]
    assert cohort.records("train")[0]["density"] == 1


def test_fill_missing_modalities_inserts_explicit_nan_placeholders():
    fill = FillMissingModalitiesd(["cc", "mlo"], shape=(1, 4, 4))
    out = fill({"cc": torch.ones(1, 4, 4), "modality_mask": np.array([True, False])})
    assert torch.isnan(out["mlo"]).all() and out["mlo"].shape == (1, 4, 4)
    assert out["modality_mask"].tolist() == [True, False]
    with pytest.raises(ValueError, match="says mlo is present"):
        fill({"cc": torch.ones(1, 4, 4), "modality_mask": np.array([True, True])})
    with pytest.raises(ValueError, match="expected \\(1, 4, 4\\)"):
        fill({"cc": torch.ones(1, 5, 4), "mlo": torch.ones(1, 4, 4), "modality_mask": np.array([True, True])})
