"""Tests of the RSNA screening mammography train.csv adapter (medmoe.data.rsna_adapter)."""

from __future__ import annotations

import pandas as pd
import pytest
from embed_bundle_cohort import load_as_embed_bundle
from medmoe.apps.cohort import main

from medmoe.data import rsna_to_cohort
from medmoe.data.embed_adapter import COHORT_COLUMNS

# the columns of RSNA's train.csv, in its order
RSNA_HEADER = [
    "site_id",
    "patient_id",
    "image_id",
    "laterality",
    "view",
    "age",
    "cancer",
    "biopsy",
    "invasive",
    "BIRADS",
    "implant",
    "density",
    "machine_id",
    "difficult_negative_case",
]


def image(patient, image_id, side, view, cancer=0, birads=1, density="B", implant=0, site=1, machine=49, age=61.0):
    return dict(
        zip(
            RSNA_HEADER,
            [site, patient, image_id, side, view, age, cancer, cancer, 0, birads, implant, density, machine, False],
        )
    )


@pytest.fixture
def train() -> pd.DataFrame:
    rows = [
        # patient 10001: left breast with two CC images (999 < 1000 numerically, not as text) and an AT view
        image(10001, 1000, "L", "CC", birads=2, density="C"),
        image(10001, 999, "L", "CC", birads=2, density="C"),
        image(10001, 1001, "L", "MLO", birads=2, density=None),  # empty cell: the breast's other images say C
        image(10001, 1002, "L", "AT", birads=2, density="C"),
        # right breast: recalled (BIRADS 0) and cancer, site 2 machine 21
        image(10001, 1003, "R", "CC", cancer=1, birads=0, density="C", site=2, machine=21),
        image(10001, 1004, "R", "MLO", cancer=1, birads=0, density="C", site=2, machine=21),
        # patient 10002: left breast only an LM view (no row); right breast CC only, implant, no BIRADS/density
        image(10002, 2000, "L", "LM", birads=None, density=None, implant=1, age=None),
        image(10002, 2001, "R", "CC", birads=None, density=None, implant=1, age=None),
        # patients 10003..10012: one left breast each, density A..D in turn
        *[
            image(10000 + p, 3000 + 2 * p + v, "L", view, density="ABCD"[p % 4], age=40.0 + p)
            for p in range(3, 13)
            for v, view in enumerate(("CC", "MLO"))
        ],
    ]
    return pd.DataFrame(rows, columns=RSNA_HEADER)


def write(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def test_rows_views_labels_and_dropped(tmp_path, train):
    out = tmp_path / "cohort" / "rsna.csv"
    result = rsna_to_cohort(write(train, tmp_path / "train.csv"), out, dropped_csv=tmp_path / "dropped.csv")
    cohort = result.cohort
    assert list(cohort.columns) == [*COHORT_COLUMNS, "implant", "site_id", "machine_id", "age"]
    by_id = cohort.set_index("exam_id")
    assert sorted(by_id.index) == sorted(["10001_L", "10001_R", "10002_R", *[f"{10000 + p}_L" for p in range(3, 13)]])
    left = by_id.loc["10001_L"]
    assert (left.ffdm_cc, left.ffdm_mlo, left.s2d_cc, left.s2d_mlo) == ("10001/999.dcm", "10001/1001.dcm", "", "")
    assert (left.density, left.birads, left.risk, left.implant, left.laterality) == (2, 1, 0, 0, "L")
    right = by_id.loc["10001_R"]
    assert pd.isna(right.birads) and (right.risk, right.density) == (1, 2)  # BIRADS 0 (recall) -> missing
    assert (right.site_id, right.machine_id) == ("2", "21")
    implant = by_id.loc["10002_R"]
    assert (implant.ffdm_cc, implant.ffdm_mlo, implant.implant) == ("10002/2001.dcm", "", 1)
    assert pd.isna(implant.density) and pd.isna(implant.birads) and implant.age == ""
    assert [by_id.loc[f"{10000 + p}_L", "density"] for p in range(3, 7)] == [3, 0, 1, 2]  # D, A, B, C
    assert (by_id.loc["10003_L", "birads"], by_id.loc["10003_L", "age"]) == (0, "43.0")  # BIRADS 1 -> 0

    dropped = result.dropped
    assert dropped.to_dict("records") == [
        {"row": 2, "image_id": "1000", "exam_id": "10001_L", "view": "CC", "reason": "duplicate_view",
         "kept_image_id": "999"},
        {"row": 5, "image_id": "1002", "exam_id": "10001_L", "view": "AT", "reason": "other_view",
         "kept_image_id": ""},
        {"row": 8, "image_id": "2000", "exam_id": "10002_L", "view": "LM", "reason": "other_view",
         "kept_image_id": ""},
    ]  # fmt: skip
    assert result.summary() == {
        "exams": 13,
        "images_dropped": {"duplicate_view": 1, "other_view": 2},
        "other_views": {"AT": 1, "LM": 1},
        "exams_without_cc_or_mlo": 1,
    }

    written = pd.read_csv(out, dtype=str, keep_default_na=False).set_index("exam_id")
    assert (written.loc["10001_L", "density"], written.loc["10001_L", "birads"]) == ("2", "1")  # ints, not "2.0"
    assert written.loc["10001_R", "birads"] == "" and written.loc["10002_R", "density"] == ""
    assert pd.read_csv(tmp_path / "dropped.csv", dtype=str)["image_id"].tolist() == ["1000", "1002", "2000"]


def test_split_is_by_patient_and_seeded(train):
    cohort = rsna_to_cohort(train, None, seed=3).cohort
    patient = cohort["exam_id"].str.split("_").str[0]
    assert cohort.groupby(patient)["split"].nunique().max() == 1  # both breasts of 10001 share a split
    per_patient = cohort.groupby(patient)["split"].first().value_counts().to_dict()
    assert per_patient == {"train": 8, "val": 2, "test": 2}  # 12 patients, 70/15/15
    pd.testing.assert_frame_equal(cohort, rsna_to_cohort(train, None, seed=3).cohort)
    splits = {s: tuple(rsna_to_cohort(train, None, seed=s).cohort["split"]) for s in range(4)}
    assert len(set(splits.values())) > 1


def test_bundle_accepts_the_cohort(tmp_path, train):
    out = tmp_path / "rsna.csv"
    rsna_to_cohort(train, out)
    cohort = load_as_embed_bundle(out, tmp_path)
    assert cohort.modalities == ["ffdm_cc", "ffdm_mlo", "s2d_cc", "s2d_mlo"]
    assert cohort.tasks == {"density": 4, "birads": 3, "risk": 2}
    records = {r["exam_id"]: r for r in cohort.records()}
    assert len(records) == 13 and cohort.records("train") and cohort.records("val")
    left = records["10001_L"]
    assert left["modality_mask"].tolist() == [True, True, False, False]
    assert left["ffdm_cc"] == str(tmp_path / "10001" / "999.dcm") and "s2d_cc" not in left
    assert (left["density"], left["birads"], left["risk"]) == (2, 1, 0)
    assert records["10001_R"]["birads"] == -1  # missing label


def test_image_root_is_checked(tmp_path, train):
    root = tmp_path / "train_images"
    result = rsna_to_cohort(train, None)
    paths = [p for column in ("ffdm_cc", "ffdm_mlo") for p in result.cohort[column] if p]
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"")
    assert len(rsna_to_cohort(train, None, image_root=root).cohort) == 13
    (root / "10001" / "999.dcm").unlink()
    with pytest.raises(
        ValueError, match=r"1 of 25 image\(s\) not found under image_root .*10001/999\.dcm.*<patient_id>"
    ):
        rsna_to_cohort(train, None, image_root=root)
    with pytest.raises(ValueError, match="not a folder"):
        rsna_to_cohort(train, None, image_root=tmp_path / "nope")


def test_bad_input_names_file_row_and_column(tmp_path, train):
    path = write(train.drop(columns=["density", "view"]), tmp_path / "train.csv")
    with pytest.raises(ValueError, match=r"train_csv '.*train\.csv' lacks required column\(s\) \['view', 'density'\]"):
        rsna_to_cohort(path, None)
    with pytest.raises(ValueError, match="file not found"):
        rsna_to_cohort(tmp_path / "nope.csv", None)
    bad = train.copy()
    bad.loc[3, "density"] = "E"
    with pytest.raises(ValueError, match=r"bad\.csv': column 'density': unknown value\(s\) \['E'\] in row\(s\) 5;"):
        rsna_to_cohort(write(bad, tmp_path / "bad.csv"), None)
    with pytest.raises(ValueError, match=r"column 'view': no image has view CC or MLO.*views found: \['AT', 'ML'\]"):
        rsna_to_cohort(train.assign(view=["AT", "ML"] * (len(train) // 2)), None)


@pytest.mark.parametrize(
    "rows, column, value, message",
    [
        ([0, 9], "BIRADS", 3, r"column 'BIRADS': unknown value\(s\) \['3'\] in row\(s\) 2, 11;"),
        ([6], "cancer", 2, r"column 'cancer': unknown value\(s\) \['2'\] in row\(s\) 8;"),
        ([7], "implant", "yes", r"column 'implant': unknown value\(s\) \['yes'\] in row\(s\) 9;"),
        ([4], "laterality", "B", r"'laterality' must be L or R; .* row\(s\) 6$"),
        ([1], "cancer", 1, r"column 'cancer': the images of one breast disagree .* row\(s\) 2, 3, 4, 5;"),
        ([2], "image_id", 1000, r"duplicate image_id in row\(s\) 2, 4$"),
        ([5], "patient_id", None, r"empty patient_id / image_id in row\(s\) 7$"),
    ],
)
def test_bad_value_names_row_and_column(train, rows, column, value, message):
    bad = train.astype(object)
    bad.loc[rows, column] = value
    with pytest.raises(ValueError, match=message):
        rsna_to_cohort(bad, None)


def test_command_line(tmp_path, train, capsys):
    out = tmp_path / "rsna.csv"
    assert main(["rsna", "--train_csv", write(train, tmp_path / "train.csv"), "--out_csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 13 exams" in printed and "1 images dropped: duplicate_view" in printed
    assert "1 of them view AT" in printed and "1 breasts without a CC or MLO image" in printed
    assert len(pd.read_csv(out)) == 13 and len(pd.read_csv(tmp_path / "rsna.dropped.csv")) == 3
    bad = write(train.assign(density="X"), tmp_path / "bad.csv")
    assert main(["rsna", "--train_csv", bad, "--out_csv", str(tmp_path / "bad_out.csv")]) == 2
    assert "column 'density': unknown value(s) ['X']" in capsys.readouterr().err
    assert not (tmp_path / "bad_out.csv").exists()
