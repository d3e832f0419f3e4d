"""Table steps shared by the public mammography cohort adapters (RSNA screening mammography, VinDr-Mammo).

Both public sets ship one CSV row per image with per-breast labels. The adapters read that table as text, map
label codes with errors that name the file, row and column, check that the images of one breast agree on its
labels, and pick one image per (breast, view) slot, recording every image they leave out and why. The result is an
:class:`AdaptedCohort`: the ``embed_m4oe`` cohort table and the table of dropped images.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..utils import atomic_write_csv
from .embed_adapter import _rows

__all__ = [
    "DROPPED_COLUMNS",
    "AdaptedCohort",
    "check_image_files",
    "exam_labels",
    "finish_cohort",
    "map_codes",
    "pick_views",
    "read_image_table",
]

DROPPED_COLUMNS: tuple[str, ...] = ("row", "image_id", "exam_id", "view", "reason", "kept_image_id")
"""Columns of :attr:`AdaptedCohort.dropped` (``row``: line of the input CSV, header = 1)."""

_VIEW_SLOT = {"CC": "cc", "MLO": "mlo"}


@dataclass
class AdaptedCohort:
    """What an adapter built: the cohort table and every input image it did not use.

    Attributes:
        cohort: one row per exam (breast), the ``embed_m4oe`` columns; labels are nullable ``Int64``.
        dropped: one row per unused input image, columns ``DROPPED_COLUMNS``; ``reason`` is ``other_view`` (a view
            other than CC / MLO) or ``duplicate_view`` (another image filled the same view of the same breast:
            ``kept_image_id`` names it).
    """

    cohort: pd.DataFrame
    dropped: pd.DataFrame

    def summary(self) -> dict[str, object]:
        """Counts for a report: exams written, images dropped by reason and by view, exams with no CC / MLO image.

        Example:
            >>> result.summary()  # doctest: +SKIP
            {'exams': 4, 'images_dropped': {'duplicate_view': 1, 'other_view': 2}, 'other_views': {'AT': 2}, ...}
        """
        other = self.dropped[self.dropped["reason"] == "other_view"]
        kept_exams = set(self.cohort["exam_id"])
        lost = sorted(set(self.dropped["exam_id"]) - kept_exams)
        return {
            "exams": len(self.cohort),
            "images_dropped": {k: int(v) for k, v in self.dropped["reason"].value_counts().sort_index().items()},
            "other_views": {k: int(v) for k, v in other["view"].value_counts().sort_index().items()},
            "exams_without_cc_or_mlo": len(lost),
        }

    def write(self, out_csv: str | os.PathLike, dropped_csv: str | os.PathLike | None = None) -> None:
        """Write the cohort (and, when given, the dropped-image table) atomically, labels as integers."""
        atomic_write_csv(out_csv, self.cohort, index=False, lineterminator="\n")
        if dropped_csv is not None:
            atomic_write_csv(dropped_csv, self.dropped, index=False, lineterminator="\n")


def _cell(value: object) -> str:
    """A cell as stripped text: NaN / None -> '', 12.0 -> '12'."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def read_image_table(
    table: str | os.PathLike | pd.DataFrame, name: str, required: Sequence[str], dataset: str
) -> tuple[pd.DataFrame, str]:
    """Read a one-row-per-image CSV (or copy a DataFrame) as stripped text and check its required columns.

    Args:
        table: CSV path or DataFrame.
        name: argument name for messages, e.g. ``"train_csv"``.
        required: columns that must be present: the exam's id column (patient or study) first, then ``image_id``;
            ``laterality`` among them.
        dataset: the data set whose column names are expected, for the message (e.g. ``"RSNA train.csv"``).

    Returns:
        the table (every cell a stripped string, empty = missing, index = 0-based data row; ``laterality`` upper
        case; ``exam_id`` = ``<first required column>_<laterality>``) and its label for error messages.

    Raises:
        ValueError: the file does not exist or lacks a required column (the message names both); or, naming the
            rows, an empty id (first two required columns), a duplicate ``image_id``, a laterality other than L / R.
    """
    if isinstance(table, pd.DataFrame):
        frame, label = table.reset_index(drop=True).map(_cell), f"{name} (DataFrame)"
    else:
        label = f"{name} '{table}'"
        if not Path(table).is_file():
            raise ValueError(f"{label}: file not found")
        frame = pd.read_csv(table, dtype=str, keep_default_na=False).map(_cell)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{label} lacks required column(s) {missing}; it has {list(frame.columns)[:20]}. "
            f"Expected at least {list(required)} ({dataset} column names)."
        )
    empty = frame.index[(frame[list(required[:2])] == "").any(axis=1)]
    if len(empty):
        raise ValueError(f"{label}: empty {required[0]} / {required[1]} in row(s) {_rows(empty)}")
    dup = frame.index[frame["image_id"].duplicated(keep=False)]
    if len(dup):
        raise ValueError(f"{label}: duplicate image_id in row(s) {_rows(dup)}")
    side = frame["laterality"].str.upper()
    bad = frame.index[~side.isin(["L", "R"])]
    if len(bad):
        raise ValueError(f"{label}: column 'laterality' must be L or R; bad value(s) in row(s) {_rows(bad)}")
    return frame.assign(laterality=side, exam_id=frame[required[0]] + "_" + side), label


def map_codes(frame: pd.DataFrame, column: str, codes: Mapping[str, int | None], label: str) -> pd.Series:
    """Map a code column to integer classes (nullable ``Int64``); an empty cell is a missing label.

    Cells are compared upper-cased with spaces removed (``'BI-RADS 4'`` -> ``'BI-RADS4'``), numbers as integers
    (``'2.0'`` -> ``'2'``). A code mapped to None gives a missing label.

    Raises:
        ValueError: a non-empty cell is not a known code; names the file, the column, the rows and the values.
    """
    text = frame[column].str.upper().str.replace(" ", "", regex=False)
    text = text.map(lambda t: t[:-2] if t.endswith(".0") and t[:-2].isdigit() else t)
    known = text.isin(list(codes)) | (text == "")
    if not known.all():
        bad = frame.index[~known]
        values = sorted(set(frame.loc[bad, column]))[:5]
        raise ValueError(
            f"{label}: column '{column}': unknown value(s) {values} in row(s) {_rows(bad)}; "
            f"expected one of {list(codes)} or empty"
        )
    return text.map(lambda t: codes.get(t) if t else None).astype("Float64").astype("Int64")


def exam_labels(frame: pd.DataFrame, columns: Mapping[str, str], label: str) -> pd.DataFrame:
    """One value per exam (``exam_id`` column) for each per-breast column; the images of a breast must agree.

    Missing cells do not count as a disagreement: the breast gets the value its other images carry.

    Args:
        frame: image rows with ``exam_id`` and the (mapped) label columns.
        columns: label column -> the input column it came from (named in the message).
        label: the table's name for messages.

    Raises:
        ValueError: two images of one breast carry different values; names the input column and the rows.
    """
    grouped = frame.groupby("exam_id", sort=False)
    for column, source in columns.items():
        disagree = grouped[column].transform("nunique") > 1
        if disagree.any():
            rows = frame.index[disagree]
            raise ValueError(
                f"{label}: column '{source}': the images of one breast disagree (exam "
                f"'{frame.loc[rows[0], 'exam_id']}') in row(s) {_rows(rows)}; a breast has one label"
            )
    return grouped[list(columns)].first()


def pick_views(
    frame: pd.DataFrame, view_column: str, order: pd.Series, label: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep one CC and one MLO image per exam: the first in ``order``; record every other image and why.

    Args:
        frame: image rows with ``exam_id``, ``image_id``, ``view_column`` (index = 0-based data row).
        view_column: the view column (CC and MLO fill the ``*_cc`` / ``*_mlo`` slots; any other view is dropped).
        order: a sort key per row (e.g. the numeric image id); ties keep the table order.
        label: the table's name for messages.

    Returns:
        (kept rows with a ``slot`` column ``cc`` / ``mlo``, dropped images with ``DROPPED_COLUMNS``).

    Raises:
        ValueError: no image has view CC or MLO (names the views found).
    """
    view = frame[view_column].str.upper()
    slot = view.map(_VIEW_SLOT)
    if slot.isna().all():
        raise ValueError(
            f"{label}: column '{view_column}': no image has view CC or MLO, so no breast can be used; "
            f"views found: {sorted(set(view))[:10]}"
        )
    other = frame[slot.isna()]
    # assign before filtering: assigning a Series to an empty frame would adopt the Series' index
    ranked = frame.assign(slot=slot, _order=order)[slot.notna()].sort_values(["exam_id", "slot", "_order"])
    first = ~ranked.duplicated(["exam_id", "slot"], keep="first")
    kept = ranked[first].drop(columns="_order").sort_index()
    extra = ranked[~first]
    winner = kept.set_index(["exam_id", "slot"])["image_id"]
    kept_id = [winner[(e, s)] for e, s in zip(extra["exam_id"], extra["slot"])]
    dropped = pd.concat(
        [
            pd.DataFrame(
                {
                    "image_id": other["image_id"],
                    "exam_id": other["exam_id"],
                    "view": view[other.index],
                    "reason": "other_view",
                    "kept_image_id": "",
                }
            ),
            pd.DataFrame(
                {
                    "image_id": extra["image_id"],
                    "exam_id": extra["exam_id"],
                    "view": view[extra.index],
                    "reason": "duplicate_view",
                    "kept_image_id": kept_id,
                }
            ),
        ]
    ).sort_index()
    dropped.insert(0, "row", dropped.index + 2)
    return kept, dropped.reset_index(drop=True)[list(DROPPED_COLUMNS)]


def finish_cohort(
    cohort: pd.DataFrame,
    kept: pd.DataFrame,
    dropped: pd.DataFrame,
    columns: Sequence[str],
    label: str,
    image_root: str | os.PathLike | None,
    layout: str,
) -> AdaptedCohort:
    """Join the view paths to the per-exam table, order rows and columns, and check the files.

    Args:
        cohort: one row per exam with ``exam_id`` and every column of ``columns`` except the view paths.
        kept: the images :func:`pick_views` kept, with ``exam_id``, ``slot`` and ``path``.
        dropped: the images it dropped.
        columns: the output columns, in order (``s2d_cc`` / ``s2d_mlo`` are set empty).
        label: the input table's name for messages.
        image_root: when given, every path must exist under it (:func:`check_image_files`).
        layout: the folder layout expected under ``image_root``, for the message.

    Returns:
        the :class:`AdaptedCohort`, rows sorted by ``exam_id``.
    """
    wide = kept.pivot(index="exam_id", columns="slot", values="path").reindex(columns=["cc", "mlo"]).fillna("")
    cohort = cohort.join(wide.rename(columns={"cc": "ffdm_cc", "mlo": "ffdm_mlo"}), on="exam_id")
    cohort = cohort.assign(s2d_cc="", s2d_mlo="").sort_values("exam_id", kind="stable").reset_index(drop=True)
    cohort = cohort[list(columns)]
    if image_root is not None:
        check_image_files(pd.concat([cohort["ffdm_cc"], cohort["ffdm_mlo"]]), image_root, label, layout)
    return AdaptedCohort(cohort, dropped)


def check_image_files(paths: pd.Series, image_root: str | os.PathLike, label: str, layout: str) -> None:
    """Check that every cohort path exists under ``image_root``.

    Raises:
        ValueError: the folder does not exist, or files are missing (count and the first few, with the layout the
            folder should have).
    """
    root = Path(image_root).expanduser()
    if not root.is_dir():
        raise ValueError(f"image_root '{image_root}' is not a folder (it should hold {layout})")
    missing = [p for p in paths if p and not (root / p).is_file()]
    if missing:
        raise ValueError(
            f"{label}: {len(missing)} of {sum(1 for p in paths if p)} image(s) not found under image_root "
            f"'{image_root}', e.g. {missing[:3]}; image_root must be the folder holding {layout}"
        )
