import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medmoe.data import CohortError, FillMissingModalitiesd, check_readable, load_cohort

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


def test_whitespace_only_path_cells_are_missing_in_records_too(image_dir):
    (image_dir / "seg.csv").write_text(
        "exam_id,cc,mlo,density,risk,split,seg\na,a_cc.png,   ,2,0,train, \nb,b_cc.png,c_mlo.png,1,0,val,a_mlo.png\n"
    )
    cohort = load_cohort(image_dir / "seg.csv", MODALITIES, TASKS, path_columns=["seg"])
    first, second = cohort.records()
    assert "mlo" not in first and "seg" not in first
    np.testing.assert_array_equal(first["modality_mask"], [True, False])
    assert second["seg"] == str(image_dir / "a_mlo.png")


def test_ids_and_extra_columns_are_stripped(image_dir):
    (image_dir / "pad.csv").write_text(
        "exam_id,cc,mlo,density,risk,split,age_group\n a ,a_cc.png,,1,0, train , 50-65\nb,b_cc.png,,1,0,val,50-65 \n"
    )
    records = load_cohort(image_dir / "pad.csv", MODALITIES, TASKS, extra_columns=["age_group"]).records()
    assert [r["exam_id"] for r in records] == ["a", "b"]
    assert [r["age_group"] for r in records] == ["50-65", "50-65"]
    with pytest.raises(CohortError, match="rows 2, 3: duplicate exam_id 'a'"):
        write_csv(image_dir / "dup.csv", [" a,a_cc.png,,1,0,train", "a ,b_cc.png,,1,0,val"])
        load_cohort(image_dir / "dup.csv", MODALITIES, TASKS)


def test_relative_cohort_path_gives_absolute_record_paths(image_dir, monkeypatch):
    write_csv(image_dir / "cohort.csv", ["a,a_cc.png,,1,0,train", "b,b_cc.png,,1,0,val"])
    monkeypatch.chdir(image_dir)
    for cohort in (load_cohort("cohort.csv", MODALITIES, TASKS), load_cohort("cohort.csv", MODALITIES, TASKS, ".")):
        path = cohort.records()[0]["cc"]
        assert Path(path).is_absolute() and path == str(image_dir.resolve() / "a_cc.png")


def test_row_numbers_count_blank_lines_and_json_rows_name_their_list(image_dir):
    rows = ["a,a_cc.png,,1,0,train", "", "b,b_cc.png,,1,0,val", ",,,,,", "c,missing.png,,7,0,val"]
    write_csv(image_dir / "blank.csv", rows)  # lines 3 and 5 hold no row
    with pytest.raises(CohortError) as err:
        load_cohort(image_dir / "blank.csv", MODALITIES, TASKS)
    assert "row 6 (exam_id='c'): column 'cc': file not found" in str(err.value)
    assert "row 6 (exam_id='c'): column 'density'" in str(err.value) and len(err.value.problems) == 2
    datalist = {
        "training": [{"exam_id": "a", "cc": "a_cc.png", "mlo": "", "density": 1, "risk": 0}],
        "validation": [{"exam_id": "b", "cc": "b_cc.png", "density": 1, "risk": 0}, {"exam_id": "a", "cc": "x.png"}],
    }
    (image_dir / "list.json").write_text(json.dumps(datalist))
    with pytest.raises(CohortError) as err:
        load_cohort(image_dir / "list.json", MODALITIES, TASKS)
    assert "training[0], validation[1]: duplicate exam_id 'a'" in str(err.value)
    assert "validation[1] (exam_id='a'): column 'cc': file not found" in str(err.value)


def test_malformed_files_raise_a_cohort_error_naming_the_file(image_dir):
    empty = image_dir / "empty.csv"
    empty.write_text("")
    with pytest.raises(CohortError, match=r"empty\.csv.*\n.*empty file"):
        load_cohort(empty, MODALITIES, TASKS)
    latin = image_dir / "latin.csv"
    latin.write_bytes("exam_id,cc,mlo,density,risk,split,site\na,a_cc.png,,1,0,train,Hôpital\n".encode("latin-1"))
    with pytest.raises(CohortError, match=r"latin\.csv.*\n.*line 2: byte 0xf4 is not UTF-8"):
        load_cohort(latin, MODALITIES, TASKS)
    bad_json = image_dir / "bad.json"
    bad_json.write_text('{"training": [')
    with pytest.raises(CohortError, match=r"bad\.json.*\n.*not valid JSON"):
        load_cohort(bad_json, MODALITIES, TASKS)
    short = write_csv(
        image_dir / "short.csv",
        ["a,a_cc.png,,1,0,train", "b,b_cc.png", "c,b_cc.png,,1,0,val,extra", "d,b_cc.png,,1,0,val,"],
    )
    with pytest.raises(CohortError) as err:
        load_cohort(short, MODALITIES, TASKS)
    assert "row 3 (exam_id='b'): 2 cell(s) but the header has 6 columns" in str(err.value)
    assert "row 4 (exam_id='c'): 7 cells but the header has 6 columns" in str(err.value)
    assert len(err.value.problems) == 2


def test_unknown_and_metaimage_files_are_opened_or_reported(image_dir):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image(4, 4, sitk.sitkUInt8), str(image_dir / "ok.mha"))
    (image_dir / "bad.mha").write_text("garbage")
    (image_dir / "notes.txt").write_text("garbage")
    assert check_readable(image_dir / "ok.mha") is None
    csv = write_csv(image_dir / "ext.csv", ["a,ok.mha,,1,0,train", "b,bad.mha,,1,0,val", "c,notes.txt,,1,0,val"])
    with pytest.raises(CohortError) as err:
        load_cohort(csv, MODALITIES, TASKS)
    text = str(err.value)
    assert len(err.value.problems) == 2 and "row 3 (exam_id='b'): column 'cc'" in text and "unreadable" in text
    assert "row 4 (exam_id='c'): column 'cc'" in text and "unsupported file type '.txt'" in text
