"""Tests of the VinDr-Mammo breast-level annotation CSV adapter (medmoe.data.vindr_adapter)."""

from __future__ import annotations

import pandas as pd
import pytest
from embed_bundle_cohort import load_as_embed_bundle
from medmoe.apps.cohort import main

from medmoe.data import vindr_to_cohort
from medmoe.data.embed_adapter import COHORT_COLUMNS

# the columns of VinDr-Mammo's breast-level_annotations.csv, in its order
VINDR_HEADER = [
    "study_id",
    "series_id",
    "image_id",
    "laterality",
    "view_position",
    "height",
    "width",
    "breast_birads",
    "breast_density",
    "split",
]


def image(study, image_id, side, view, birads="BI-RADS 1", density="DENSITY B", split="training"):
    return dict(zip(VINDR_HEADER, [study, f"s{study}", image_id, side, view, 3518, 2800, birads, density, split]))


def breast(study, side, split="training", birads="BI-RADS 1", density="DENSITY B"):
    return [image(study, f"{study}{side}{view}", side, view, birads, density, split) for view in ("CC", "MLO")]


@pytest.fixture
def annotations() -> pd.DataFrame:
    rows = [
        *breast("a1", "L", birads="BI-RADS 1", density="DENSITY C"),
        *breast("a1", "R", birads="BI-RADS 4", density="DENSITY C"),
        *breast("b2", "L", split="test", birads="BI-RADS 3", density="DENSITY A"),
        # right breast of b2: two MLO images, the lower image_id ("b2RMLO0" < "b2RMLO1") is kept
        image("b2", "b2RMLO1", "R", "MLO", "BI-RADS 5", "DENSITY D", "test"),
        image("b2", "b2RMLO0", "R", "MLO", "BI-RADS 5", "DENSITY D", "test"),
        image("b2", "b2RCC", "R", "CC", "BI-RADS 5", "DENSITY D", "test"),
        # c3: left breast only an XCCL view (no row); right breast BI-RADS 2
        image("c3", "c3LX", "L", "XCCL"),
        *breast("c3", "R", birads="BI-RADS 2", density="DENSITY B"),
        *[row for s in range(10) for side in "LR" for row in breast(f"d{s}", side)],
        *[row for s in range(3) for side in "LR" for row in breast(f"t{s}", side, split="test")],
    ]
    return pd.DataFrame(rows, columns=VINDR_HEADER)


def write(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def test_rows_views_labels_and_dropped(tmp_path, annotations):
    out = tmp_path / "vindr.csv"
    result = vindr_to_cohort(write(annotations, tmp_path / "ann.csv"), out)
    cohort = result.cohort
    assert list(cohort.columns) == list(COHORT_COLUMNS)
    by_id = cohort.set_index("exam_id")
    assert len(by_id) == 2 + 2 + 1 + 20 + 6 and "c3_L" not in by_id.index
    a1 = by_id.loc["a1_L"]
    assert (a1.ffdm_cc, a1.ffdm_mlo, a1.s2d_cc, a1.s2d_mlo) == (
        "images/a1/a1LCC.dicom",
        "images/a1/a1LMLO.dicom",
        "",
        "",
    )
    expected = {  # exam: (birads, density)
        "a1_L": (0, 2),  # BI-RADS 1, DENSITY C
        "a1_R": (2, 2),  # BI-RADS 4
        "b2_L": (1, 0),  # BI-RADS 3, DENSITY A
        "b2_R": (2, 3),  # BI-RADS 5, DENSITY D
        "c3_R": (1, 1),  # BI-RADS 2, DENSITY B
    }
    assert {e: (by_id.loc[e, "birads"], by_id.loc[e, "density"]) for e in expected} == expected
    assert by_id.loc["b2_R", "ffdm_mlo"] == "images/b2/b2RMLO0.dicom"
    assert cohort["risk"].isna().all() and by_id.loc["c3_R", "laterality"] == "R"
    assert result.dropped[["row", "image_id", "reason", "kept_image_id"]].values.tolist() == [
        [8, "b2RMLO1", "duplicate_view", "b2RMLO0"],
        [11, "c3LX", "other_view", ""],
    ]
    assert result.summary()["other_views"] == {"XCCL": 1} and result.summary()["exams_without_cc_or_mlo"] == 1
    written = pd.read_csv(out, dtype=str, keep_default_na=False).set_index("exam_id")
    assert (written.loc["b2_R", "birads"], written.loc["b2_R", "risk"]) == ("2", "")


def test_public_split_kept_and_val_carved_from_training(annotations):
    cohort = vindr_to_cohort(annotations, None, seed=1).cohort
    study = cohort["exam_id"].str.split("_").str[0]
    assert cohort.groupby(study)["split"].nunique().max() == 1  # both breasts of a study share a split
    public_test = {"b2", "t0", "t1", "t2"}
    assert set(study[cohort["split"] == "test"]) == public_test
    per_study = cohort.groupby(study)["split"].first()
    assert per_study.value_counts().to_dict() == {"train": 10, "test": 4, "val": 2}  # 12 training studies, 15 %
    no_val = vindr_to_cohort(annotations, None, val_fraction=0.0).cohort
    assert set(no_val["split"]) == {"train", "test"}
    pd.testing.assert_frame_equal(cohort, vindr_to_cohort(annotations, None, seed=1).cohort)
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        vindr_to_cohort(annotations, None, val_fraction=1.0)


def test_bundle_accepts_the_cohort(tmp_path, annotations):
    out = tmp_path / "vindr.csv"
    vindr_to_cohort(annotations, out)
    cohort = load_as_embed_bundle(out, tmp_path)
    assert cohort.modalities == ["ffdm_cc", "ffdm_mlo", "s2d_cc", "s2d_mlo"]
    assert cohort.tasks == {"density": 4, "birads": 3, "risk": 2}
    assert len(cohort.records("test")) == 8 and cohort.records("train") and cohort.records("val")
    record = next(r for r in cohort.records("test") if r["exam_id"] == "b2_R")
    assert record["modality_mask"].tolist() == [True, True, False, False]
    assert (record["birads"], record["density"], record["risk"]) == (2, 3, -1)
    assert record["ffdm_mlo"] == str(tmp_path / "images" / "b2" / "b2RMLO0.dicom")


def test_image_root_is_checked(tmp_path, annotations):
    cohort = vindr_to_cohort(annotations, None).cohort
    for path in [p for column in ("ffdm_cc", "ffdm_mlo") for p in cohort[column] if p]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"")
    assert len(vindr_to_cohort(annotations, None, image_root=tmp_path).cohort) == len(cohort)
    (tmp_path / "images" / "a1" / "a1LCC.dicom").unlink()
    with pytest.raises(ValueError, match=r"1 of 62 image\(s\) not found .*images/a1/a1LCC\.dicom.*images/<study_id>"):
        vindr_to_cohort(annotations, None, image_root=tmp_path)


def test_bad_input_names_file_row_and_column(tmp_path, annotations):
    path = write(annotations.drop(columns=["breast_density"]), tmp_path / "ann.csv")
    with pytest.raises(
        ValueError, match=r"annotations_csv '.*ann\.csv' lacks required column\(s\) \['breast_density'\]"
    ):
        vindr_to_cohort(path, None)
    bad = annotations.copy()
    bad.loc[2, "breast_density"] = "DENSITY E"
    with pytest.raises(
        ValueError, match=r"bad\.csv': column 'breast_density': unknown value\(s\) \['DENSITY E'\] in row"
    ):
        vindr_to_cohort(write(bad, tmp_path / "bad.csv"), None)


@pytest.mark.parametrize(
    "row, column, value, message",
    [
        (
            2,
            "breast_density",
            "DENSITY E",
            r"column 'breast_density': unknown value\(s\) \['DENSITY E'\] in row\(s\) 4;",
        ),
        (5, "breast_birads", "BI-RADS 0", r"column 'breast_birads': unknown value\(s\) \['BI-RADS 0'\] in row\(s\) 7;"),
        (0, "split", "validation", r"'split' must be 'training' or 'test'; .* row\(s\) 2$"),
        (0, "split", "test", r"a study is in both 'training' and 'test', row\(s\) 2, 3, 4, 5$"),
        (1, "breast_birads", "BI-RADS 2", r"column 'breast_birads': the images of one breast disagree \(exam 'a1_L'\)"),
        (3, "laterality", "B", r"'laterality' must be L or R; .* row\(s\) 5$"),
        (3, "image_id", "a1LCC", r"duplicate image_id in row\(s\) 2, 5$"),
    ],
)
def test_bad_value_names_row_and_column(annotations, row, column, value, message):
    bad = annotations.copy()
    bad.loc[row, column] = value
    with pytest.raises(ValueError, match=message):
        vindr_to_cohort(bad, None)


def test_command_line(tmp_path, annotations, capsys):
    out = tmp_path / "vindr.csv"
    args = ["vindr", "--annotations_csv", write(annotations, tmp_path / "a.csv"), "--out_csv", str(out)]
    assert main([*args, "--val_fraction", "0.25"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 31 exams" in printed and "test 8" in printed and "1 of them view XCCL" in printed
    written = pd.read_csv(out)
    assert written.loc[written["split"] == "val", "exam_id"].str.split("_").str[0].nunique() == 3  # 25 % of 12
    assert pd.read_csv(tmp_path / "vindr.dropped.csv")["reason"].tolist() == ["duplicate_view", "other_view"]
    assert main([*args, "--image_root", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err
