"""DICOM-folder inference for embed_m4oe: ``inference.json --dicom_dir`` on a PACS-like folder with a decoy and a
broken file scores the good exams exactly as the cohort-CSV path does, and lists what it did not score."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from bundle_runner import REPO, ok, run_bundle
from medmoe.apps.cohort import main as cohort_main
from monai.bundle import ConfigParser
from test_embed_from_dicom_folder import _export

from medmoe.data.dicom_inference import prepare_dicom_inference
from medmoe.engines.model_options import write_model_options

VIEWS = ("ffdm_cc", "ffdm_mlo", "s2d_cc", "s2d_mlo")
CONFIG = REPO / "bundles" / "embed_m4oe" / "configs" / "inference.json"
TINY = {"image_size": [32, 32], "batch_size": 4, "device": "cpu"}


def _pacs(tmp_path: Path) -> tuple[Path, Path]:
    """The PACS-like export of the DICOM-folder training test (demo DICOMs re-filed with meaningless names, a CT and
    a tomosynthesis decoy), plus one mammogram whose header disagrees with its pixel data (Rows doubled: the header
    reads, the pixels do not decode); -> (folder, the broken file)."""
    pacs = _export(tmp_path)[0]
    files = sorted(p for p in pacs.rglob("*") if p.is_file() and p.parent.name != "zz")
    broken = files[len(files) // 2]
    ds = pydicom.dcmread(broken)
    ds.Rows = 2 * ds.Rows
    ds.save_as(broken)
    return pacs, broken


def _untrained_checkpoint(root: Path) -> Path:
    """An untrained embed_m4oe at the tiny size as ``root/models/model.pt`` (+ model_options.json)."""
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser.update(TINY)
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    path = root / "models" / "model.pt"
    path.parent.mkdir(parents=True)
    torch.save(network.state_dict(), path)
    write_model_options(path, network)
    return path


def _probabilities(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"id": str})
    return frame.set_index("id")[[c for c in frame.columns if "_prob_" in c]].astype(float).sort_index()


def _identity(record: dict) -> dict:
    return record


def test_prepare_without_a_folder_does_nothing(tmp_path: Path) -> None:
    assert prepare_dicom_inference("", tmp_path / "out", _identity) is None
    assert not (tmp_path / "out").exists()


def test_prepare_bad_folder_and_nothing_scorable(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_dicom_inference(tmp_path / "nope", tmp_path / "out", _identity)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a DICOM file")
    with pytest.raises(ValueError, match="no exam .* can be scored"):
        prepare_dicom_inference(tmp_path / "empty", tmp_path / "out", _identity, verbose=False)
    unscored = pd.read_csv(tmp_path / "out" / "unscored.csv", keep_default_na=False)
    assert unscored.to_dict("records")[0] | {"detail": ""} == {
        "exam_id": "", "path": "notes.txt", "reason": "unreadable", "detail": ""}  # fmt: skip


@pytest.mark.slow
def test_dicom_folder_predictions_equal_the_cohort_csv_path(tmp_path: Path) -> None:
    pacs, broken = _pacs(tmp_path)
    ckpt = _untrained_checkpoint(tmp_path / "b")
    key = tmp_path / "site.key"
    out = tmp_path / "from_dicom"
    run = {**TINY, "bundle_root": str(tmp_path / "b"), "ckpt_path": str(ckpt)}
    proc = ok(run_bundle("embed_m4oe", "inference.json", **run, dicom_dir=str(pacs), key_file=str(key),
                         output_dir=str(out)))  # fmt: skip
    assert "not scored" in proc.stdout and broken.relative_to(pacs).as_posix() in proc.stdout

    # the same folder through the scan command and the cohort-CSV path, with the same key
    cohort_csv = tmp_path / "scan" / "cohort.csv"
    assert cohort_main(["scan", str(pacs), "--out_csv", str(cohort_csv), "--key_file", str(key), "--quiet"]) == 0
    cohort = pd.read_csv(cohort_csv, dtype=str, keep_default_na=False)
    broken_exam = cohort[(cohort[list(VIEWS)] == broken.relative_to(pacs).as_posix()).any(axis=1)]["exam_id"]
    assert len(broken_exam) == 1
    good = cohort[cohort["exam_id"] != broken_exam.iloc[0]].drop(columns=["split"])
    good.to_csv(tmp_path / "good.csv", index=False)
    ok(run_bundle("embed_m4oe", "inference.json", **run, cohort_csv=str(tmp_path / "good.csv"), data_root=str(pacs),
                  output_dir=str(tmp_path / "from_csv")))  # fmt: skip

    from_dicom, from_csv = (
        _probabilities(out / "predictions.csv"),
        _probabilities(tmp_path / "from_csv" / "predictions.csv"),
    )
    assert list(from_dicom.index) == sorted(good["exam_id"]) and len(from_dicom) == len(cohort) - 1
    assert np.abs(from_dicom.to_numpy() - from_csv.to_numpy()).max() <= 1e-6
    contributions = pd.read_csv(out / "modality_contributions.csv", dtype={"id": str})  # interpretation, per exam
    assert set(contributions["id"]) == set(good["exam_id"])

    unscored = pd.read_csv(out / "unscored.csv", keep_default_na=False)
    failed = unscored[unscored["reason"] == "decode_failed"]
    assert failed[["exam_id", "path"]].values.tolist() == [[broken_exam.iloc[0], broken.relative_to(pacs).as_posix()]]
    decoys = unscored[unscored["exam_id"] == ""].sort_values("path")
    assert decoys[["path", "reason"]].values.tolist() == [["zz/ct", "not_mammogram"], ["zz/tomo", "tomosynthesis"]]
    mapping = pd.read_csv(out / "mapping.csv", dtype=str)
    assert sorted(mapping["exam_id"]) == sorted(cohort["exam_id"])
    assert stat.S_IMODE((out / "mapping.csv").stat().st_mode) == 0o600
    assert not set(mapping["study_instance_uid"]) & set(from_dicom.index)  # predictions carry pseudonyms only

    # the same folder from the exported model.ts: the same predictions, the same unscored list
    export = [sys.executable, "-m", "medmoe.apps.export", "--bundle_root", str(tmp_path / "b"), "--config_file",
              str(CONFIG), "--formats", "ts", "--image_size", "[32, 32]", "--batch_size", "4"]  # fmt: skip
    ok(subprocess.run(export, cwd=REPO, capture_output=True, encoding="utf-8", timeout=600))
    exported = tmp_path / "exported"
    ok(run_bundle("embed_m4oe", "inference.json", **run, dicom_dir=str(pacs), key_file=str(key),
                  output_dir=str(exported), use_exported=True))  # fmt: skip
    from_file = _probabilities(exported / "predictions.csv")
    assert list(from_file.index) == list(from_dicom.index)
    assert np.abs(from_file.to_numpy() - from_dicom.to_numpy()).max() <= 1e-4
    assert pd.read_csv(exported / "unscored.csv", keep_default_na=False).equals(unscored)
