"""ADNI adapter: ADNIMERGE-style table + a folder of preprocessed T1 volumes -> the adni_i2moe cohort CSV.

ADNIMERGE (the ADNI study's merged table) has one row per subject visit with, among others, ``PTID``, ``VISCODE``,
``DX`` (``CN`` / ``MCI`` / ``Dementia``) or ``DX_bl`` (``CN``, ``SMC``, ``EMCI``, ``LMCI``, ``AD``), ``AGE``,
``PTGENDER``, ``PTEDUCAT``, ``MMSE``, ``APOE4`` and the CSF values ``ABETA``, ``PTAU``, ``TAU`` (censored values are
written ``">1700"`` / ``"<8"``). :func:`build_adni_cohort` keeps one visit per subject and writes the columns the
bundle reads (:data:`~medmoe.data.demo_adni.ADNI_COLUMNS`); censored values are kept as text and parsed to their
bound by the tabular preprocessing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ..utils import atomic_write_csv
from .demo_adni import ADNI_COLUMNS
from .split import split_by_patient

__all__ = ["ADNIMERGE_COLUMNS", "ADNI_DIAGNOSIS", "build_adni_cohort"]

ADNIMERGE_COLUMNS = {
    "age": "AGE",
    "education": "PTEDUCAT",
    "mmse": "MMSE",
    "sex": "PTGENDER",
    "apoe4": "APOE4",
    "abeta": "ABETA",
    "ptau": "PTAU",
    "ttau": "TAU",
}
"""Cohort column -> ADNIMERGE column."""

ADNI_DIAGNOSIS = {"CN": 0, "SMC": 0, "MCI": 1, "EMCI": 1, "LMCI": 1, "AD": 2, "DEMENTIA": 2}
"""ADNI diagnosis strings (``DX`` and ``DX_bl``, case-insensitive) -> class (0 CN, 1 MCI, 2 AD)."""

_NIFTI = (".nii.gz", ".nii")


def _find_images(image_dir: Path) -> dict[str, str]:
    """``<PTID>.nii[.gz]`` files directly in ``image_dir`` -> ``{PTID: file name}``."""
    found = {}
    for path in sorted(image_dir.iterdir()):
        for suffix in _NIFTI:
            if path.name.endswith(suffix):
                found[path.name[: -len(suffix)]] = path.name
    return found


def build_adni_cohort(
    adnimerge_csv: str | os.PathLike,
    output_csv: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    images: Mapping[str, str] | None = None,
    visit: str = "bl",
    diagnosis_column: str = "DX",
    seed: int = 0,
) -> Path:
    """Write the adni_i2moe cohort CSV (one row per subject) from an ADNIMERGE-style table.

    Args:
        adnimerge_csv: the table (needs ``PTID``, ``VISCODE``, the diagnosis column and the columns of
            :data:`ADNIMERGE_COLUMNS`).
        output_csv: where to write the cohort; image paths are written relative to its folder when possible.
        image_dir: folder of preprocessed T1 volumes named ``<PTID>.nii.gz`` (or ``.nii``), absolute or relative to
            the working directory; a subject without a file gets an empty ``mri`` cell (missing modality).
        images: alternatively, ``{PTID: path}`` (absolute, or relative to the output folder).
        visit: the ``VISCODE`` to keep (``"bl"`` = baseline).
        diagnosis_column: ``"DX"`` (visit diagnosis) or ``"DX_bl"`` (baseline diagnosis); values are mapped with
            :data:`ADNI_DIAGNOSIS`, an empty value is a missing label.
        seed: seed of the 70/15/15 subject split.

    Returns:
        the path of the written CSV.

    Raises:
        ValueError: naming missing columns, unknown diagnosis values (with their rows), duplicate subjects at the
            visit, or no row at the visit.

    Example::

        >>> build_adni_cohort("ADNIMERGE.csv", "/data/adni/cohort.csv", image_dir="/data/adni/t1")  # doctest: +SKIP
    """
    table = pd.read_csv(adnimerge_csv, dtype=str, keep_default_na=False)
    needed = ["PTID", "VISCODE", diagnosis_column, *ADNIMERGE_COLUMNS.values()]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"{adnimerge_csv}: missing column(s) {missing}")
    rows = table[table["VISCODE"].str.strip() == visit]
    if rows.empty:
        raise ValueError(f"{adnimerge_csv}: no row with VISCODE == {visit!r}")
    duplicated = sorted(set(rows.loc[rows["PTID"].duplicated(), "PTID"]))
    if duplicated:
        raise ValueError(f"{adnimerge_csv}: subject(s) {duplicated[:10]} have several rows at visit {visit!r}")
    problems = []
    labels = []
    for i, value in rows[diagnosis_column].items():
        key = value.strip().upper()
        if key and key not in ADNI_DIAGNOSIS:
            problems.append(f"row {int(i) + 2}: {diagnosis_column} {value!r} (known: {sorted(ADNI_DIAGNOSIS)})")
        labels.append(str(ADNI_DIAGNOSIS[key]) if key in ADNI_DIAGNOSIS else "")
    if problems:
        raise ValueError(f"{adnimerge_csv}: unknown diagnosis value(s):\n  " + "\n  ".join(problems[:50]))
    out_dir = Path(output_csv).expanduser().resolve().parent
    paths = dict(images or {})  # relative paths here are relative to the output folder (see Args)
    if image_dir is not None:
        folder = Path(image_dir).expanduser().resolve()  # a relative image_dir is relative to the working directory
        paths.update({ptid: str(folder / name) for ptid, name in _find_images(folder).items()})

    def relative(path: str) -> str:
        try:
            return os.path.relpath(path, out_dir) if Path(path).is_absolute() else path
        except ValueError:  # another drive (Windows)
            return path

    subjects = rows["PTID"].str.strip().tolist()
    splits = split_by_patient(subjects, seed=seed)
    cohort = pd.DataFrame({"subject_id": subjects, "mri": [relative(paths[s]) if s in paths else "" for s in subjects]})
    for column, source in ADNIMERGE_COLUMNS.items():
        cohort[column] = rows[source].str.strip().to_numpy()
    cohort["sex"] = cohort["sex"].str.lower().map({"male": "M", "female": "F"}).fillna(cohort["sex"])
    cohort["diagnosis"], cohort["split"] = labels, [splits[s] for s in subjects]
    atomic_write_csv(output_csv, cohort[list(ADNI_COLUMNS)], index=False)
    return Path(output_csv)
