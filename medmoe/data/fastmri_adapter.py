"""Adapter from fastMRI knee h5 files + fastMRI+ annotations to the medmoe k-space cohort CSV.

fastMRI ships one h5 file per volume (dataset ``kspace``, ``(slices, H, W)`` single-coil or
``(slices, coils, H, W)`` multi-coil); fastMRI+ (Zhao et al., Scientific Data 2022) adds a ``knee.csv`` with one
row per bounding box: ``file`` (volume name, without ``.h5``), ``slice``, ``label`` and box columns.
:func:`build_fastmri_cohort` turns them into the cohort contract of the ``fastmri_i2m2`` bundle (one row per
slice; columns :data:`~medmoe.data.demo_fastmri.FASTMRI_COLUMNS`), as the I2M2 code does
(``generate_knee_metadata.py`` / ``knee_data.py``, see ``reference/i2moe_i2m2.md`` 2.3): only annotated volumes,
label strings grouped into ``acl`` / ``meniscus`` / ``cartilage`` / ``other``, slices of an annotated volume
without a box are negative for all four, and a 70/15/15 split by volume.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..utils import atomic_write_csv
from .demo_fastmri import FASTMRI_COLUMNS, FASTMRI_LABELS
from .split import split_by_patient

__all__ = ["ANNOTATION_COLUMNS", "build_fastmri_cohort", "fastmri_label_groups"]

logger = logging.getLogger(__name__)

ANNOTATION_COLUMNS = ("file", "slice", "label")
"""fastMRI+ columns the adapter reads (the box columns ``x, y, width, height`` and ``study_level`` are ignored)."""


def fastmri_label_groups(label: str) -> set[str]:
    """Map one fastMRI+ knee label string to the cohort's label groups.

    Rules (as the I2M2 data module): contains ``ACL`` -> ``acl``; contains ``meniscus tear`` -> ``meniscus``;
    contains ``cartilage`` -> ``cartilage`` (case-insensitive); any other non-empty label -> ``other``.

    Args:
        label: e.g. ``"ACL High Grade Sprain"``, ``"Meniscus Tear"``,
            ``"Cartilage - Partial Thickness loss/defect"``, ``"Joint Effusion"``.

    Returns:
        a set of group names (empty for an empty label or ``"None"``).

    Example:
        >>> sorted(fastmri_label_groups("Cartilage - Full Thickness loss/defect"))
        ['cartilage']
        >>> sorted(fastmri_label_groups("Bone-Fracture/Contusion/dislocation"))
        ['other']
    """
    text = str(label).strip()
    if not text or text.lower() in ("none", "nan"):
        return set()
    lower = text.lower()
    groups = set()
    if "acl" in lower:
        groups.add("acl")
    if "meniscus tear" in lower:
        groups.add("meniscus")
    if "cartilage" in lower:
        groups.add("cartilage")
    return groups or {"other"}


def _num_slices(path: Path) -> int:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "kspace" not in f:
                raise ValueError(f"{path}: no 'kspace' dataset (found {sorted(f.keys())})")
            return int(f["kspace"].shape[0])
    except OSError as e:
        raise ValueError(f"{path}: not a readable h5 file ({e})") from e


def build_fastmri_cohort(
    h5_dir: str | os.PathLike,
    annotations_csv: str | os.PathLike | pd.DataFrame,
    output_csv: str | os.PathLike | None = None,
    seed: int = 0,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    annotated_only: bool = True,
) -> pd.DataFrame:
    """Build the per-slice cohort table from fastMRI h5 files and the fastMRI+ knee annotations.

    Args:
        h5_dir: folder searched recursively for ``<file>.h5`` volumes.
        annotations_csv: the fastMRI+ ``knee.csv`` (or a DataFrame) with columns ``file, slice, label``. A row
            with an empty ``slice`` (study-level finding) marks its volume as annotated but labels no slice.
        output_csv: if given, the table is written there atomically; ``kspace`` paths are then relative to its
            folder when the h5 files lie below it (use that folder as the bundle's ``data_root``).
        seed: seed of the volume split.
        fractions: train / val / test fractions of volumes.
        annotated_only: keep only volumes named in the annotations (the I2M2 protocol); otherwise every other
            volume's slices are all-negative.

    Returns:
        the cohort table (columns ``slice_id, kspace, slice, acl, meniscus, cartilage, other, split, volume``),
        one row per slice, labels 0/1.

    Raises:
        ValueError: if an annotation column is missing, a slice index is not an integer or is out of range for
            its volume, an h5 file is unreadable, a used volume name has several h5 files under ``h5_dir`` (listed),
            or no volume is left. Annotated volumes without an h5 file are skipped with a warning.

    Example:
        >>> table = build_fastmri_cohort("/data/knee_singlecoil_train", "knee.csv", "cohort.csv")  # doctest: +SKIP
    """
    h5_dir = Path(h5_dir)
    if isinstance(annotations_csv, pd.DataFrame):
        notes, source = annotations_csv.copy(), "annotations (DataFrame)"
    else:
        source = f"annotations '{annotations_csv}'"
        if not Path(annotations_csv).is_file():
            raise ValueError(f"{source}: file not found")
        notes = pd.read_csv(annotations_csv, dtype=str, keep_default_na=False)
    missing_cols = [c for c in ANNOTATION_COLUMNS if c not in notes.columns]
    if missing_cols:
        raise ValueError(f"{source}: missing column(s) {missing_cols}; found {list(notes.columns)}")
    notes = notes.astype({c: str for c in ANNOTATION_COLUMNS}).replace({"nan": ""})
    notes["file"] = notes["file"].str.strip().str.removesuffix(".h5")
    found: dict[str, list[Path]] = {}
    for p in sorted(h5_dir.rglob("*.h5")):
        found.setdefault(p.stem, []).append(p)
    files = {stem: paths[0] for stem, paths in found.items()}
    annotated = set(notes["file"]) - {""}
    volumes = sorted(v for v in files if v in annotated or not annotated_only)
    duplicated = {v: found[v] for v in volumes if len(found[v]) > 1}
    if duplicated:  # e.g. singlecoil_* and multicoil_* folders under one h5_dir: fastMRI reuses the file names
        shown = [f"{v}: {', '.join(str(p) for p in paths)}" for v, paths in list(duplicated.items())[:20]]
        raise ValueError(
            f"{len(duplicated)} volume name(s) found in several h5 files under {h5_dir}; point h5_dir at one of "
            "the folders (e.g. only singlecoil_train):\n" + "\n".join(f"  - {line}" for line in shown)
        )
    unmatched = sorted(annotated - set(files))
    if unmatched:
        logger.warning(
            f"{source}: {len(unmatched)} annotated volume(s) have no h5 file under {h5_dir} and are skipped: "
            f"{unmatched[:10]}{' ...' if len(unmatched) > 10 else ''}"
        )
    if not volumes:
        raise ValueError(f"no volume left: {len(files)} h5 file(s) under {h5_dir}, {len(annotated)} annotated")
    sizes = {v: _num_slices(files[v]) for v in volumes}
    positives: dict[tuple[str, int], set[str]] = {}
    problems = []
    for i, row in notes.iterrows():
        if row["file"] not in sizes or not row["slice"].strip():
            continue
        try:
            number = float(row["slice"])
            if not number.is_integer():
                raise ValueError
            index = int(number)
        except ValueError:
            problems.append(f"row {int(i) + 2}: slice {row['slice']!r} is not an integer")
            continue
        if not 0 <= index < sizes[row["file"]]:
            problems.append(f"row {int(i) + 2}: slice {index} out of range for {row['file']} ({sizes[row['file']]})")
            continue
        positives.setdefault((row["file"], index), set()).update(fastmri_label_groups(row["label"]))
    if problems:
        raise ValueError(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))
    splits = split_by_patient(volumes, seed=seed, fractions=fractions)
    base = Path(output_csv).resolve().parent if output_csv is not None else None
    rows = []
    for volume in volumes:
        path = files[volume].resolve()
        shown = path.relative_to(base).as_posix() if base is not None and path.is_relative_to(base) else str(path)
        for s in range(sizes[volume]):
            found = positives.get((volume, s), set())
            labels = {k: int(k in found) for k in FASTMRI_LABELS}
            record = {"slice_id": f"{volume}_s{s:03d}", "kspace": shown, "slice": s, **labels}
            rows.append({**record, "split": splits[volume], "volume": volume})
    table = pd.DataFrame(rows, columns=list(FASTMRI_COLUMNS))
    if output_csv is not None:
        atomic_write_csv(output_csv, table, index=False)
    return table.astype({k: np.int64 for k in FASTMRI_LABELS})
