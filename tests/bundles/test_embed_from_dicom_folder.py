"""A PACS-export-like folder -> cohort scan -> validate -> one epoch of embed_m4oe: the hospital path end to end."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from bundle_runner import ok, run_bundle
from medmoe.apps.cohort import main as cohort_main

from medmoe.data import make_embed_demo

REPO = Path(__file__).resolve().parents[2]
VIEWS = ("ffdm_cc", "ffdm_mlo", "s2d_cc", "s2d_mlo")

pytestmark = pytest.mark.slow


def _export(tmp_path: Path) -> tuple[Path, Path, int]:
    """Demo DICOMs re-filed as a PACS export (nested, meaningless names), plus decoys; -> (folder, labels, exams)."""
    demo = make_embed_demo(tmp_path / "demo", num_exams=24, image_size=(48, 40))
    rows = pd.read_csv(demo)
    pacs = tmp_path / "pacs"
    labels = []
    for row in rows.itertuples():
        for view in VIEWS:
            if isinstance(getattr(row, view), str):
                src = demo.parent / getattr(row, view)
                name = hashlib.sha1(str(src).encode()).hexdigest()
                dst = pacs / name[:2] / name[2:4] / name[4:12]
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dst)
                accession = pydicom.dcmread(src, stop_before_pixels=True).AccessionNumber
        labels.append({"accession_number": accession, "laterality": row.exam_id[-1], "density": row.density,
                       "birads": row.birads, "risk": row.risk})  # fmt: skip
    first = next(p for p in sorted(pacs.rglob("*")) if p.is_file())
    ct = pydicom.dcmread(first)
    ct.Modality, ct.SOPClassUID = "CT", "1.2.840.10008.5.1.4.1.1.2"
    ct.SOPInstanceUID = pydicom.uid.generate_uid()
    (pacs / "zz").mkdir()
    ct.save_as(pacs / "zz" / "ct", enforce_file_format=True)
    tomo = pydicom.dcmread(first)
    tomo.SOPClassUID, tomo.NumberOfFrames = "1.2.840.10008.5.1.4.1.1.13.1.3", 2
    tomo.save_as(pacs / "zz" / "tomo", enforce_file_format=True)
    table = tmp_path / "labels.csv"
    pd.DataFrame(labels).to_csv(table, index=False)
    return pacs, table, len(rows)


def test_scan_validate_and_train_one_epoch_from_a_dicom_folder(tmp_path: Path, capsys) -> None:
    pacs, labels, exams = _export(tmp_path)
    cohort = tmp_path / "cohort" / "cohort.csv"
    # a fixed pseudonymisation key: the patient split follows the pseudonyms, and with a new random key per run some
    # splits leave the 4 validation exams one class per task, so no finite validation AUROC and no model.pt
    key = tmp_path / "pseudonym.key"
    key.write_text("5eed" * 16 + "\n")
    args = ["scan", str(pacs), "--out_csv", str(cohort), "--labels_csv", str(labels), "--key_file", str(key), "--quiet"]
    assert cohort_main(args) == 0
    table = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    assert len(table) == exams and {"density", "birads", "risk", "split"} <= set(table.columns)
    skipped = pd.read_csv(tmp_path / "cohort" / "cohort.skipped.csv")
    assert sorted(skipped["reason"]) == ["not_mammogram", "tomosynthesis"]
    config = str(REPO / "bundles" / "embed_m4oe" / "configs" / "train.json")
    capsys.readouterr()
    code = cohort_main(["validate", "--cohort_csv", str(cohort), "--data_root", str(pacs), "--config_file", config,
                        "--workers", "1", "--quiet"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    run = {"bundle_root": str(tmp_path / "b"), "cohort_csv": str(cohort), "data_root": str(pacs),
           "image_size": [32, 32], "batch_size": 4, "device": "cpu", "max_epochs": 1}  # fmt: skip
    ok(run_bundle("embed_m4oe", "train.json", **run))
    assert (tmp_path / "b" / "models" / "model.pt").is_file()
