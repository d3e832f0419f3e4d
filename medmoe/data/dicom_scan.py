"""From a PACS export (a folder of DICOM files) to a mammography cohort CSV, reading headers only.

:func:`scan_dicom_folder` walks a folder recursively, reads each file's header (pixel data deferred, never
decoded), keeps the 2D mammograms a mammography bundle can use and groups them into exams: one row per breast of
one study (``StudyInstanceUID`` x laterality) with one path column per view (``ffdm_cc``, ``ffdm_mlo``,
``s2d_cc``, ``s2d_mlo``; full-field digital or synthesized 2D x CC / MLO, from the tag logic of
:mod:`medmoe.transforms.dicom_tags`). Every file it does not use is reported with its reason (:data:`REASONS`).

Ids are pseudonyms: ``exam_id`` is a keyed hash (HMAC-SHA256) of the study UID plus the side, ``patient`` a keyed
hash of the PatientID; no UID, accession number or patient id enters the cohort CSV. The key is a local secret
file; the separate mapping table (:attr:`ScanResult.mapping`) links pseudonyms back to studies and is meant to stay
inside the hospital. The train / val / test split is by patient pseudonym (:func:`medmoe.data.split.split_by_patient`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

from ..transforms.dicom_tags import dicom_meta
from .split import split_by_patient

__all__ = [
    "REASONS",
    "VIEW_COLUMNS",
    "ScanResult",
    "classify_file",
    "join_labels",
    "load_or_create_key",
    "pseudonym",
    "scan_dicom_folder",
]

#: Columns of the cohort CSV that hold image paths, in the bundle's modality order.
VIEW_COLUMNS: tuple[str, ...] = ("ffdm_cc", "ffdm_mlo", "s2d_cc", "s2d_mlo")

#: Why a file was not used (the ``reason`` column of :attr:`ScanResult.skipped`).
REASONS: dict[str, str] = {
    "unreadable": "not a DICOM file, or its header cannot be read",
    "not_mammogram": "Modality is not MG",
    "tomosynthesis": "tomosynthesis or other multi-frame object (2D views only)",
    "for_processing": "For Processing image (raw detector data; the bundles use For Presentation images)",
    "no_pixel_data": "no PixelData element",
    "special_view": "magnification, spot compression or implant-displaced view",
    "other_view": "a view other than CC / MLO",
    "no_view": "view or laterality not found in the header",
    "other_image_type": "neither full-field digital nor synthesized 2D (e.g. digitised film, CR)",
    "no_study": "no StudyInstanceUID",
    "duplicate_view": "a second image of the same view of the same breast in one study",
}

_TOMO_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.13.1.3",  # Breast Tomosynthesis Image Storage
        "1.2.840.10008.5.1.4.1.1.13.1.4",  # Breast Projection X-Ray Image Storage - For Presentation
        "1.2.840.10008.5.1.4.1.1.13.1.5",  # Breast Projection X-Ray Image Storage - For Processing
    }
)
_FOR_PROCESSING_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.2.1"})
_SPECIAL_MEANINGS = ("magnif", "spot", "implantdisplaced", "implant displaced")
_SPECIAL_TOKENS = frozenset({"MAG", "MAGNIFICATION", "SPOT", "ID", "IMPLANT", "EKLUND"})
_HEADER_TAGS = ("StudyInstanceUID", "AccessionNumber", "PatientID", "InstanceNumber", "AcquisitionTime", "ContentTime")


def load_or_create_key(path: str | Path) -> bytes:
    """The pseudonymisation key in ``path``; a new random key (32 bytes, hex) is written there, mode 0600, if absent.

    Keep the file private: with it, anyone holding a study UID can recompute its pseudonym.
    """
    import secrets

    path = Path(path).expanduser()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    text = path.read_text().strip()
    if not re.fullmatch(r"[0-9a-f]{32,}", text):
        raise ValueError(f"pseudonymisation key file {path} must hold one hex string of >= 32 characters")
    return bytes.fromhex(text)


def pseudonym(key: bytes, value: str, prefix: str, length: int = 16) -> str:
    """``prefix`` + the first ``length`` hex digits of HMAC-SHA256(key, value).

    Example:
        >>> pseudonym(b"k" * 32, "1.2.3", "e")
        'e4f4b5dbe0a41192f'
    """
    return prefix + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:length]


def _special_view(ds: Any) -> bool:
    for item in ds.get("ViewModifierCodeSequence") or ():
        meaning = str(item.get("CodeMeaning", "") or "").lower()
        if any(m in meaning for m in _SPECIAL_MEANINGS):
            return True
    text = " ".join(str(ds.get(k, "") or "") for k in ("SeriesDescription", "ViewPosition"))
    tokens = [t for t in re.split(r"[^A-Za-z0-9]+", text.upper()) if t]
    # "RCCID" / "LMLOID": implant-displaced views written as one token; "M" + view: magnification
    return any(t in _SPECIAL_TOKENS or re.fullmatch(r"[LR]?(CC|MLO)ID", t) or re.fullmatch(r"M[LR]?(CC|MLO)", t)
               for t in tokens)  # fmt: skip


def classify_file(path: Path) -> dict[str, Any]:
    """Header of one file -> ``{"reason": None or a key of REASONS, "detail", "column", "laterality", ...}``."""
    try:
        ds = pydicom.dcmread(path, defer_size=1024)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as e:
        return {"reason": "unreadable", "detail": f"{type(e).__name__}: {e}"[:200]}
    meta = dicom_meta(ds)
    sop = str(ds.get("SOPClassUID", "") or "")
    out: dict[str, Any] = {"reason": None, "detail": ""}
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if meta["modality"] != "MG":
        out.update(reason="not_mammogram", detail=f"Modality {meta['modality'] or '(none)'}")
    elif sop in _TOMO_SOP_CLASSES or frames > 1:
        out.update(reason="tomosynthesis", detail=f"SOP class {sop}, {frames} frame(s)")
    elif sop in _FOR_PROCESSING_SOP_CLASSES or str(ds.get("PresentationIntentType", "")).upper() == "FOR PROCESSING":
        out.update(reason="for_processing", detail=f"SOP class {sop}")
    elif "PixelData" not in ds:
        out.update(reason="no_pixel_data")
    elif _special_view(ds):
        out.update(reason="special_view", detail=str(ds.get("SeriesDescription", "") or ""))
    elif meta["view"] is None or meta["laterality"] is None:
        out.update(reason="no_view", detail=f"view {meta['view']}, laterality {meta['laterality']}")
    elif meta["view"] not in ("CC", "MLO"):
        out.update(reason="other_view", detail=f"view {meta['view']}")
    elif meta["image_type"] is None:
        out.update(reason="other_image_type", detail=f"SOP class {sop}")
    elif not str(ds.get("StudyInstanceUID", "") or ""):
        out.update(reason="no_study")
    else:
        out.update(column=f"{meta['image_type']}_{meta['view'].lower()}", laterality=meta["laterality"])
    for tag in _HEADER_TAGS:
        value = ds.get(tag)
        out[tag] = "" if value is None else str(value)
    return out


@dataclass
class ScanResult:
    """What :func:`scan_dicom_folder` found.

    Attributes:
        cohort: one row per exam (study x breast): ``exam_id``, ``patient`` (pseudonym), ``laterality``, the
            :data:`VIEW_COLUMNS` (paths relative to the scanned folder, empty = view missing), ``split``.
        skipped: one row per file not used: ``path``, ``reason`` (a key of :data:`REASONS`), ``detail``.
        mapping: local link back, one row per exam: ``exam_id``, ``study_instance_uid``, ``accession_number``,
            ``patient_id``. Keep it inside the hospital.
        files: number of files read.
    """

    cohort: pd.DataFrame
    skipped: pd.DataFrame
    mapping: pd.DataFrame
    files: int

    def summary(self) -> dict[str, Any]:
        """Counts: files, exams, exams per view pattern, skipped files per reason."""
        patterns = (
            self.cohort[list(VIEW_COLUMNS)]
            .ne("")
            .apply(lambda row: "+".join(c for c, present in row.items() if present), axis=1)
        )
        return {
            "files": self.files,
            "exams": len(self.cohort),
            "patients": int(self.cohort["patient"].nunique()),
            "view_patterns": {k: int(v) for k, v in patterns.value_counts().items()},
            "splits": {k: int(v) for k, v in self.cohort["split"].value_counts().items()},
            "skipped": {k: int(v) for k, v in self.skipped["reason"].value_counts().items()},
        }


def _order(record: dict[str, Any]) -> tuple:
    """Later acquisitions sort last (a retake replaces the first image); the path breaks ties."""
    number = record["InstanceNumber"]
    return (record["AcquisitionTime"] or record["ContentTime"], int(number) if number.isdigit() else 0, record["path"])


def scan_dicom_folder(
    root: str | Path,
    key: bytes,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    progress: Callable[[int, int], None] | None = None,
) -> ScanResult:
    """Scan ``root`` recursively (headers only) into a mammography cohort; see the module docstring.

    A duplicate view (the same view of the same breast twice in one study) keeps the later acquisition
    (AcquisitionTime, then ContentTime, then InstanceNumber) and reports the other file with the path it lost to.

    Args:
        root: the folder of a PACS export (any nesting, any file names).
        key: pseudonymisation key (:func:`load_or_create_key`).
        seed: seed of the patient-level split.
        fractions: train / val / test fractions of patients.
        progress: optional callback ``progress(done, total)`` after each file.

    Returns:
        A :class:`ScanResult`.

    Raises:
        FileNotFoundError: if ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"DICOM folder {root} does not exist or is not a folder")
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    used: dict[tuple[str, str], dict[str, list[dict]]] = {}
    skipped: list[dict[str, str]] = []
    for i, path in enumerate(paths):
        record = {**classify_file(path), "path": path.relative_to(root).as_posix()}
        if record["reason"]:
            skipped.append({"path": record["path"], "reason": record["reason"], "detail": record["detail"]})
        else:
            exam = used.setdefault((record["StudyInstanceUID"], record["laterality"]), {})
            exam.setdefault(record["column"], []).append(record)
        if progress is not None:
            progress(i + 1, len(paths))
    rows, mapping = [], []
    for (study, side), views in sorted(used.items()):
        any_record = next(iter(views.values()))[0]
        exam_id = pseudonym(key, study, "e") + f"_{side}"
        row = {"exam_id": exam_id, "patient": pseudonym(key, any_record["PatientID"] or study, "p"), "laterality": side}
        for column in VIEW_COLUMNS:
            candidates = sorted(views.get(column, []), key=_order)
            row[column] = candidates[-1]["path"] if candidates else ""
            for lost in candidates[:-1]:
                detail = f"{column} of exam {exam_id}: kept {row[column]} (later acquisition)"
                skipped.append({"path": lost["path"], "reason": "duplicate_view", "detail": detail})
        rows.append(row)
        link = {"accession_number": any_record["AccessionNumber"], "patient_id": any_record["PatientID"]}
        mapping.append({"exam_id": exam_id, "study_instance_uid": study, **link})
    columns = ["exam_id", "patient", "laterality", *VIEW_COLUMNS]
    cohort = pd.DataFrame(rows, columns=columns)
    splits = split_by_patient(cohort["patient"], seed=seed, fractions=fractions)
    cohort["split"] = cohort["patient"].map(splits)
    skipped_df = pd.DataFrame(skipped, columns=["path", "reason", "detail"]).sort_values("path", ignore_index=True)
    mapping_df = pd.DataFrame(mapping, columns=["exam_id", "study_instance_uid", "accession_number", "patient_id"])
    return ScanResult(cohort, skipped_df, mapping_df, len(paths))


def join_labels(cohort: pd.DataFrame, mapping: pd.DataFrame, labels: pd.DataFrame, key: str) -> pd.DataFrame:
    """Add label columns from a user table keyed by accession number or study UID (and optionally laterality).

    Args:
        cohort: :attr:`ScanResult.cohort`.
        mapping: :attr:`ScanResult.mapping`.
        labels: the user's table: a ``key`` column (``accession_number`` or ``study_instance_uid``), optionally a
            ``laterality`` column (``L`` / ``R``: per-breast labels; without it a label applies to both breasts),
            and one column per task.
        key: ``"accession_number"`` or ``"study_instance_uid"``.

    Returns:
        The cohort with the task columns (empty where no label row matched).

    Raises:
        ValueError: unknown key, key column missing, or duplicate label rows for one exam.
    """
    if key not in ("accession_number", "study_instance_uid"):
        raise ValueError(f"labels key must be 'accession_number' or 'study_instance_uid', got {key!r}")
    if key not in labels.columns:
        raise ValueError(f"the labels CSV has no {key!r} column (columns: {list(labels.columns)})")
    labels = labels.assign(**{key: labels[key].astype(str)})
    on = [key] + (["laterality"] if "laterality" in labels.columns else [])
    dup = labels[labels.duplicated(on, keep=False)]
    if len(dup):
        raise ValueError(f"duplicate label rows for {on}: {dup[on].drop_duplicates().values.tolist()[:10]}")
    linked = cohort.merge(mapping[["exam_id", key]], on="exam_id", how="left")
    tasks = [c for c in labels.columns if c not in on]
    clash = [c for c in tasks if c in cohort.columns]
    if clash:
        raise ValueError(f"label column(s) {clash} clash with the cohort's own columns; rename them")
    merged = linked.merge(labels, on=on, how="left", validate="many_to_one")
    return merged.drop(columns=[key])
