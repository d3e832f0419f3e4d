"""Cohort tables: load a CSV (or MONAI JSON datalist), validate every row, and turn rows into sample dicts.

Format (DESIGN.md, "Cohorts"): one row per sample; an id column; one path column per modality
(empty = missing); one integer column per task label (empty or -1 = missing, stored as -1); an optional
``split`` column (``train`` / ``val`` / ``test``). Every cell is read as text and stripped once, when the file is
read, so validation and the records see the same values. Row numbers in messages are physical CSV line numbers
(the header is line 1; blank lines count but hold no row), so they match what a spreadsheet or an editor shows; rows
of a JSON datalist are named by their list and 0-based index (``validation[0]``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["CohortError", "Cohort", "load_cohort", "check_readable", "SPLITS"]

SPLITS = ("train", "val", "test")
_FOLDER_IMAGES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm")
_DICOM = (".dcm", ".dicom", "")
_PIL_IMAGES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_ITK_IMAGES = (".mha", ".mhd", ".nrrd", ".nhdr")
_SUPPORTED = (*_DICOM[:2], *_PIL_IMAGES, ".nii", ".nii.gz", *_ITK_IMAGES, ".npy", ".h5", ".hdf5")
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

    DICOM (``.dcm``, ``.dicom`` or no extension) with pydicom, PNG / JPEG / TIFF / BMP with PIL, NIfTI with nibabel,
    MetaImage / NRRD (``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``) with SimpleITK, ``.npy`` with numpy and HDF5 with
    h5py. Any other extension is reported as an unsupported file type. A folder (e.g. an OCT volume stored as
    numbered B-scans, as GAMMA ships it) must hold at least one image file; its first one (by name) is checked.
    """
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in _FOLDER_IMAGES)
        return check_readable(images[0]) if images else f"folder without image files ({', '.join(_FOLDER_IMAGES)})"
    suffix = "".join(path.suffixes[-2:]).lower() if path.name.lower().endswith(".nii.gz") else path.suffix.lower()
    if suffix not in (*_SUPPORTED, ""):
        return f"unsupported file type '{suffix}' (supported: {', '.join(_SUPPORTED)}, or DICOM without extension)"
    try:
        if suffix in _DICOM:
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if "PixelData" not in ds and "Rows" not in ds:
                return "DICOM without image data"
        elif suffix in _PIL_IMAGES:
            from PIL import Image

            with Image.open(path) as img:
                img.verify()
        elif suffix in (".nii", ".nii.gz"):
            import nibabel as nib

            nib.load(path)
        elif suffix in _ITK_IMAGES:
            import SimpleITK as sitk

            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
        elif suffix == ".npy":
            np.load(path, mmap_mode="r")
        else:  # .h5 / .hdf5
            import h5py

            with h5py.File(path, "r"):
                pass
        return None
    except Exception as err:  # every reader has its own exception types; report them all the same way
        return f"unreadable ({type(err).__name__}: {str(err)[:120]})"


def _row_name(names: Mapping[int, str], index: object) -> str:
    """``row <CSV line>`` for a CSV row (the table index is the line number - 2), or ``list[i]`` for a JSON row."""
    return names.get(int(index), f"row {int(index) + 2}")


def _decode(source: Path) -> str:
    raw = source.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise CohortError(
            str(source),
            [
                f"line {line}: byte 0x{raw[err.start]:02x} is not UTF-8 text; save the file as UTF-8 "
                f"(e.g. Excel: 'CSV UTF-8 (Comma delimited)')"
            ],
        ) from err
    if not text.strip():
        raise CohortError(str(source), ["empty file: expected a header line with the column names"])
    return text


def _read_json(source: Path, text: str) -> tuple[pd.DataFrame, dict[int, str], list[str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CohortError(str(source), [f"not valid JSON: {err}"]) from err
    named: list[tuple[str, object]] = []
    if isinstance(data, list):
        named = [(f"entry [{k}]", r) for k, r in enumerate(data)]
    elif isinstance(data, Mapping):
        for key, split in _DATALIST_SPLITS.items():
            rows = data.get(key, [])
            if not isinstance(rows, list):
                raise CohortError(str(source), [f"'{key}' must be a list of row objects, got {type(rows).__name__}"])
            named += [
                (f"{key}[{k}]", {**r, "split": r.get("split", split)} if isinstance(r, Mapping) else r)
                for k, r in enumerate(rows)
            ]
    if not named:
        raise CohortError(str(source), ["no rows: expected a list, or 'training'/'validation'/'test' lists"])
    problems = [f"{name}: not a row object ({type(r).__name__})" for name, r in named if not isinstance(r, Mapping)]
    named = [(name, r) for name, r in named if isinstance(r, Mapping)]
    table = pd.DataFrame([r for _, r in named], index=range(len(named))).astype(object)
    table = table.where(table.notna(), "").astype(str)
    table = table.apply(lambda column: column.str.strip())
    return table, {k: name for k, (name, _) in enumerate(named)}, problems


def _read_csv(source: Path, text: str, id_column: str) -> tuple[pd.DataFrame, list[str]]:
    """Parse a CSV into stripped text cells indexed by ``line - 2`` (physical line of the row's first line)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows, index, problems = [], [], []
    end = 0
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            cells = [c.strip() for c in record]
            if not any(cells):  # a blank line, or a row of empty cells: no sample, but it keeps its line number
                continue
            if header is None:
                header = [c or f"Unnamed: {j}" for j, c in enumerate(cells)]
                duplicated = sorted({c for c in header if header.count(c) > 1})
                if duplicated:
                    raise CohortError(str(source), [f"line {start}: duplicate column name(s) {duplicated}"])
                id_at = header.index(id_column) if id_column in header else None
                continue
            who = f"row {start}" + (
                f" ({id_column}={cells[id_at]!r})" if id_at is not None and id_at < len(cells) else ""
            )
            if len(cells) < len(header):
                problems.append(
                    f"{who}: {len(cells)} cell(s) but the header has {len(header)} columns "
                    f"(no cell for {header[len(cells) :]}); add the missing commas"
                )
                continue
            if any(cells[len(header) :]):
                problems.append(f"{who}: {len(cells)} cells but the header has {len(header)} columns")
                continue
            rows.append(cells[: len(header)])
            index.append(start - 2)
    except csv.Error as err:
        raise CohortError(str(source), [f"line {reader.line_num}: not valid CSV ({err})"]) from err
    if header is None:
        raise CohortError(str(source), ["empty file: expected a header line with the column names"])
    return pd.DataFrame(rows, columns=header, index=index, dtype=object), problems


def _read_table(source: Path, id_column: str) -> tuple[pd.DataFrame, dict[int, str], list[str]]:
    """Read a cohort file as stripped text cells.

    Returns:
        the table (CSV: indexed by ``line - 2``, fully blank rows skipped), the names of JSON rows by index, and the
        rows that could not be read (short or long CSV rows, non-object JSON rows).

    Raises:
        FileNotFoundError: if ``source`` does not exist.
        CohortError: naming the file, for an empty file, a file that is not UTF-8, invalid JSON / CSV, or duplicate
            column names.
    """
    if not source.is_file():
        raise FileNotFoundError(f"cohort file not found: {source}")
    text = _decode(source)
    if source.suffix.lower() == ".json":
        return _read_json(source, text)
    table, problems = _read_csv(source, text, id_column)
    return table, {}, problems


@dataclass
class Cohort:
    """A validated cohort: ``records(split)`` gives MONAI-style sample dicts.

    Each record holds the id, the absolute path of every *present* modality (absent keys are
    not set: :class:`~medmoe.data.FillMissingModalitiesd` adds explicit placeholders later), a
    ``modality_mask`` bool array in ``modalities`` order, and one int per task (-1 = missing).
    ``table`` holds the stripped cells; for a CSV its index is the CSV line number - 2 (see :meth:`row_name`).
    """

    table: pd.DataFrame
    modalities: list[str]
    tasks: dict[str, int]
    id_column: str
    split_column: str | None
    source: str
    extra_columns: list[str] = field(default_factory=list)
    path_columns: list[str] = field(default_factory=list)
    row_names: dict[int, str] = field(default_factory=dict)

    def row_name(self, index: object) -> str:
        """How messages name the row at ``table`` index ``index``: ``row <CSV line>`` or ``training[3]`` (JSON)."""
        return _row_name(self.row_names, index)

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
        cohort_csv: a UTF-8 CSV, or a JSON list of rows / MONAI datalist (``training``, ``validation``, ``test``).
            Every cell is stripped; fully blank rows are skipped; a row with fewer (or more non-empty) cells than
            the header is reported.
        modalities: path columns, in model order.
        tasks: label columns -> number of classes; labels must be integers in ``[0, classes)`` (empty or ``-1`` =
            missing).
        data_root: prefix for relative paths (default: the cohort file's folder); ``~`` is expanded and the root
            made absolute, so records hold absolute paths.
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
        CohortError: naming the file, for an empty / non-UTF-8 / malformed file or missing columns; or listing
            every bad row (short row, missing / unreadable / unsupported file, bad label, duplicate id, unknown
            split, no modality) and every empty required split.

    Example::

        >>> cohort = load_cohort("cohort.csv", ["ffdm_cc", "ffdm_mlo"], {"density": 4}, data_root="/data")
        >>> train = cohort.records("train")
    """
    source = Path(cohort_csv).expanduser()
    df, names, problems = _read_table(source, id_column)
    root = (Path(data_root).expanduser() if data_root else source.parent).resolve()
    required = [id_column, *modalities, *(tasks if require_labels else []), *([split_column] if split_column else [])]
    needed_paths = list(path_columns) if require_labels else []
    missing_cols = [c for c in [*required, *extra_columns, *needed_paths] if c not in df.columns]
    if missing_cols:
        raise CohortError(str(source), [f"missing column(s) {missing_cols}; the file has {list(df.columns)}"])
    df = df.copy()
    for column in [*tasks, *path_columns]:
        if column not in df.columns:
            df[column] = ""
    ids = df[id_column]
    for rid, count in ids.value_counts().items():
        if count > 1 and rid:
            where = [_row_name(names, i) for i in ids.index[ids == rid]]
            if not names:  # CSV: "rows 2, 3"
                where = ["rows " + ", ".join(w.removeprefix("row ") for w in where)]
            problems.append(f"{', '.join(where)}: duplicate {id_column} '{rid}'")
    for i, row in df.iterrows():
        line = f"{_row_name(names, i)} ({id_column}={row[id_column]!r})"
        if not row[id_column]:
            problems.append(f"{line}: empty {id_column}")
        present = 0
        for key in modalities:
            value = row[key]
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
            value = row[key]
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
            value = row[task]
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
        if split_column and row[split_column] not in SPLITS:
            problems.append(f"{line}: column '{split_column}': unknown split {row[split_column]!r} (use {SPLITS})")
    if split_column:
        for split in required_splits:
            if not (df[split_column] == split).any():
                problems.append(f"split '{split}' is empty: at least one row with {split_column}={split} is required")
    if problems:
        raise CohortError(str(source), problems)
    return Cohort(
        df,
        list(modalities),
        dict(tasks),
        id_column,
        split_column,
        str(source),
        list(extra_columns),
        list(path_columns),
        names,
    )
