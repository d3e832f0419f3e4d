"""embed_m4oe refuses what is not a mammogram, by default, before training, naming the file and the option."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from bundle_runner import ok, run_bundle

from medmoe.data import make_embed_demo

SAMPLES = Path(__file__).resolve().parents[1] / "samples"

pytestmark = pytest.mark.slow


def test_non_mammograms_are_refused_by_default_and_allowed_by_option(tmp_path: Path) -> None:
    cohort = make_embed_demo(tmp_path / "demo", num_exams=12, image_size=(48, 40))
    rows = pd.read_csv(cohort)
    train = rows.index[rows["split"] == "train"]
    ct = pydicom.dcmread(cohort.parent / rows.loc[train[0], "ffdm_cc"])
    ct.Modality, ct.SOPClassUID = "CT", "1.2.840.10008.5.1.4.1.1.2"  # a CT-tagged file in a view column
    ct.save_as(cohort.parent / "images" / "ct.dcm")
    shutil.copy(SAMPLES / "dicom" / "RG1_J2KR.dcm", cohort.parent / "images" / "chest.dcm")  # a real CR chest
    rows.loc[train[0], "ffdm_cc"] = "images/ct.dcm"
    rows.to_csv(cohort, index=False)
    run = {"bundle_root": str(tmp_path / "b"), "cohort_csv": str(cohort), "image_size": [32, 32], "batch_size": 4,
           "device": "cpu", "max_epochs": 1}  # fmt: skip
    proc = run_bundle("embed_m4oe", "train.json", **run)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "ct.dcm: not a mammogram (Modality 'CT'" in message, message[-3000:]
    assert "--require_mammogram False" in message
    assert not (tmp_path / "b" / "models" / "model.pt").exists()
    rows.loc[train[0], "ffdm_cc"] = "images/chest.dcm"
    rows.to_csv(cohort, index=False)
    proc = run_bundle("embed_m4oe", "train.json", **run)
    assert proc.returncode != 0 and "chest.dcm: not a mammogram (Modality 'CR'" in proc.stdout + proc.stderr
    ok(run_bundle("embed_m4oe", "train.json", **run, require_mammogram="False"))  # the option lets it through
