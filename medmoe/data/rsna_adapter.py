"""Adapter from the RSNA Screening Mammography Breast Cancer Detection ``train.csv`` to the mammography cohort CSV.

RSNA (Kaggle 2023) ships one row per image (``site_id, patient_id, image_id, laterality, view, age, cancer, biopsy,
invasive, BIRADS, implant, density, machine_id, difficult_negative_case``) and the images at
``<image_root>/<patient_id>/<image_id>.dcm``. There is no study id: :func:`rsna_to_cohort` makes one row per
breast (``patient_id`` x ``laterality``) with the ``embed_m4oe`` columns. The column mapping is documented in
``docs/cohorts.md`` ("RSNA screening mammography").

Reference: RSNA Screening Mammography Breast Cancer Detection AI Challenge, https://www.kaggle.com/competitions/
rsna-breast-cancer-detection (data: RSNA AI Challenge Data wiki).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd

from .embed_adapter import COHORT_COLUMNS
from .mammo_tables import AdaptedCohort, exam_labels, finish_cohort, map_codes, pick_views, read_image_table
from .split import split_by_patient

__all__ = ["RSNA_BIRADS_TO_CLASS", "RSNA_COLUMNS", "RSNA_DENSITY_TO_CLASS", "rsna_to_cohort"]

RSNA_COLUMNS: tuple[str, ...] = ("patient_id", "image_id", "laterality", "view", "cancer", "BIRADS", "density")
"""Columns of RSNA ``train.csv`` the adapter needs (``implant`` and the subgroup columns are read when present)."""

RSNA_BIRADS_TO_CLASS: dict[str, int | None] = {"0": None, "1": 0, "2": 1}
"""RSNA ``BIRADS`` -> cohort ``birads`` class: 1 (negative) -> 0, 2 (benign) -> 1, 0 (recall, incomplete) -> missing."""

RSNA_DENSITY_TO_CLASS: dict[str, int | None] = {"A": 0, "B": 1, "C": 2, "D": 3}
"""RSNA ``density`` letter -> cohort ``density`` class."""

_CANCER = {"0": 0, "1": 1}
_IMPLANT = {"0": 0, "1": 1}
_LAYOUT = "<patient_id>/<image_id>.dcm (Kaggle: the train_images folder)"


def rsna_to_cohort(
    train_csv: str | os.PathLike | pd.DataFrame,
    out_csv: str | os.PathLike | None,
    image_root: str | os.PathLike | None = None,
    seed: int = 0,
    *,
    subgroup_columns: Sequence[str] = ("site_id", "machine_id", "age"),
    image_ext: str = ".dcm",
    dropped_csv: str | os.PathLike | None = None,
) -> AdaptedCohort:
    """Build the ``embed_m4oe`` cohort (one row per breast) from RSNA's ``train.csv``.

    Rows: one per ``patient_id`` x ``laterality`` with at least one CC or MLO image; ``exam_id`` is
    ``<patient_id>_<L|R>``. Views: ``CC`` -> ``ffdm_cc``, ``MLO`` -> ``ffdm_mlo`` (path
    ``<patient_id>/<image_id><image_ext>``, relative to the image root); RSNA has no synthesized 2D, so ``s2d_cc``
    and ``s2d_mlo`` are empty. Other views (AT, LM, ML, LMO, ...) are dropped; when several images show one view of
    one breast, the lowest ``image_id`` (numerically) is kept. Every dropped image is listed in the result's
    ``dropped`` table. Labels (one per breast; the images of a breast must agree, an empty cell takes the value of
    the breast's other images): ``density`` A..D -> 0..3; ``birads`` RSNA BIRADS 1 (negative) -> 0, 2 (benign) -> 1,
    0 (recall for further work-up, an incomplete assessment) -> missing, as EMBED's incomplete ``A``; ``risk`` =
    ``cancer`` (0/1); ``implant`` (0/1) is kept as a column. Subgroup columns come from the breast's lowest kept
    ``image_id``. Splits: 70/15/15 by ``patient_id`` (RSNA has no public split of its training images), seeded.

    Args:
        train_csv: RSNA ``train.csv`` path or DataFrame.
        out_csv: cohort CSV to write (temp file + rename); None to only return it.
        image_root: when given, every cohort path must exist under it (the folder holding
            ``<patient_id>/<image_id>.dcm``, Kaggle's ``train_images``).
        seed: seed of the patient-level split.
        subgroup_columns: ``train.csv`` columns to carry over (each must be present).
        image_ext: file extension of the images (".png" for a converted copy).
        dropped_csv: where to write the dropped-image table; None to not write it.

    Returns:
        an :class:`~medmoe.data.mammo_tables.AdaptedCohort`: ``cohort`` (``COHORT_COLUMNS``, ``implant``, the
        subgroup columns) and ``dropped``.

    Raises:
        ValueError: the CSV is missing or lacks a required column; or, naming the CSV, the rows and the column: an
            empty id, a laterality other than L / R, an unknown ``density`` / ``BIRADS`` / ``cancer`` /
            ``implant`` value, a duplicate ``image_id``, images of one breast with different labels; or image
            files missing under ``image_root``.

    Example:
        >>> result = rsna_to_cohort("train.csv", "rsna_cohort.csv", image_root="train_images")  # doctest: +SKIP
        >>> result.summary()["images_dropped"]  # counts by reason: duplicate_view, other_view  # doctest: +SKIP
    """
    frame, label = read_image_table(train_csv, "train_csv", (*RSNA_COLUMNS, *subgroup_columns), "RSNA train.csv")
    frame["density"] = map_codes(frame, "density", RSNA_DENSITY_TO_CLASS, label)
    frame["birads"] = map_codes(frame, "BIRADS", RSNA_BIRADS_TO_CLASS, label)
    frame["risk"] = map_codes(frame, "cancer", _CANCER, label)
    extra = ["implant"] if "implant" in frame.columns and "implant" not in subgroup_columns else []
    for column in extra:
        frame[column] = map_codes(frame, column, _IMPLANT, label)
    columns = {"density": "density", "birads": "BIRADS", "risk": "cancer", **{c: c for c in extra}}
    labels = exam_labels(frame, columns, label)

    numeric = pd.to_numeric(frame["image_id"], errors="coerce")
    order = numeric if numeric.notna().all() else frame["image_id"]
    kept, dropped = pick_views(frame, "view", order, label)
    kept = kept.assign(path=kept["patient_id"] + "/" + kept["image_id"] + image_ext)
    first = kept.assign(_order=order[kept.index]).sort_values("_order").drop_duplicates("exam_id")
    cohort = first.set_index("exam_id")[["patient_id", "laterality", *subgroup_columns]].join(labels)
    cohort["split"] = cohort["patient_id"].map(split_by_patient(cohort["patient_id"], seed=seed))
    columns = [*COHORT_COLUMNS, *extra, *subgroup_columns]
    result = finish_cohort(cohort.reset_index(), kept, dropped, columns, label, image_root, _LAYOUT)
    if out_csv is not None:
        result.write(out_csv, dropped_csv)
    return result
