"""Adapter from VinDr-Mammo's ``breast-level_annotations.csv`` to the mammography cohort CSV.

VinDr-Mammo (PhysioNet) ships one row per image (``study_id, series_id, laterality, view_position, height, width,
breast_birads, breast_density, split, image_id``) with breast-level BI-RADS and density, a public training / test
split, and the images at ``<root>/images/<study_id>/<image_id>.dicom``. :func:`vindr_to_cohort` makes one row per
breast (``study_id`` x ``laterality``) with the ``embed_m4oe`` columns. The column mapping is documented in
``docs/cohorts.md`` ("VinDr-Mammo").

Reference: Nguyen et al., "VinDr-Mammo: A large-scale benchmark dataset for computer-aided diagnosis in full-field
digital mammography", Scientific Data 2023.
"""

from __future__ import annotations

import os

import pandas as pd

from .embed_adapter import COHORT_COLUMNS, _rows
from .mammo_tables import AdaptedCohort, exam_labels, finish_cohort, map_codes, pick_views, read_image_table
from .split import split_by_patient

__all__ = ["VINDR_BIRADS_TO_CLASS", "VINDR_COLUMNS", "VINDR_DENSITY_TO_CLASS", "vindr_to_cohort"]

VINDR_COLUMNS: tuple[str, ...] = (
    "study_id",
    "image_id",
    "laterality",
    "view_position",
    "breast_birads",
    "breast_density",
    "split",
)
"""Columns of ``breast-level_annotations.csv`` the adapter needs."""

VINDR_BIRADS_TO_CLASS: dict[str, int | None] = {
    "BI-RADS1": 0,
    "BI-RADS2": 1,
    "BI-RADS3": 1,
    "BI-RADS4": 2,
    "BI-RADS5": 2,
    "BI-RADS6": 2,
}
"""``breast_birads`` (spaces removed, upper case) -> cohort ``birads`` class, the ``embed_m4oe`` convention."""

VINDR_DENSITY_TO_CLASS: dict[str, int | None] = {"DENSITYA": 0, "DENSITYB": 1, "DENSITYC": 2, "DENSITYD": 3}
"""``breast_density`` (spaces removed, upper case) -> cohort ``density`` class."""

_SPLITS = {"training": "train", "test": "test"}
_LAYOUT = "images/<study_id>/<image_id>.dicom (the VinDr-Mammo download folder)"


def vindr_to_cohort(
    annotations_csv: str | os.PathLike | pd.DataFrame,
    out_csv: str | os.PathLike | None,
    image_root: str | os.PathLike | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    *,
    image_ext: str = ".dicom",
    dropped_csv: str | os.PathLike | None = None,
) -> AdaptedCohort:
    """Build the ``embed_m4oe`` cohort (one row per breast) from VinDr-Mammo's breast-level annotation CSV.

    Rows: one per ``study_id`` x ``laterality`` with at least one CC or MLO image; ``exam_id`` is
    ``<study_id>_<L|R>``. Views: ``view_position`` CC -> ``ffdm_cc``, MLO -> ``ffdm_mlo`` (path
    ``images/<study_id>/<image_id><image_ext>``, relative to the download folder); ``s2d_*`` are empty. Other views
    are dropped; of several images of one view of one breast the lowest ``image_id`` (text order) is kept; every
    dropped image is listed in the result's ``dropped`` table. Labels (one per breast; its images must agree):
    ``birads`` BI-RADS 1 -> 0, 2 / 3 -> 1, 4 / 5 (/ 6) -> 2; ``density`` DENSITY A..D -> 0..3; ``risk`` empty
    (VinDr has no outcome). Splits: the public split is kept: ``test`` -> ``test``; ``training`` -> ``train``, with
    ``val_fraction`` of the training studies moved to ``val`` by :func:`~medmoe.data.split_by_patient` over
    ``study_id``: the CSV has no patient id, so the study stands in for the patient (both breasts of a study share
    a split; two studies of one patient, if any, could land in ``train`` and ``val``).

    Args:
        annotations_csv: ``breast-level_annotations.csv`` path or DataFrame.
        out_csv: cohort CSV to write (temp file + rename); None to only return it.
        image_root: when given, every cohort path must exist under it (the folder holding ``images/``).
        seed: seed of the validation split.
        val_fraction: fraction of the training studies for ``val`` (0 <= f < 1).
        image_ext: file extension of the images (".png" for a converted copy).
        dropped_csv: where to write the dropped-image table; None to not write it.

    Returns:
        an :class:`~medmoe.data.mammo_tables.AdaptedCohort`: ``cohort`` (``COHORT_COLUMNS``) and ``dropped``.

    Raises:
        ValueError: the CSV is missing or lacks a required column; or, naming the CSV, the rows and the column: an
            empty id, a laterality other than L / R, an unknown ``breast_birads`` / ``breast_density`` / ``split``
            value, a study in both splits, a duplicate ``image_id``, images of one breast with different labels; or
            image files missing under ``image_root``; or ``val_fraction`` outside [0, 1).

    Example:
        >>> result = vindr_to_cohort("breast-level_annotations.csv", "vindr_cohort.csv")  # doctest: +SKIP
        >>> result.cohort["split"].value_counts()  # public test kept, val carved from training  # doctest: +SKIP
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    frame, label = read_image_table(
        annotations_csv, "annotations_csv", VINDR_COLUMNS, "VinDr-Mammo breast-level_annotations.csv"
    )
    split = frame["split"].str.lower().map(_SPLITS)
    bad = frame.index[split.isna()]
    if len(bad):
        raise ValueError(f"{label}: column 'split' must be 'training' or 'test'; bad value(s) in row(s) {_rows(bad)}")
    both = frame.index[split.groupby(frame["study_id"]).transform("nunique") > 1]
    if len(both):
        raise ValueError(f"{label}: column 'split': a study is in both 'training' and 'test', row(s) {_rows(both)}")
    frame["public_split"] = split
    frame["birads"] = map_codes(frame, "breast_birads", VINDR_BIRADS_TO_CLASS, label)
    frame["density"] = map_codes(frame, "breast_density", VINDR_DENSITY_TO_CLASS, label)
    labels = exam_labels(frame, {"density": "breast_density", "birads": "breast_birads"}, label)

    kept, dropped = pick_views(frame, "view_position", frame["image_id"], label)
    kept = kept.assign(path="images/" + kept["study_id"] + "/" + kept["image_id"] + image_ext)
    cohort = kept.drop_duplicates("exam_id").set_index("exam_id")[["study_id", "laterality", "public_split"]]
    cohort = cohort.join(labels).assign(risk=pd.array([pd.NA] * len(cohort), dtype="Int64"))
    training = cohort.loc[cohort["public_split"] == "train", "study_id"]
    val = split_by_patient(training, seed=seed, fractions=(1.0 - val_fraction, val_fraction, 0.0))
    cohort["split"] = cohort["study_id"].map(val).fillna(cohort["public_split"])
    result = finish_cohort(cohort.reset_index(), kept, dropped, COHORT_COLUMNS, label, image_root, _LAYOUT)
    if out_csv is not None:
        result.write(out_csv, dropped_csv)
    return result
