"""Tests of the EMBED metadata + clinical CSV adapter (medmoe.data.embed_adapter)."""

from __future__ import annotations

import pandas as pd
import pytest

from medmoe.data.embed_adapter import COHORT_COLUMNS, embed_to_cohort

PREFIX = "/mnt/NAS2/mammo/anon_dicom/"


def image(empi, acc, side, view, kind, name, spot=None):
    return {
        "empi_anon": empi,
        "acc_anon": acc,
        "anon_dicom_path": f"{PREFIX}{empi}/{acc}/{name}.dcm",
        "ViewPosition": view,
        "ImageLateralityFinal": side,
        "FinalImageType": kind,
        "spot_mag": spot,
    }


@pytest.fixture
def metadata() -> pd.DataFrame:
    rows = [
        # patient 1, exam 100: full left breast (+ a duplicate CC and a spot view), right breast FFDM CC only
        image(1, 100, "L", "CC", "2D", "b_lcc"),
        image(1, 100, "L", "CC", "2D", "a_lcc"),
        image(1, 100, "L", "MLO", "2D", "lmlo"),
        image(1, 100, "L", "CC", "cview", "c_lcc"),
        image(1, 100, "L", "MLO", "cview", "c_lmlo"),
        image(1, 100, "L", "CC", "2D", "spot_lcc", spot=1.0),
        image(1, 100, "R", "CC", "2D", "rcc"),
        image(1, 100, "R", "XCCL", "2D", "rxccl"),  # exaggerated CC: not a slot
        image(1, 100, "R", "MLO", "ROI_SSC", "rroi"),  # secondary capture: not a slot
        # patient 2, exam 200 (both breasts), exam 201 (right breast)
        image(2, 200, "L", "CC", "2D", "lcc"),
        image(2, 200, "R", "MLO", "cview", "rmlo"),
        image(2, 201, "R", "CC", "2D", "rcc"),
        # patient 3, exam 300: only a spot view -> no row
        image(3, 300, "L", "CC", "2D", "spot", spot=1.0),
        # patients 4..9: one exam each, to exercise the split
        *[image(p, 100 * p, "L", "CC", "2D", "lcc") for p in range(4, 10)],
    ]
    return pd.DataFrame(rows)


@pytest.fixture
def clinical() -> pd.DataFrame:
    rows = [
        {"empi_anon": 1, "acc_anon": 100, "side": "L", "asses": "S", "tissueden": 3, "age_at_study": 61},
        {"empi_anon": 1, "acc_anon": 100, "side": "L", "asses": "B", "tissueden": 3, "age_at_study": 61},
        {"empi_anon": 1, "acc_anon": 100, "side": "R", "asses": "N", "tissueden": 3, "age_at_study": 61},
        {"empi_anon": 2, "acc_anon": 200, "side": "B", "asses": "P", "tissueden": 5, "age_at_study": 48},
        {"empi_anon": 2, "acc_anon": 200, "side": "R", "asses": "A", "tissueden": 5, "age_at_study": 48},
        {"empi_anon": 2, "acc_anon": 201, "side": None, "asses": "K", "tissueden": 1, "age_at_study": 49},
        *[{"empi_anon": p, "acc_anon": 100 * p, "side": "L", "asses": "N", "tissueden": 2} for p in range(4, 10)],
    ]
    return pd.DataFrame(rows)


def write(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def test_rows_views_and_labels(tmp_path, metadata, clinical):
    out = tmp_path / "cohort" / "embed.csv"
    cohort = embed_to_cohort(
        write(metadata, tmp_path / "meta.csv"),
        write(clinical, tmp_path / "clin.csv"),
        out,
        path_prefix=PREFIX,
        subgroup_columns=("age_at_study",),
    )
    assert list(cohort.columns) == [*COHORT_COLUMNS, "age_at_study"]
    by_id = cohort.set_index("exam_id")
    assert sorted(by_id.index) == sorted(
        ["100_L", "100_R", "200_L", "200_R", "201_R", *[f"{100 * p}_L" for p in range(4, 10)]]
    )
    left = by_id.loc["100_L"]
    assert (left.ffdm_cc, left.ffdm_mlo, left.s2d_cc, left.s2d_mlo) == (
        "1/100/a_lcc.dcm",
        "1/100/lmlo.dcm",
        "1/100/c_lcc.dcm",
        "1/100/c_lmlo.dcm",
    )
    assert (left.density, left.birads, left.laterality) == (2, 2, "L")  # worst finding S beats B
    right = by_id.loc["100_R"]
    assert (right.ffdm_cc, right.ffdm_mlo, right.s2d_cc, right.s2d_mlo) == ("1/100/rcc.dcm", "", "", "")
    assert (right.density, right.birads) == (2, 0)
    assert pd.isna(by_id.loc["200_L", "density"]) and by_id.loc["200_L", "birads"] == 1  # tissueden 5 -> missing
    assert pd.isna(by_id.loc["200_R", "birads"])  # P + A (incomplete) -> missing
    assert by_id.loc["201_R", "birads"] == 2 and by_id.loc["201_R", "density"] == 0  # empty side -> both breasts
    assert by_id.loc["100_L", "age_at_study"] == 61 and pd.isna(by_id.loc["400_L", "age_at_study"])
    assert cohort["risk"].isna().all()  # no cancer_within_1y given

    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(written.columns) == list(cohort.columns)
    assert written.set_index("exam_id").loc["200_L", "density"] == ""
    assert written.set_index("exam_id").loc["100_L", "birads"] == "2"  # ints, not "2.0"
    assert "empi_anon" not in written.columns


def test_split_by_patient(metadata, clinical):
    cohort = embed_to_cohort(metadata, clinical, None, path_prefix=PREFIX, seed=1)
    patient = cohort["ffdm_cc"].where(cohort["ffdm_cc"] != "", cohort["s2d_mlo"]).str.split("/").str[0]
    assert cohort.groupby(patient)["split"].nunique().max() == 1
    assert set(cohort["split"]) <= {"train", "val", "test"}
    again = embed_to_cohort(metadata, clinical, None, path_prefix=PREFIX, seed=1)
    pd.testing.assert_frame_equal(cohort, again)


def test_risk_from_column_and_csv(tmp_path, metadata, clinical):
    clinical = clinical.assign(cancer_within_1y=[1, 0, 0, 0, 0, 1, *[0] * 6])
    cohort = embed_to_cohort(metadata, clinical, None, path_prefix=PREFIX).set_index("exam_id")
    assert cohort.loc["100_L", "risk"] == 1 and cohort.loc["100_R", "risk"] == 0
    assert cohort.loc["201_R", "risk"] == 1
    risk = pd.DataFrame(
        {"empi_anon": [1, 2], "acc_anon": [100, 200], "side": ["R", "B"], "cancer_within_1y": [1, None]}
    )
    cohort = embed_to_cohort(metadata, clinical, None, path_prefix=PREFIX, risk_csv=write(risk, tmp_path / "r.csv"))
    cohort = cohort.set_index("exam_id")
    assert cohort.loc["100_R", "risk"] == 1 and pd.isna(cohort.loc["100_L", "risk"])  # risk_csv wins
    assert pd.isna(cohort.loc["200_L", "risk"])


def test_no_prefix_keeps_paths(metadata, clinical):
    cohort = embed_to_cohort(metadata, clinical, None)
    assert cohort.loc[cohort.exam_id == "201_R", "ffdm_cc"].item() == f"{PREFIX}2/201/rcc.dcm"


def test_missing_columns_name_csv_and_columns(tmp_path, metadata, clinical):
    meta_path = write(metadata.drop(columns=["ViewPosition", "FinalImageType"]), tmp_path / "meta.csv")
    with pytest.raises(ValueError, match=r"metadata_csv '.*meta\.csv'.*\['ViewPosition', 'FinalImageType'\]"):
        embed_to_cohort(meta_path, clinical, None)
    clin_path = write(clinical.drop(columns=["asses"]), tmp_path / "clin.csv")
    with pytest.raises(ValueError, match=r"clinical_csv '.*clin\.csv'.*\['asses'\]"):
        embed_to_cohort(metadata, clin_path, None)
    with pytest.raises(ValueError, match=r"risk_csv.*\['cancer_within_1y'\]"):
        embed_to_cohort(metadata, clinical, None, risk_csv=clinical)
    with pytest.raises(ValueError, match="file not found"):
        embed_to_cohort(tmp_path / "nope.csv", clinical, None)


def test_bad_values_name_rows(metadata, clinical):
    with pytest.raises(ValueError, match=r"path_prefix '/data/'.*row\(s\) 2, 3"):
        embed_to_cohort(metadata, clinical, None, path_prefix="/data/")
    bad_side = clinical.assign(side=["L", "X", *clinical["side"][2:]])
    with pytest.raises(ValueError, match=r"clinical_csv \(DataFrame\): side .* row\(s\) 3$"):
        embed_to_cohort(metadata, bad_side, None, path_prefix=PREFIX)
    bad_risk = clinical.assign(cancer_within_1y=[0, 0, 0, 0, "yes", *[0] * (len(clinical) - 5)])
    with pytest.raises(ValueError, match=r"cancer_within_1y must be 0, 1 or empty; .* row\(s\) 6$"):
        embed_to_cohort(metadata, bad_risk, None, path_prefix=PREFIX)


def test_risk_csv_labels_breasts_without_clinical_rows(metadata, clinical):
    clinical = clinical[clinical["acc_anon"] != 201]  # exam 201 (right breast) has images but no clinical row
    risk = pd.DataFrame({"empi_anon": [2], "acc_anon": [201], "side": ["R"], "cancer_within_1y": [1]})
    cohort = embed_to_cohort(metadata, clinical, None, path_prefix=PREFIX, risk_csv=risk).set_index("exam_id")
    assert cohort.loc["201_R", "risk"] == 1  # risk_csv wins
    assert pd.isna(cohort.loc["201_R", "density"]) and pd.isna(cohort.loc["201_R", "birads"])
    assert len(cohort) == len(embed_to_cohort(metadata, clinical, None, path_prefix=PREFIX))  # no row added


def test_path_prefix_is_compared_as_a_folder(metadata, clinical):
    short = PREFIX.rstrip("/")[:-1]  # "/mnt/NAS2/mammo/anon_dico": a string prefix of every path, not a folder
    with pytest.raises(ValueError, match=r"not under path_prefix"):
        embed_to_cohort(metadata, clinical, None, path_prefix=short)
    cohort = embed_to_cohort(metadata, clinical, None, path_prefix=PREFIX.rstrip("/"))  # trailing "/" optional
    assert cohort.loc[cohort.exam_id == "201_R", "ffdm_cc"].item() == "2/201/rcc.dcm"
