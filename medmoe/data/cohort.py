"""Cohort tables: load a CSV (or MONAI JSON datalist), validate every row, and turn rows into sample dicts.

Format (DESIGN.md, "Cohorts"): one row per sample; an id column; one path column per modality
(empty = missing); one integer column per task label (empty or -1 = missing, stored as -1); an optional
``split`` column (``train`` / ``val`` / ``test``). Row numbers in messages are CSV line numbers
(the header is line 1), so they match what a spreadsheet shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["CohortError", "Cohort", "load_cohort", "check_readable", "SPLITS"]

SPLITS = ("train", "val", "test")
_FOLDER_IMAGES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")
_DATALIST_SPLITS = {"training": "train", "validation": "val", "test": "test", "testing": "test"}


class CohortError(ValueError):
    """A cohort failed validation; ``problems`` lists every bad row or column."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source, self.problems = source, list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:200])
        more = f"\n  ... and {len(self.problems) - 200} more" if len(self.problems) > 200 else ""
        super().__init__(f"cohort {source}: {len(self.problems)} problem(s):\n{shown}{more}")


def check_readable(path: Path) -> str | None:
    """Return why ``path`` cannot be read as an image (None if it can), reading headers only.

    A folder (e.g. an OCT volume stored as numbered B-scans, as GAMMA ships it) must hold at least one image file;
    its first one (by name) is checked.
    """
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in _FOLDER_IMAGES)
        return check_readable(images[0]) if images else f"folder without image files ({', '.join(_FOLDER_IMAGES)})"
    suffix = "".join(path.suffixes[-2:]).lower() if path.name.lower().endswith(".nii.gz") else path.suffix.lower()
    try:
        if suffix in (".dcm", ".dicom", ""):
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if "PixelData" not in ds and "Rows" not in ds:
                return "DICOM without image data"
        elif suffix in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
            from PIL import Image

            with Image.open(path) as img:
                img.verify()
        elif suffix in (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd"):
            import nibabel as nib

            if suffix.startswith(".nii"):
                nib.load(path)
        elif suffix == ".npy":
            np.load(path, mmap_mode="r")
        elif suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r"):
                pass
        return None
    except Exception as err:  # every reader has its own exception types; report them all the same way
        return f"unreadable ({type(err).__name__}: {str(err)[:120]})"


def _read_table(source: Path) -> pd.DataFrame:
    if not source.exists():
        raise FileNotFoundError(f"cohort file not found: {source}")
    if source.suffix.lower() == ".json":
        data = json.loads(source.read_text())
        rows = []
        if isinstance(data, list):
            rows = data
        elif isinstance(data, Mapping):
            for key, split in _DATALIST_SPLITS.items():
                rows += [{**r, "split": r.get("split", split)} for r in data.get(key, [])]
        if not rows:
            raise CohortError(str(source), ["no rows: expected a list, or 'training'/'validation'/'test' lists"])
        return pd.DataFrame(rows).astype(object).where(lambda df: df.notna(), "").astype(str)
    return pd.read_csv(source, dtype=str, keep_default_na=False)


@dataclass
class Cohort:
    """A validated cohort: ``records(split)`` gives MONAI-style sample dicts.

    Each record holds the id, the absolute path of every *present* modality (absent keys are
    not set: :class:`~medmoe.data.FillMissingModalitiesd` adds explicit placeholders later), a
    ``modality_mask`` bool array in ``modalities`` order, and one int per task (-1 = missing).
    """

    table: pd.DataFrame
    modalities: list[str]
    tasks: dict[str, int]
    id_column: str
    split_column: str | None
    source: str
    extra_columns: list[str] = field(default_factory=list)
    path_columns: list[str] = field(default_factory=list)

    def records(self, split: str | None = None) -> list[dict]:
        """Sample dicts for one split (``None`` = all rows)."""
        df = self.table
        if split is not None:
            if self.split_column is None:
                raise ValueError(f"cohort {self.source} has no split column; cannot select split '{split}'")
            df = df[df[self.split_column] == split]
        out = []
        for _, row in df.iterrows():
            rec: dict = {self.id_column: row[self.id_column]}
            mask = np.zeros(len(self.modalities), dtype=bool)
            for i, key in enumerate(self.modalities):
                if row[key]:
                    rec[key] = row[key]
                    mask[i] = True
            rec["modality_mask"] = mask
            for task in self.tasks:
                rec[task] = int(row[task]) if task in row and row[task] != "" else -1
            for col in self.extra_columns:
                rec[col] = row[col]
            for col in self.path_columns:  # e.g. a segmentation mask: set only when present
                if row[col]:
                    rec[col] = row[col]
            out.append(rec)
        return out

    def __len__(self) -> int:
        return len(self.table)


def load_cohort(
    cohort_csv: str | Path,
    modalities: Sequence[str],
    tasks: Mapping[str, int],
    data_root: str | Path | None = None,
    id_column: str = "exam_id",
    split_column: str | None = "split",
    require_labels: bool = True,
    required_splits: Sequence[str] = ("train", "val"),
    check_files: bool = True,
    check_file: Callable[[Path], str | None] = check_readable,
    extra_columns: Sequence[str] = (),
    path_columns: Sequence[str] = (),
    require_modality: bool = True,
) -> Cohort:
    """Read and validate a cohort, reporting every bad row at once.

    Args:
        cohort_csv: a CSV, or a JSON list of rows / MONAI datalist (``training``, ``validation``, ``test``).
        modalities: path columns, in model order.
        tasks: label columns -> number of classes; labels must be integers in ``[0, classes)``.
        data_root: prefix for relative paths (default: the cohort file's folder).
        id_column: unique sample id column.
        split_column: split column (values in ``train``/``val``/``test``); ``None`` for no splits.
        require_labels: when False (inference), label columns may be absent.
        required_splits: splits that must have at least one row.
        check_files: check every referenced file exists and its header reads.
        check_file: the readability check, ``path -> reason or None``.
        extra_columns: further columns copied into every record (e.g. subgroup columns).
        path_columns: optional file columns that are not modalities, e.g. segmentation masks (empty = missing):
            resolved against ``data_root`` and checked like modality paths, set in a record only when present.
            With ``require_labels=False`` they may be absent from the file.
        require_modality: every row needs at least one present modality path; set False when the caller checks
            presence itself (e.g. tabular blocks as modalities, :func:`medmoe.data.load_tabular_cohort`).

    Returns:
        a :class:`Cohort`.

    Raises:
        FileNotFoundError: if the cohort file does not exist.
        CohortError: listing missing columns, or every bad row (missing / unreadable file, bad
            label, duplicate id, unknown split, no modality) and every empty required split.

    Example::

        >>> cohort = load_cohort("cohort.csv", ["ffdm_cc", "ffdm_mlo"], {"density": 4}, data_root="/data")
        >>> train = cohort.records("train")
    """
    source = Path(cohort_csv)
    df = _read_table(source)
    root = Path(data_root) if data_root else source.parent
    required = [id_column, *modalities, *(tasks if require_labels else []), *([split_column] if split_column else [])]
    needed_paths = list(path_columns) if require_labels else []
    missing_cols = [c for c in [*required, *extra_columns, *needed_paths] if c not in df.columns]
    if missing_cols:
        raise CohortError(str(source), [f"missing column(s) {missing_cols}; the file has {list(df.columns)}"])
    df = df.copy()
    for column in [*tasks, *path_columns]:
        if column not in df.columns:
            df[column] = ""
    problems: list[str] = []
    ids = df[id_column].str.strip()
    for rid, count in ids.value_counts().items():
        if count > 1:
            lines = [str(i + 2) for i in np.flatnonzero(ids.to_numpy() == rid)]
            problems.append(f"rows {', '.join(lines)}: duplicate {id_column} '{rid}'")
    for i, row in df.iterrows():
        line = f"row {int(i) + 2} ({id_column}={row[id_column]!r})"
        if not row[id_column].strip():
            problems.append(f"{line}: empty {id_column}")
        present = 0
        for key in modalities:
            value = row[key].strip()
            if not value:
                continue
            present += 1
            path = Path(value) if Path(value).is_absolute() else root / value
            df.at[i, key] = str(path)
            if check_files:
                if not path.exists():
                    problems.append(f"{line}: column '{key}': file not found: {path}")
                elif (reason := check_file(path)) is not None:
                    problems.append(f"{line}: column '{key}': {path}: {reason}")
        for key in path_columns:
            value = row[key].strip()
            if value:
                path = Path(value) if Path(value).is_absolute() else root / value
                df.at[i, key] = str(path)
                if check_files and not path.exists():
                    problems.append(f"{line}: column '{key}': file not found: {path}")
                elif check_files and (reason := check_file(path)) is not None:
                    problems.append(f"{line}: column '{key}': {path}: {reason}")
        if present == 0 and require_modality:
            problems.append(f"{line}: no modality present (all of {list(modalities)} empty)")
        for task, classes in tasks.items():
            value = row[task].strip()
            if value in ("", "-1"):  # empty or -1: label missing (ignored by the loss and the metrics)
                df.at[i, task] = ""
                continue
            try:
                label = float(value)
                ok = label.is_integer() and 0 <= label < classes
            except ValueError:
                ok = False
            if not ok:
                problems.append(f"{line}: column '{task}': label {value!r} not an integer in 0..{classes - 1}")
            else:
                df.at[i, task] = str(int(label))
        if split_column and row[split_column].strip() not in SPLITS:
            problems.append(f"{line}: column '{split_column}': unknown split {row[split_column]!r} (use {SPLITS})")
    if split_column:
        for split in required_splits:
            if not (df[split_column].str.strip() == split).any():
                problems.append(f"split '{split}' is empty: at least one row with {split_column}={split} is required")
        df[split_column] = df[split_column].str.strip()
    if problems:
        raise CohortError(str(source), problems)
    return Cohort(
        df, list(modalities), dict(tasks), id_column, split_column, str(source), list(extra_columns), list(path_columns)
    )
