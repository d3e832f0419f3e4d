"""cohort scan: a PACS-export-like folder -> cohort CSV, skip report, pseudonyms, labels."""

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from medmoe.apps.cohort import main
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from medmoe.data.demo_mammo_images import DicomTags, mammo_dataset
from medmoe.data.dicom_scan import join_labels, load_or_create_key, pseudonym, scan_dicom_folder

KEY = bytes(range(32))


def _write(root: Path, name: str, ds: Dataset) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _mammo(patient: int, side: str, view: str, kind: str = "ffdm", syntax=ExplicitVRLittleEndian, **tags) -> Dataset:
    image = np.random.default_rng(patient).random((32, 32)).astype(np.float32)
    header = DicomTags(patient, side, view, kind, 12, "MONOCHROME2", (1.0, 0.0), "20240101", 60, (f"study{patient}",))
    ds = mammo_dataset(image, header, transfer_syntax=syntax)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    """Two patients, one study each, nested folders and meaningless file names, mixed syntaxes and decoys."""
    root = tmp_path / "pacs"
    _write(root, "x1/7f3a", _mammo(1, "L", "CC", AcquisitionTime="090000"))  # replaced by the retake below
    _write(root, "x1/y/0b2c", _mammo(1, "L", "CC", syntax=RLELossless, AcquisitionTime="091500", InstanceNumber=2))
    _write(root, "x2/91", _mammo(1, "L", "MLO", syntax=RLELossless))
    _write(root, "x2/z/aa", _mammo(1, "L", "CC", kind="s2d", syntax=JPEG2000Lossless))
    _write(root, "x3/5e", _mammo(1, "R", "CC"))
    _write(root, "deep/er/still/c4", _mammo(2, "R", "MLO", syntax=JPEG2000Lossless))
    tomo = _mammo(2, "R", "CC", SOPClassUID="1.2.840.10008.5.1.4.1.1.13.1.3", NumberOfFrames=3)
    _write(root, "t/0001", tomo)
    _write(root, "t/0002", _mammo(2, "R", "CC", Modality="CT", SOPClassUID="1.2.840.10008.5.1.4.1.1.2"))
    mag = _mammo(2, "R", "CC")
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "R-102D6", "SRT", "Magnification"
    mag.ViewModifierCodeSequence = DicomSequence([item])
    _write(root, "t/0003", mag)
    _write(root, "t/0004", _mammo(2, "R", "CC", PresentationIntentType="FOR PROCESSING"))
    _write(root, "t/0005", _mammo(2, "L", "CC", ViewPosition="XCCL", SeriesDescription="L XCCL"))
    (root / "t" / "README").write_text("not a DICOM file")
    return root


def test_scan_groups_views_into_exams_and_reports_every_skipped_file(export: Path):
    result = scan_dicom_folder(export, KEY)
    cohort = result.cohort.set_index("laterality", append=True)
    assert len(result.cohort) == 3 and result.files == 12
    rows = {(r.patient, r.laterality): r for r in result.cohort.itertuples()}
    p1, p2 = pseudonym(KEY, "DEMO-0001", "p"), pseudonym(KEY, "DEMO-0002", "p")
    assert set(rows) == {(p1, "L"), (p1, "R"), (p2, "R")}
    left = rows[(p1, "L")]
    assert (left.ffdm_cc, left.ffdm_mlo, left.s2d_cc, left.s2d_mlo) == ("x1/y/0b2c", "x2/91", "x2/z/aa", "")
    assert (rows[(p1, "R")].ffdm_cc, rows[(p2, "R")].ffdm_mlo) == ("x3/5e", "deep/er/still/c4")
    reasons = dict(zip(result.skipped["path"], result.skipped["reason"]))
    assert reasons == {
        "x1/7f3a": "duplicate_view",
        "t/0001": "tomosynthesis",
        "t/0002": "not_mammogram",
        "t/0003": "special_view",
        "t/0004": "for_processing",
        "t/0005": "other_view",
        "t/README": "unreadable",
    }
    detail = result.skipped.set_index("path")["detail"]
    assert "kept x1/y/0b2c" in detail["x1/7f3a"] and "Modality CT" in detail["t/0002"]
    summary = result.summary()
    assert summary["exams"] == 3 and summary["patients"] == 2 and summary["skipped"]["duplicate_view"] == 1
    assert summary["view_patterns"] == {"ffdm_cc+ffdm_mlo+s2d_cc": 1, "ffdm_cc": 1, "ffdm_mlo": 1}
    assert set(cohort["split"]) <= {"train", "val", "test"}
    # both breasts of a patient share the split
    assert result.cohort.groupby("patient")["split"].nunique().max() == 1


def test_ids_are_keyed_pseudonyms_and_never_identifiers(export: Path):
    result = scan_dicom_folder(export, KEY)
    text = result.cohort.to_csv(index=False) + result.skipped.to_csv(index=False)
    studies = set(result.mapping["study_instance_uid"])
    for secret in [*studies, *result.mapping["accession_number"], "DEMO-0001", "DEMO-0002", "DEMO^0001"]:
        assert secret not in text
    again = scan_dicom_folder(export, KEY)
    assert again.cohort["exam_id"].tolist() == result.cohort["exam_id"].tolist()  # stable with the same key
    other = scan_dicom_folder(export, bytes(32))
    assert not set(other.cohort["exam_id"]) & set(result.cohort["exam_id"])  # another key, other pseudonyms
    linked = result.mapping.set_index("exam_id")
    exam = result.cohort.loc[result.cohort["ffdm_cc"] == "x3/5e", "exam_id"].item()
    assert exam.endswith("_R") and linked.loc[exam, "patient_id"] == "DEMO-0001"


def test_labels_join_by_accession_and_per_breast(export: Path):
    result = scan_dicom_folder(export, KEY)
    labels = pd.DataFrame({"accession_number": ["DEMOACC0001", "DEMOACC0001", "UNKNOWN"], "laterality": ["L", "R", "L"],
                           "density": [2, 3, 1]})  # fmt: skip
    joined = join_labels(result.cohort, result.mapping, labels, "accession_number")
    by_file = joined.set_index("ffdm_cc")["density"]
    assert by_file["x1/y/0b2c"] == 2 and by_file["x3/5e"] == 3
    assert joined.loc[joined["ffdm_mlo"] == "deep/er/still/c4", "density"].isna().all()
    exam_level = join_labels(result.cohort, result.mapping, labels.iloc[[0]].drop(columns="laterality"),
                             "accession_number")  # fmt: skip
    assert (exam_level.loc[exam_level["patient"] == pseudonym(KEY, "DEMO-0001", "p"), "density"] == 2).all()
    with pytest.raises(ValueError, match="duplicate label rows"):
        join_labels(result.cohort, result.mapping, pd.concat([labels, labels]), "accession_number")
    with pytest.raises(ValueError, match="no 'study_instance_uid' column"):
        join_labels(result.cohort, result.mapping, labels, "study_instance_uid")


def test_key_file_is_created_private_and_checked(tmp_path: Path):
    path = tmp_path / "k" / "scan.key"
    key = load_or_create_key(path)
    assert len(key) == 32 and load_or_create_key(path) == key and (path.stat().st_mode & 0o777) == 0o600
    path.write_text("not hex")
    with pytest.raises(ValueError, match="hex string"):
        load_or_create_key(path)


def test_scan_command_writes_cohort_report_mapping_and_validates(export: Path, tmp_path: Path, capsys):
    out = tmp_path / "out" / "cohort.csv"
    assert main(["scan", str(export), "--out_csv", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "12 files -> 3 exams of 2 patients" in printed and "files skipped: tomosynthesis" in printed
    cohort = pd.read_csv(out, keep_default_na=False)
    assert list(cohort.columns) == ["exam_id", "patient", "laterality", "ffdm_cc", "ffdm_mlo", "s2d_cc", "s2d_mlo",
                                    "split"]  # fmt: skip
    skipped = pd.read_csv(tmp_path / "out" / "cohort.skipped.csv")
    assert len(skipped) == 7 and (tmp_path / "out" / "cohort.summary.json").is_file()
    mapping = tmp_path / "out" / "cohort.mapping.csv"
    assert (mapping.stat().st_mode & 0o777) == 0o600 and (tmp_path / "out" / "pseudonym.key").is_file()
    # the written cohort is one the validator accepts, with the images where the CSV says
    cohort["split"] = ["train", "val", "train"]
    cohort.to_csv(out, index=False)
    code = main(["validate", "--cohort_csv", str(out), "--data_root", str(export), "--modalities",
                 "ffdm_cc,ffdm_mlo,s2d_cc,s2d_mlo", "--id_column", "exam_id", "--no_split"])  # fmt: skip
    assert code == 0, capsys.readouterr()
    assert main(["scan", str(tmp_path / "nowhere"), "--out_csv", str(out), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
