"""Embedded ADNI-style demo cohort: small T1-like NIfTI volumes + clinical and biospecimen columns in ``cohort.csv``.

:func:`make_adni_demo` writes one ``mri/<subject>.nii.gz`` per subject (int16, RAS affine with 7 mm voxels) and a
CSV with the columns of :data:`ADNI_COLUMNS`. The diagnosis (0 CN, 1 MCI, 2 AD) is ``min(u + r + x, 2)`` of three
binary factors, each placed so that a different I2MoE interaction expert is needed (papers/i2moe_paper.txt,
Sec. 3.1):

- ``u`` (P = 0.35), **unique to the MRI**: small hippocampi (two bright blobs of radius 1.5 instead of 2.6 voxels);
- ``r`` (P = 0.35), **redundant**: enlarged ventricles in the MRI *and* an MMSE lowered by about 6 points;
- ``x``, **synergy** of clinical and biospecimen data: ``x = APOE4 carrier XOR high p-tau`` (both P = 0.5, so each
  alone says nothing about ``x``); t-tau follows p-tau, A-beta is uninformative.

Age, sex and education are uninformative covariates. Missing data, as in a real cohort: about 8 % of subjects have
no MRI (empty path), 10 % no biospecimen block (all three cells empty), 4 % of the remaining clinical and
biospecimen cells are empty, and 3 % of the labels. Splits are 70/15/15 by subject. :func:`adni_demo_cohort`
generates it once into the demo cache and reuses it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medmoe.data.demo_cache import cached_demo, demo_folder
from medmoe.data.split import split_by_patient
from medmoe.utils import atomic_write, atomic_write_rows

__all__ = [
    "ADNI_BIOSPECIMEN",
    "ADNI_CLASSES",
    "ADNI_CLINICAL_CATEGORICAL",
    "ADNI_CLINICAL_NUMERIC",
    "ADNI_COLUMNS",
    "DEMO_NAME",
    "adni_demo_cohort",
    "make_adni_demo",
    "render_volume",
]

DEMO_NAME = "adni_i2moe_v1"
"""Cache sub-folder (``<cache root>/demo/adni_i2moe_v1``); bump the version when the generator changes."""

ADNI_CLASSES = ("CN", "MCI", "AD")
ADNI_CLINICAL_NUMERIC = ("age", "education", "mmse")
ADNI_CLINICAL_CATEGORICAL = ("sex", "apoe4")
ADNI_BIOSPECIMEN = ("abeta", "ptau", "ttau")
ADNI_COLUMNS = (
    "subject_id",
    "mri",
    *ADNI_CLINICAL_NUMERIC,
    *ADNI_CLINICAL_CATEGORICAL,
    *ADNI_BIOSPECIMEN,
    "diagnosis",
    "split",
)
"""Cohort CSV columns of the demo (documented in bundles/adni_i2moe/docs/README.md)."""

VOXEL_MM = 7.0
_DEFAULTS = {"num_subjects": 300, "image_size": 24, "seed": 0}


def _ball(grid: tuple[np.ndarray, ...], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Soft-edged ellipsoid in ``[0, 1]`` (radii in voxels)."""
    dist = np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)))
    return np.clip((1.0 - dist) * radii.min() + 0.5, 0.0, 1.0)


def render_volume(rng: np.random.Generator, small_hippocampus: bool, large_ventricles: bool, size: int) -> np.ndarray:
    """One synthetic T1-like brain ``(size, size, size)`` (RAS voxel axes) with the two MRI factors.

    Args:
        rng: random generator (head size and position, jitter of the structures, noise).
        small_hippocampus: factor ``u`` (hippocampal atrophy).
        large_ventricles: factor ``r`` (ventricular enlargement).
        size: side in voxels (>= 16).

    Returns:
        float32 volume, background about 0, white matter about 1000.
    """
    s = size / 24.0
    grid = np.meshgrid(*(np.arange(size, dtype=np.float64),) * 3, indexing="ij")
    centre = size / 2 - 0.5 + rng.uniform(-0.7, 0.7, 3) * s
    head = np.array([9.0, 10.5, 8.5]) * s * rng.uniform(0.93, 1.07)
    brain = _ball(grid, centre, head)
    grey = brain - _ball(grid, centre, head - 1.6 * s)  # cortical ribbon, darker than white matter
    image = 1000.0 * brain - 350.0 * grey
    vent_radii = (np.array([2.6, 3.8, 2.2]) if large_ventricles else np.array([1.3, 2.4, 1.2])) * s
    image -= 800.0 * _ball(grid, centre + np.array([0.0, 0.5, 0.8]) * s, vent_radii * rng.uniform(0.9, 1.1))
    hippo = (2.6 if not small_hippocampus else 1.5) * s * rng.uniform(0.92, 1.08)
    for side in (-1.0, 1.0):  # left and right hippocampus: inferior, lateral, slightly anterior
        spot = centre + np.array([side * 4.2, -0.8, -3.0]) * s + rng.uniform(-0.4, 0.4, 3) * s
        image += 600.0 * _ball(grid, spot, np.array([hippo, 1.6 * hippo, hippo]))
    image += rng.normal(0.0, 40.0, image.shape)
    return np.clip(image, 0.0, None).astype(np.float32)


def _affine(size: int) -> np.ndarray:
    """RAS voxel-to-world affine, 7 mm isotropic voxels, origin at the volume centre."""
    affine = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    affine[:3, 3] = -VOXEL_MM * (size - 1) / 2.0
    return affine


def _fmt(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def make_adni_demo(root: str | os.PathLike, num_subjects: int = 300, image_size: int = 24, seed: int = 0) -> Path:
    """Write the synthetic ADNI-style cohort (``mri/<subject>.nii.gz`` + ``cohort.csv``) into ``root``.

    Columns: ``subject_id``; ``mri`` (relative NIfTI path, empty = no MRI); clinical ``age`` (years), ``education``
    (years), ``mmse`` (0-30), ``sex`` (``F`` / ``M``), ``apoe4`` (number of e4 alleles ``0`` / ``1`` / ``2``, a
    category); biospecimen ``abeta``, ``ptau``, ``ttau`` (CSF, pg/mL); ``diagnosis`` (0 CN, 1 MCI, 2 AD, empty =
    missing); ``split``. See the module docstring for how the label depends on the modalities. The output is
    identical for a given set of arguments.

    Args:
        root: output folder (created; existing demo files are overwritten).
        num_subjects: number of subjects, at least 20.
        image_size: side of the cubic volumes in voxels, at least 16.
        seed: seed of everything.

    Returns:
        path of ``cohort.csv``.

    Raises:
        ValueError: if an argument is out of range.

    Example:
        >>> csv_path = make_adni_demo("/tmp/adni_demo", num_subjects=40)  # doctest: +SKIP
    """
    import nibabel as nib

    num_subjects, image_size = int(num_subjects), int(image_size)
    if num_subjects < 20:
        raise ValueError(f"num_subjects must be >= 20 (so every split gets subjects of each class), got {num_subjects}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    root = Path(root)
    (root / "mri").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0])
    n = num_subjects
    subjects = [f"S{i + 1:04d}" for i in range(n)]
    splits = split_by_patient(subjects, seed=seed)
    u = rng.random(n) < 0.35  # unique to MRI
    r = rng.random(n) < 0.35  # redundant: MRI ventricles and MMSE
    apoe4 = rng.choice(3, size=n, p=[0.5, 0.38, 0.12])
    ptau_high = rng.random(n) < 0.5
    x = (apoe4 > 0) ^ ptau_high  # synergy: clinical (APOE4 carrier) XOR biospecimen (p-tau)
    diagnosis = np.minimum(u.astype(int) + r + x, 2)

    age = rng.uniform(58, 90, n)
    sex = rng.choice(["F", "M"], size=n)
    education = rng.integers(8, 21, n)
    mmse = np.clip(np.round(29.0 - 6.0 * r + rng.normal(0, 1.2, n)), 0, 30)
    ptau = np.clip(np.where(ptau_high, 38.0, 20.0) + rng.normal(0, 4.0, n), 5, None)
    ttau = np.clip(7.0 * ptau + rng.normal(0, 25.0, n), 50, None)
    abeta = np.clip(rng.normal(1000, 250, n), 200, 1700)

    no_mri = rng.random(n) < 0.08
    no_bio = rng.random(n) < 0.10
    cell_missing = rng.random((n, 8)) < 0.04  # age, education, mmse, sex, apoe4, abeta, ptau, ttau
    label_missing = rng.random(n) < 0.03
    records = []
    for i, subject in enumerate(subjects):
        path = ""
        if not no_mri[i]:
            volume = render_volume(np.random.default_rng([seed, 1, i]), bool(u[i]), bool(r[i]), image_size)
            image = nib.Nifti1Image(np.round(volume).astype(np.int16), _affine(image_size))
            image.header.set_xyzt_units("mm")
            image.header["descrip"] = f"{DEMO_NAME} seed {seed}".encode()
            path = f"mri/{subject}.nii.gz"
            atomic_write(root / path, lambda tmp, im=image: nib.save(im, tmp))
        values = [
            _fmt(age[i], 1),
            str(education[i]),
            str(int(mmse[i])),
            str(sex[i]),
            str(apoe4[i]),
            _fmt(abeta[i], 0),
            _fmt(ptau[i], 1),
            _fmt(ttau[i], 0),
        ]
        values = ["" if cell_missing[i, j] else v for j, v in enumerate(values)]
        if no_bio[i]:
            values[5:] = ["", "", ""]
        row = dict(zip(ADNI_COLUMNS[2:10], values))
        label = "" if label_missing[i] else str(diagnosis[i])
        records.append({"subject_id": subject, "mri": path, **row, "diagnosis": label, "split": splits[subject]})
    csv_path = root / "cohort.csv"
    atomic_write_rows(csv_path, records, list(ADNI_COLUMNS))
    return csv_path


def adni_demo_cohort(cache_dir: str | os.PathLike | None = None, **kwargs) -> Path:
    """Path of the ADNI-style demo cohort CSV, generating it on first use and reusing it afterwards.

    Generation goes into a temp folder that is renamed into place when complete, so an interrupted run never
    leaves a half cohort and concurrent callers (DDP ranks) end up with one copy.

    Args:
        cache_dir: cache root; default ``$MEDMOE_CACHE`` or ``~/.cache/medmoe``. The cohort lives in
            ``<cache_dir>/demo/adni_i2moe_v1`` (non-default ``kwargs`` get their own sibling folder).
        **kwargs: ``num_subjects``, ``image_size``, ``seed`` of :func:`make_adni_demo`.

    Returns:
        path of ``cohort.csv``; its folder is the ``data_root``.

    Raises:
        ValueError: for unknown keyword arguments or invalid values.
        RuntimeError: if the cache folder exists but holds no ``cohort.csv`` (delete it to regenerate).

    Example:
        >>> csv_path = adni_demo_cohort()  # doctest: +SKIP
    """
    target, params = demo_folder(cache_dir, DEMO_NAME, _DEFAULTS, kwargs)
    return cached_demo(
        target,
        lambda folder: make_adni_demo(folder, **params),
        {"name": DEMO_NAME, **params},
        "the ADNI-style demo cohort",
    )
