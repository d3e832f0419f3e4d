"""Adapter from the GAMMA challenge folder layout to the medmoe fundus + OCT cohort CSV.

GAMMA (Wu et al., Medical Image Analysis 2023; the M4oE paper's Sec. 4.1 fundus + OCT setting) ships one folder per
case with the colour fundus photograph and a sub-folder of numbered OCT B-scans, a grade table with one-hot columns
``data, non, early, mid_advanced`` and, for the optic disc / cup task, grey masks (0 cup, 128 rim, 255 background)::

    <root>/multi-modality_images/0001/0001.jpg            fundus
    <root>/multi-modality_images/0001/0001/0_image.jpg    OCT B-scans (any numbered names)
    <root>/glaucoma_grading_training_GT.csv               data,non,early,mid_advanced (GAMMA ships it as .xlsx:
                                                          export it to CSV; openpyxl is not a medmoe dependency)
    <root>/Disc_Cup_Mask/0001.png                         cup / disc mask (optional, per case)

:func:`build_gamma_cohort` turns this into the cohort contract of the ``gamma_m4oe`` bundle: columns
:data:`GAMMA_COLUMNS` (``case_id, fundus, oct, glaucoma, cup, split``), one row per case, paths relative to
``root``; a missing OCT folder, grade or mask is an empty cell.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..utils import atomic_write_csv
from .cohort import Cohort, CohortError
from .split import split_by_patient

__all__ = ["GAMMA_COLUMNS", "GAMMA_GRADES", "build_gamma_cohort", "gamma_records", "read_gamma_grades"]

logger = logging.getLogger(__name__)

GAMMA_COLUMNS = ("case_id", "fundus", "oct", "glaucoma", "cup", "split")
"""Cohort columns: id, fundus image, OCT B-scan folder, grade 0/1/2 (empty = missing), cup mask, split."""

GAMMA_GRADES = ("non", "early", "mid_advanced")
"""One-hot grade columns of the GAMMA table, in label order (0 = non-glaucoma, 1 = early, 2 = mid / advanced)."""

DEFAULT_GRADES = "glaucoma_grading_training_GT.csv"
"""The grade table's default name under ``root``. When it is absent, its ``.xlsx`` sibling (the name GAMMA ships) is
read instead (which needs ``openpyxl``, not a medmoe dependency: otherwise the error says to export it to CSV); when
neither exists the grades are left empty with a warning, or an error if grades are required."""

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def _case_key(value: object) -> str:
    """Case id as in the folder names: numeric ids are zero-padded to 4 digits (``1`` / ``1.0`` -> ``0001``)."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return f"{int(number):04d}" if number.is_integer() else text


def read_gamma_grades(grades: str | os.PathLike | pd.DataFrame) -> dict[str, int]:
    """Read a GAMMA grade table (one-hot ``non, early, mid_advanced`` per ``data`` id) into ``{case id: grade}``.

    Args:
        grades: a CSV or ``.xlsx`` file (xlsx needs ``openpyxl``, which medmoe does not install: export the sheet
            to CSV instead), or a DataFrame, with columns ``data`` and :data:`GAMMA_GRADES`.

    Returns:
        case id (zero-padded like the folders) -> 0 / 1 / 2.

    Raises:
        ValueError: naming the file and row for a missing column, a row that is not one-hot, or a duplicate id; or
            naming an Excel file that cannot be read (e.g. without ``openpyxl``), with how to export it to CSV.

    Example:
        >>> read_gamma_grades(pd.DataFrame({"data": [1, 2], "non": [1, 0], "early": [0, 0], "mid_advanced": [0, 1]}))
        {'0001': 0, '0002': 2}
    """
    if isinstance(grades, pd.DataFrame):
        table, source = grades.copy(), "grade table (DataFrame)"
    else:
        path, source = Path(grades), f"grade table '{grades}'"
        if not path.is_file():
            raise ValueError(f"{source}: file not found")
        if path.suffix.lower() in (".xlsx", ".xls"):
            try:
                table = pd.read_excel(path, dtype=str)
            except Exception as err:  # ImportError without openpyxl, or any error of a damaged workbook
                reason = (
                    "pandas needs openpyxl for .xlsx (not a medmoe dependency)"
                    if isinstance(err, ImportError)
                    else f"{type(err).__name__}: {err}"
                )
                raise ValueError(
                    f"{source}: cannot read the Excel sheet {path} ({reason}). Export it to CSV (e.g. Excel: File > "
                    f"Save As > CSV UTF-8) as {path.with_suffix('.csv').name} next to it, and pass that file"
                ) from err
        else:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("data", *GAMMA_GRADES) if c not in table.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {list(table.columns)}")
    out: dict[str, int] = {}
    problems = []
    for i, row in table.reset_index(drop=True).iterrows():
        line = f"row {int(i) + 2} (data={row['data']!r})"
        try:
            onehot = [float(row[c]) for c in GAMMA_GRADES]
        except (TypeError, ValueError):
            onehot = []
        if sorted(onehot) != [0.0, 0.0, 1.0]:
            problems.append(
                f"{line}: columns {list(GAMMA_GRADES)} must be one-hot, got {[row[c] for c in GAMMA_GRADES]}"
            )
            continue
        key = _case_key(row["data"])
        if key in out:
            problems.append(f"{line}: duplicate case id '{key}'")
        out[key] = onehot.index(1.0)
    if problems:
        raise ValueError(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
    return out


def _find_fundus(case_dir: Path) -> Path | None:
    images = sorted(p for p in case_dir.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)
    named = [p for p in images if p.stem == case_dir.name]
    return (named or images or [None])[0]


def _find_oct(case_dir: Path) -> Path | None:
    folders = sorted(p for p in case_dir.iterdir() if p.is_dir())
    named = [p for p in folders if p.name == case_dir.name]
    for folder in named or folders:
        if any(p.suffix.lower() in _IMAGE_SUFFIXES for p in folder.iterdir()):
            return folder
    return None


def build_gamma_cohort(
    root: str | os.PathLike,
    images_dir: str = "multi-modality_images",
    grades: str | os.PathLike | pd.DataFrame | None = DEFAULT_GRADES,
    masks_dir: str | None = "Disc_Cup_Mask",
    output_csv: str | os.PathLike | None = None,
    seed: int = 0,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    require_grades: bool = False,
) -> pd.DataFrame:
    """Build the cohort table (one row per case) from a GAMMA-layout folder.

    Args:
        root: dataset folder; every path in the table is relative to it (use it as the bundle's ``data_root``).
        images_dir: folder (under ``root``) of the case folders.
        grades: grade table relative to ``root`` (or absolute, or a DataFrame); ``None`` leaves every grade empty
            (inference). With the default name, a missing CSV falls back to its ``.xlsx`` sibling (see
            :data:`DEFAULT_GRADES`); when neither exists every grade is left empty and a warning is logged.
        masks_dir: folder (under ``root``) of ``<case id>.png`` / ``.bmp`` / ``.jpg`` cup / disc masks; ``None`` or
            a missing folder leaves every mask empty.
        output_csv: if given, the table is written there atomically (CSV).
        seed: seed of the 70/15/15 case split.
        fractions: train / val / test fractions.
        require_grades: raise instead of warning when no grade table is found (or ``grades`` is None).

    Returns:
        the table with columns :data:`GAMMA_COLUMNS`; ``glaucoma`` is ``"0"`` / ``"1"`` / ``"2"`` or ``""``.

    Raises:
        ValueError: if ``images_dir`` holds no case folder, a case has no fundus image and no OCT folder, a grade
            names a case that has no folder, the grade table is bad or unreadable (see :func:`read_gamma_grades`), or
            ``require_grades`` is set and no grade table is found.

    Example:
        >>> root = "/data/GAMMA/training"
        >>> table = build_gamma_cohort(root, output_csv=root + "/cohort.csv")  # doctest: +SKIP
    """
    root = Path(root)
    cases_root = root / images_dir
    cases = sorted(p for p in cases_root.iterdir() if p.is_dir()) if cases_root.is_dir() else []
    if not cases:
        raise ValueError(f"no case folder under {cases_root}")
    labels: dict[str, int] = {}
    if isinstance(grades, pd.DataFrame):
        labels = read_gamma_grades(grades)
    elif grades is not None:
        path = Path(grades) if Path(grades).is_absolute() else root / grades
        if str(grades) == DEFAULT_GRADES and not path.is_file() and path.with_suffix(".xlsx").is_file():
            path = path.with_suffix(".xlsx")  # the name GAMMA ships the sheet under
        if path.is_file() or str(grades) != DEFAULT_GRADES:  # an explicit table must exist
            labels = read_gamma_grades(path)
        elif require_grades:
            raise ValueError(f"no grade table: neither {path} nor {path.with_suffix('.xlsx')} exists; pass grades=")
        else:
            logger.warning(
                f"GAMMA folder {root}: no grade table ({path.name} or {path.with_suffix('.xlsx').name}); "
                "every glaucoma grade is left empty (pass grades= to name the table)"
            )
    elif require_grades:
        raise ValueError("require_grades=True but grades=None")
    masks: dict[str, Path] = {}
    if masks_dir is not None and (root / masks_dir).is_dir():
        masks = {p.stem: p for p in sorted((root / masks_dir).iterdir()) if p.suffix.lower() in _IMAGE_SUFFIXES}
    unknown = sorted(set(labels) - {c.name for c in cases})
    problems = [f"grade for case '{k}' but no folder {cases_root / k}" for k in unknown]
    rows = []
    for case in cases:
        fundus, oct_dir = _find_fundus(case), _find_oct(case)
        if fundus is None and oct_dir is None:
            problems.append(f"case folder {case}: no fundus image and no OCT B-scan folder")
            continue
        mask = masks.get(case.name)
        rows.append(
            {
                "case_id": case.name,
                "fundus": fundus.relative_to(root).as_posix() if fundus else "",
                "oct": oct_dir.relative_to(root).as_posix() if oct_dir else "",
                "glaucoma": str(labels[case.name]) if case.name in labels else "",
                "cup": mask.relative_to(root).as_posix() if mask else "",
            }
        )
    if problems:
        raise ValueError(
            f"GAMMA folder {root}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
        )
    splits = split_by_patient([r["case_id"] for r in rows], seed=seed, fractions=fractions)
    table = pd.DataFrame(rows)
    table["split"] = table["case_id"].map(splits)
    table = table[list(GAMMA_COLUMNS)]
    if output_csv is not None:
        atomic_write_csv(output_csv, table, index=False, lineterminator="\n")
    return table


def gamma_records(
    cohort: Cohort,
    split: str | None = None,
    image_key: str = "fundus",
    mask_keys: Sequence[str] = ("cup",),
    missing_fundus: str = "error",
) -> list[dict]:
    """Sample dicts of the ``gamma_m4oe`` bundle: every case must have its fundus photograph.

    The fundus is required: the field-of-view crop of the fundus and of its mask is computed from it, and the cup
    is segmented on it, so a case without it can be neither preprocessed nor segmented (an absent OCT is fine).
    The whole cohort is checked (every split) so that one message lists every such case before any training.
    Each record also keeps the path of each mask under ``"<mask>_path"`` (``""`` when the case has none), which
    the evaluation uses to score the restored prediction against the mask at the original resolution.

    Args:
        cohort: from :func:`medmoe.data.load_cohort` with ``image_key`` among its modalities.
        split: the split to return (``None`` = all rows).
        image_key: the fundus modality.
        mask_keys: mask path columns of the cohort (``path_columns``).
        missing_fundus: ``"error"`` (raise, naming every case) or ``"skip"`` (drop those cases with a warning
            naming each).

    Returns:
        ``cohort.records(split)`` without the skipped cases, each with ``"<mask>_path"`` set.

    Raises:
        CohortError: with ``missing_fundus="error"``, listing the row and id of every case without a fundus.
        ValueError: an unknown ``missing_fundus`` or an ``image_key`` that is not a modality of the cohort.

    Example:
        >>> records = gamma_records(cohort, "train")  # doctest: +SKIP
        >>> records[0]["cup_path"]  # doctest: +SKIP
        '/data/GAMMA/training/Disc_Cup_Mask/0001.png'
    """
    if missing_fundus not in ("error", "skip"):
        raise ValueError(f"missing_fundus must be 'error' or 'skip', got '{missing_fundus}'")
    if image_key not in cohort.modalities:
        raise ValueError(f"'{image_key}' is not a modality of cohort {cohort.source} ({cohort.modalities})")
    table = cohort.table
    without = table.index[table[image_key].astype(str).str.strip() == ""]
    ids = [str(table.at[i, cohort.id_column]) for i in without]
    if ids and missing_fundus == "error":
        raise CohortError(
            cohort.source,
            [
                f"{cohort.row_name(i)} ({cohort.id_column}={case!r}): no '{image_key}' image; the gamma_m4oe bundle "
                f"needs it to crop and segment the case (add the photograph, drop the row, or pass "
                f"missing_fundus='skip')"
                for i, case in zip(without, ids)
            ],
        )
    records = cohort.records(split)
    if ids:
        skipped = set(ids)
        dropped = [r[cohort.id_column] for r in records if str(r[cohort.id_column]) in skipped]
        for case in dropped:
            logger.warning(f"skipping case {case!r} of {cohort.source}: no '{image_key}' image to crop and segment")
        records = [r for r in records if str(r[cohort.id_column]) not in skipped]
    for record in records:
        for key in mask_keys:
            record[f"{key}_path"] = str(record.get(key, ""))
    return records
