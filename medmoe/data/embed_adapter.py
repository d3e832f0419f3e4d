"""Adapter from EMBED (Emory Breast Imaging Dataset) CSVs to the medmoe mammography cohort CSV.

EMBED ships two tables: a DICOM *metadata* table (one row per image) and a *clinical* table (one row per
finding). :func:`embed_to_cohort` joins them into the cohort contract used by the ``embed_m4oe`` bundle: one
row per exam = one breast (``side``) of one accession (``acc_anon``), with four view paths (``ffdm_cc``,
``ffdm_mlo``, ``s2d_cc``, ``s2d_mlo``) and three labels (``density``, ``birads``, ``risk``). The full column
mapping is documented in ``docs/cohorts_embed.md``.

Reference: Jeong et al., "The EMory BrEast imaging Dataset (EMBED)", Radiology: Artificial Intelligence 2023.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..utils import atomic_write_csv
from .split import split_by_patient

__all__ = [
    "BIRADS_TO_CLASS",
    "COHORT_COLUMNS",
    "VIEW_SLOTS",
    "embed_to_cohort",
]

VIEW_SLOTS: tuple[str, ...] = ("ffdm_cc", "ffdm_mlo", "s2d_cc", "s2d_mlo")
"""Path columns of the cohort, in the model's fixed modality order."""

COHORT_COLUMNS: tuple[str, ...] = ("exam_id", *VIEW_SLOTS, "density", "birads", "risk", "split", "laterality")
"""Columns every EMBED-style cohort CSV has (subgroup columns may follow)."""

BIRADS_TO_CLASS: dict[str, int | None] = {"N": 0, "B": 1, "P": 1, "S": 2, "M": 2, "K": 2, "A": None}
"""EMBED ``asses`` letter -> cohort ``birads`` class (None = missing label)."""

METADATA_COLUMNS = (
    "empi_anon",
    "acc_anon",
    "anon_dicom_path",
    "ViewPosition",
    "ImageLateralityFinal",
    "FinalImageType",
)
CLINICAL_COLUMNS = ("empi_anon", "acc_anon", "side", "asses", "tissueden")
RISK_COLUMNS = ("empi_anon", "acc_anon", "side", "cancer_within_1y")
_IMAGE_TYPE_TO_KIND = {"2d": "ffdm", "cview": "s2d"}
_VIEW_TO_SLOT = {"CC": "cc", "MLO": "mlo"}
_KEYS = ["empi_anon", "acc_anon", "side"]


def _load(table: str | os.PathLike | pd.DataFrame, name: str, required: Sequence[str]) -> tuple[pd.DataFrame, str]:
    """Read a CSV (ids as strings) or copy a DataFrame and check its required columns."""
    if isinstance(table, pd.DataFrame):
        frame, label = table.copy(), f"{name} (DataFrame)"
    else:
        label = f"{name} '{table}'"
        if not Path(table).is_file():
            raise ValueError(f"{label}: file not found")
        frame = pd.read_csv(table, dtype={"empi_anon": str, "acc_anon": str}, low_memory=False)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{label} lacks required column(s) {missing}; it has {list(frame.columns)[:20]}. "
            f"Expected at least {list(required)} (EMBED column names)."
        )
    for key in ("empi_anon", "acc_anon"):
        frame[key] = frame[key].map(_id_string)
    bad = frame.index[(frame["empi_anon"] == "") | (frame["acc_anon"] == "")]
    if len(bad):
        raise ValueError(f"{label}: empty empi_anon/acc_anon in row(s) {_rows(bad)}")
    return frame, label


def _id_string(value: object) -> str:
    """Normalise an id cell: NaN -> '', 12.0 -> '12', '0012' stays '0012'."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _rows(index: Iterable[int], limit: int = 10) -> str:
    """Format CSV row numbers (header = row 1, first data row = row 2) for an error message."""
    rows = [int(i) + 2 for i in index]
    text = ", ".join(str(r) for r in rows[:limit])
    return text + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def _expand_sides(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """Normalise ``side`` to L/R; B and empty apply to both breasts and are duplicated."""
    side = frame["side"].fillna("B").astype(str).str.strip().str.upper().replace({"": "B"})
    bad = frame.index[~side.isin(["L", "R", "B"])]
    if len(bad):
        raise ValueError(f"{label}: side must be L, R, B or empty; bad value(s) in row(s) {_rows(bad)}")
    frame = frame.assign(side=side)
    both = frame[frame["side"] == "B"]
    return pd.concat([frame[frame["side"] != "B"], both.assign(side="L"), both.assign(side="R")])


def _birads_class(letters: pd.Series) -> float:
    """Worst BI-RADS class of one breast's findings; an incomplete (A) finding makes a non-suspicious breast missing."""
    classes = [BIRADS_TO_CLASS.get(str(x).strip().upper(), None) for x in letters if isinstance(x, str) and x.strip()]
    known = [c for c in classes if c is not None]
    if not known or (len(known) < len(classes) and max(known) < 2):
        return np.nan
    return float(max(known))


def _select_images(meta: pd.DataFrame, path_prefix: str, label: str) -> pd.DataFrame:
    """Keep FFDM/C-View CC/MLO images (no spot/mag) and pick the first path per (exam, view slot)."""
    if "spot_mag" in meta.columns:
        spot = pd.to_numeric(meta["spot_mag"], errors="coerce").fillna(0) != 0
        meta = meta[~spot]
    kind = meta["FinalImageType"].astype(str).str.strip().str.lower().map(_IMAGE_TYPE_TO_KIND)
    view = meta["ViewPosition"].astype(str).str.strip().str.upper().map(_VIEW_TO_SLOT)
    side = meta["ImageLateralityFinal"].astype(str).str.strip().str.upper()
    keep = kind.notna() & view.notna() & side.isin(["L", "R"])
    meta = meta[keep].assign(side=side[keep], slot=kind[keep] + "_" + view[keep])
    paths = meta["anon_dicom_path"].fillna("").astype(str).str.strip()
    if path_prefix:
        folder = path_prefix.rstrip("/") + "/"  # compared as a folder: '/nas/x' does not match '/nas/xy/...'
        outside = meta.index[~paths.str.startswith(folder)]
        if len(outside):
            raise ValueError(
                f"{label}: anon_dicom_path is not under path_prefix '{path_prefix}' in row(s) "
                f"{_rows(outside)} (e.g. '{paths[outside[0]]}'); pass the common leading folder to strip"
            )
        paths = paths.str.slice(len(folder)).str.lstrip("/")
    empty = meta.index[paths == ""]
    if len(empty):
        raise ValueError(f"{label}: empty anon_dicom_path in row(s) {_rows(empty)}")
    meta = meta.assign(path=paths).sort_values(_KEYS + ["slot", "path"], kind="stable")
    first = meta.drop_duplicates(_KEYS + ["slot"], keep="first")
    wide = first.pivot(index=_KEYS, columns="slot", values="path")
    return wide.reindex(columns=list(VIEW_SLOTS)).fillna("").reset_index()


def _risk_table(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """Per-breast ``risk`` (max of cancer_within_1y over findings) from a table with RISK_COLUMNS."""
    value = pd.to_numeric(frame["cancer_within_1y"], errors="coerce")
    raw = frame["cancer_within_1y"]
    given = raw.notna() & (raw.astype(str).str.strip() != "")
    bad = frame.index[(given & value.isna()) | (value.notna() & ~value.isin([0, 1]))]
    if len(bad):
        raise ValueError(f"{label}: cancer_within_1y must be 0, 1 or empty; bad value(s) in row(s) {_rows(bad)}")
    frame = _expand_sides(frame.assign(risk=value), label)
    return frame.groupby(_KEYS, sort=False)["risk"].max().reset_index()


def embed_to_cohort(
    metadata_csv: str | os.PathLike | pd.DataFrame,
    clinical_csv: str | os.PathLike | pd.DataFrame,
    out_csv: str | os.PathLike | None,
    path_prefix: str = "",
    seed: int = 0,
    risk_csv: str | os.PathLike | pd.DataFrame | None = None,
    *,
    subgroup_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """Build the ``embed_m4oe`` cohort CSV (one row per breast per exam) from EMBED metadata + clinical CSVs.

    Images: rows of ``metadata_csv`` with ``FinalImageType`` "2D" (-> ``ffdm_*``) or "cview" (-> ``s2d_*``),
    ``ViewPosition`` CC or MLO, ``ImageLateralityFinal`` L or R and no ``spot_mag`` flag; when a slot has several
    images the first path in sorted order is used. Labels per breast from ``clinical_csv`` (``side`` B or empty
    applies to both breasts): ``density`` = ``tissueden`` 1..4 -> 0..3 (5 / other -> missing; the max if findings
    disagree); ``birads`` = worst finding, ``asses`` N -> 0, B/P -> 1, S/M/K -> 2, A -> missing (an A finding
    makes the breast missing unless another finding is already class 2); ``risk`` = ``cancer_within_1y`` (0/1)
    taken from ``risk_csv`` if given (also for breasts without a clinical row), else from an optional
    ``cancer_within_1y`` column of ``clinical_csv``, else missing. EMBED has no such column: derive it from the
    pathology outcome dates yourself (see docs/cohorts_embed.md). Exams without any usable image are dropped; exams
    without clinical rows keep missing labels (except ``risk`` from ``risk_csv``). Splits are by patient
    (``empi_anon``), 70/15/15, seeded. Patient ids are not written.

    Args:
        metadata_csv: EMBED metadata CSV path or DataFrame (columns ``empi_anon, acc_anon, anon_dicom_path,
            ViewPosition, ImageLateralityFinal, FinalImageType``; ``spot_mag`` optional).
        clinical_csv: EMBED clinical CSV path or DataFrame (columns ``empi_anon, acc_anon, side, asses,
            tissueden``; ``cancer_within_1y`` and ``subgroup_columns`` optional).
        out_csv: where to write the cohort CSV (written to a temp file and renamed); None to only return it.
        path_prefix: leading folder of every ``anon_dicom_path`` to strip so that paths become relative to the
            cohort's ``data_root`` (e.g. "/mnt/NAS2/mammo/anon_dicom/"); compared as a folder (a trailing ``/`` is
            optional, ``/nas/x`` does not match ``/nas/xy/...``); "" keeps the paths as they are.
        seed: seed of the patient-level split.
        risk_csv: optional CSV path or DataFrame with columns ``empi_anon, acc_anon, side, cancer_within_1y``.
        subgroup_columns: clinical columns to carry over (first non-empty value per breast), e.g.
            ``("age_at_study", "ETHNICITY_DESC")``.

    Returns:
        the cohort as a DataFrame with ``COHORT_COLUMNS`` (+ subgroup columns); labels are nullable ``Int64``.

    Raises:
        ValueError: a CSV is missing or lacks required columns (the message names the CSV and the columns), a
            path does not start with ``path_prefix``, or a ``side`` / ``cancer_within_1y`` value is invalid
            (the message names the rows).

    Example:
        >>> cohort = embed_to_cohort("EMBED_OpenData_metadata.csv", "EMBED_OpenData_clinical.csv",
        ...                          "embed_cohort.csv", path_prefix="/mnt/NAS2/mammo/anon_dicom/")  # doctest: +SKIP
    """
    meta, meta_label = _load(metadata_csv, "metadata_csv", METADATA_COLUMNS)
    clin, clin_label = _load(clinical_csv, "clinical_csv", (*CLINICAL_COLUMNS, *subgroup_columns))
    images = _select_images(meta, path_prefix, meta_label)

    clin_rows = clin
    clin = _expand_sides(clin, clin_label)
    density = pd.to_numeric(clin["tissueden"], errors="coerce")
    clin = clin.assign(density=density.where(density.isin([1, 2, 3, 4])) - 1)
    grouped = clin.groupby(_KEYS, sort=False)
    labels = grouped["density"].max().to_frame()
    labels["birads"] = grouped["asses"].agg(_birads_class)
    for column in subgroup_columns:
        labels[column] = grouped[column].agg(lambda s: next((v for v in s if pd.notna(v) and str(v) != ""), None))
    if risk_csv is not None:
        risk, _ = _load(risk_csv, "risk_csv", RISK_COLUMNS)
        # outer: risk_csv wins, also for breasts that have no clinical row (their other labels stay missing)
        labels = labels.join(_risk_table(risk, f"risk_csv '{risk_csv}'").set_index(_KEYS), how="outer")
    elif "cancer_within_1y" in clin.columns:
        labels = labels.join(_risk_table(clin_rows, clin_label).set_index(_KEYS), how="left")
    else:
        labels["risk"] = np.nan

    cohort = images.merge(labels.reset_index(), on=_KEYS, how="left")
    splits = split_by_patient(cohort["empi_anon"], seed=seed)
    cohort["split"] = cohort["empi_anon"].map(splits)
    cohort["laterality"] = cohort["side"]
    cohort["exam_id"] = cohort["acc_anon"] + "_" + cohort["side"]
    for column in ("density", "birads", "risk"):
        cohort[column] = cohort[column].astype("Float64").round().astype("Int64")
    cohort = cohort.sort_values(["acc_anon", "side"], kind="stable").reset_index(drop=True)
    cohort = cohort[[*COHORT_COLUMNS, *subgroup_columns]]
    if cohort["exam_id"].duplicated().any():
        dup = cohort.loc[cohort["exam_id"].duplicated(), "exam_id"].head(5).tolist()
        raise ValueError(f"{meta_label}: acc_anon shared by several patients gives duplicate exam ids {dup}")
    if out_csv is not None:
        atomic_write_csv(out_csv, cohort, index=False, lineterminator="\n")
    return cohort
