"""Inference on a folder of DICOM exams: scan, decode check, the cohort to score and the list of what was not scored.

``python -m monai.bundle run --config_file bundles/embed_m4oe/configs/inference.json --dicom_dir /data/new_exams``
calls :func:`prepare_dicom_inference` before the cohort is loaded. It

1. scans the folder (headers only, :func:`medmoe.data.dicom_scan.scan_dicom_folder`): one exam per breast of a
   study, ids are keyed pseudonyms (HMAC-SHA256 with the site's key file);
2. runs the bundle's deterministic ``preprocessing`` on every exam once, as inference will: an exam with a view
   that does not decode (truncated pixel data, a header that disagrees with the pixels) is left out, so one
   broken file cannot stop the run;
3. writes into ``output_dir``: ``dicom_cohort.csv`` (the exams to score, paths relative to the folder),
   ``unscored.csv`` (every file the scan did not use and every exam left out, with the reason),
   ``mapping.csv`` (pseudonym -> StudyInstanceUID / AccessionNumber / PatientID, mode 0600: it stays at the site)
   and prints a summary.

The predictions (``predictions.csv``) and interpretation files the bundle writes then carry the pseudonymous
``exam_id``; ``mapping.csv`` beside them links them back to the studies.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..utils import atomic_write_csv
from .cohort import load_cohort
from .dicom_scan import REASONS, VIEW_COLUMNS, load_or_create_key, scan_dicom_folder

__all__ = ["DECODE_FAILED", "UNSCORED_COLUMNS", "prepare_dicom_inference"]

#: ``reason`` of an exam left out because one of its images did not go through the preprocessing.
DECODE_FAILED = "decode_failed"
#: Columns of ``unscored.csv``: the exam (empty for a file the scan did not assign to an exam), the file, why.
UNSCORED_COLUMNS = ["exam_id", "path", "reason", "detail"]


def _error_chain(err: BaseException) -> list[str]:
    """Messages of ``err`` and its causes, outermost first (MONAI wraps a loader's error in "applying transform")."""
    chain: list[str] = []
    cause: BaseException | None = err
    while cause is not None:
        chain.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__
    return chain


def _failed_view(chain: list[str], record: dict[str, Any], row: pd.Series) -> str:
    """The relative path of the view whose file the error names (the innermost naming message wins)."""
    for message in reversed(chain):
        named = [c for c in VIEW_COLUMNS if c in record and str(record[c]) in message]
        if named:
            return row[max(named, key=lambda c: len(str(record[c])))]
    return ";".join(row[c] for c in VIEW_COLUMNS if row.get(c, ""))


def prepare_dicom_inference(
    dicom_dir: str | Path | None,
    output_dir: str | Path,
    preprocessing: Sequence[Callable[[dict], Any]] | Callable[[dict], Any],
    modalities: Sequence[str] = VIEW_COLUMNS,
    key_file: str | Path | None = None,
    id_column: str = "exam_id",
    verbose: bool = True,
) -> str | None:
    """Scan ``dicom_dir``, decode-check every exam, write the cohort to score; see the module docstring.

    Args:
        dicom_dir: folder of DICOM files (any nesting, any names); empty or ``None``: nothing to do (``None``
            returned, the bundle uses its ``cohort_csv``).
        output_dir: where ``dicom_cohort.csv``, ``unscored.csv`` and ``mapping.csv`` go (the inference outputs'
            folder).
        preprocessing: the bundle's deterministic preprocessing (a list of transforms, or one callable), run on
            each exam's sample dict as inference runs it.
        modalities: the bundle's view columns, in model order.
        key_file: the site's pseudonymisation key (created if absent; default ``output_dir/pseudonym.key``). Use
            the key of earlier scans for the same pseudonyms.
        id_column: the bundle's id column (the scan writes ``exam_id``).
        verbose: print the summary.

    Returns:
        The path of ``dicom_cohort.csv``, or ``None`` when ``dicom_dir`` is empty.

    Raises:
        FileNotFoundError: ``dicom_dir`` is not a folder.
        ValueError: no exam can be scored (``unscored.csv`` is written first and named).
    """
    if not dicom_dir:
        return None
    if id_column != "exam_id":
        raise ValueError(f"DICOM-folder inference writes exam ids in 'exam_id'; set id_column to it, not {id_column!r}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    key = load_or_create_key(key_file or output_dir / "pseudonym.key")
    scan = scan_dicom_folder(dicom_dir, key)
    table = scan.cohort.drop(columns=["split"])
    unscored = [{"exam_id": "", **row} for row in scan.skipped.to_dict("records")]
    scored = table
    if len(table):
        all_csv = output_dir / "dicom_cohort.scanned.csv"
        atomic_write_csv(all_csv, table, index=False)
        cohort = load_cohort(all_csv, list(modalities), {}, data_root=dicom_dir, id_column="exam_id",
                             split_column=None, require_labels=False, required_splits=[])  # fmt: skip
        transform = preprocessing if callable(preprocessing) else _compose(preprocessing)
        rows = table.set_index("exam_id", drop=False)
        failed: set[str] = set()
        for record in cohort.records():
            try:
                transform(dict(record))
            except Exception as err:  # any loader error: the exam is listed, the run goes on
                chain = _error_chain(err)
                exam = record["exam_id"]
                failed.add(exam)
                path = _failed_view(chain, record, rows.loc[exam])
                unscored.append({"exam_id": exam, "path": path, "reason": DECODE_FAILED, "detail": chain[-1][:300]})
        scored = table[~table["exam_id"].isin(failed)]
        all_csv.unlink()
    unscored_df = pd.DataFrame(unscored, columns=UNSCORED_COLUMNS)
    atomic_write_csv(output_dir / "unscored.csv", unscored_df, index=False)
    mapping_csv = output_dir / "mapping.csv"
    atomic_write_csv(mapping_csv, scan.mapping, index=False)
    os.chmod(mapping_csv, 0o600)
    out = output_dir / "dicom_cohort.csv"
    atomic_write_csv(out, scored, index=False)
    if verbose:
        _print_summary(scan.files, len(table), len(scored), unscored_df, output_dir)
    if not len(scored):
        raise ValueError(f"no exam in {dicom_dir} can be scored; the reasons are in {output_dir / 'unscored.csv'}")
    return str(out)


def _compose(transforms: Sequence[Callable[[dict], Any]]) -> Callable[[dict], Any]:
    from monai.transforms import Compose

    return Compose(list(transforms))


def _print_summary(files: int, exams: int, scored: int, unscored: pd.DataFrame, output_dir: Path) -> None:
    reasons = {**REASONS, DECODE_FAILED: "an image of the exam does not decode (the exam is not scored)"}
    print(f"DICOM folder: {files} files -> {exams} exams; {scored} to score, {exams - scored} not scored")
    for reason, n in unscored["reason"].value_counts().items():
        what = "exams" if reason == DECODE_FAILED else "files"
        print(f"  {n:6d} {what} {reason}: {reasons.get(reason, '')}")
    for row in unscored[unscored["reason"] == DECODE_FAILED].itertuples():
        print(f"  not scored: {row.exam_id} ({row.path}): {row.detail}")
    print(
        f"unscored list: {output_dir / 'unscored.csv'}; local id mapping (keep private): {output_dir / 'mapping.csv'}"
    )
