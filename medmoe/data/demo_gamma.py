"""Embedded GAMMA-style demo cohort: synthetic fundus JPEGs, OCT B-scan folders and cup / disc masks.

:func:`make_gamma_demo` writes a deterministic cohort in the GAMMA folder layout (see
:mod:`medmoe.data.gamma_adapter`) and converts it with :func:`~medmoe.data.gamma_adapter.build_gamma_cohort`, so the
demo exercises the same adapter as real data. Each case is one eye with a cup-to-disc ratio (CDR) that sets the
glaucoma grade (0 non: CDR 0.25-0.52, 1 early: 0.48-0.67, 2 mid / advanced: 0.63-0.85; the ranges overlap a little)
and is seen consistently in both modalities:

- fundus (colour JPEG): an orange-red field of view on black, a bright disc with a brighter cup of radius
  ``CDR x disc radius``, a few dark vessels leaving the disc, noise;
- mask (PNG, GAMMA convention): 0 cup, 128 disc rim, 255 background;
- OCT (PNG B-scans ``<k>_image.png``, a raster across the disc): a bright nerve-fibre layer whose thickness falls
  with the CDR, an excavation (cup) under the disc centre as wide as the cup, no RPE inside the disc, speckle.

About 10% of cases miss the OCT folder, 10% the grade and 30% the mask (as in GAMMA, where masks exist for a subset).
:func:`gamma_demo_cohort` generates it once into the shared demo cache and reuses it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from ..utils import atomic_write_csv
from .demo_cache import cached_demo, demo_folder
from .demo_labels import balanced_labels
from .gamma_adapter import GAMMA_GRADES, build_gamma_cohort

__all__ = ["GAMMA_DEMO_NAME", "gamma_demo_cohort", "make_gamma_demo", "render_bscans", "render_fundus"]

GAMMA_DEMO_NAME = "gamma_m4oe_v1"
"""Cache sub-folder (``<cache root>/demo/gamma_m4oe_v1``); bump the version when the generator changes."""

_DEFAULTS = {"num_cases": 120, "fundus_size": 96, "num_bscans": 12, "bscan_size": 48, "seed": 0}
_GRADE_MIX = (0.5, 0.26, 0.24)  # GAMMA training set: 50 non, 26 early, 24 mid / advanced
_CDR_RANGES = ((0.25, 0.52), (0.48, 0.67), (0.63, 0.85))


def render_fundus(
    rng: np.random.Generator, size: int, centre: tuple[float, float], disc_radius: float, cdr: float
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic fundus photograph and its GAMMA mask.

    Args:
        rng: noise generator.
        size: image side in pixels.
        centre: disc centre ``(row, col)`` in pixels.
        disc_radius: disc radius in pixels.
        cdr: cup-to-disc radius ratio in ``(0, 1)``.

    Returns:
        ``(image uint8 (size, size, 3), mask uint8 (size, size))`` with the mask 0 cup / 128 rim / 255 background.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2
    r_fov = np.hypot(yy - c, xx - c) / (0.47 * size)
    r_disc = np.hypot(yy - centre[0], xx - centre[1]) / disc_radius
    base = np.array([175.0, 75.0, 35.0]) * (1.0 - 0.35 * r_fov**2)[..., None]
    angles = rng.uniform(0, 2 * np.pi, 5)
    theta = np.arctan2(yy - centre[0], xx - centre[1])
    for a in angles:  # dark vessels radiating from the disc
        gap = np.abs(np.angle(np.exp(1j * (theta - a - 0.15 * np.sin(r_disc)))))
        vessel = np.exp(-((gap * r_disc * disc_radius / 1.2) ** 2)) * (r_disc > 0.6)
        base *= 1.0 - 0.45 * vessel[..., None]
    disc = 1.0 / (1.0 + np.exp((r_disc - 1.0) * 12.0))
    cup = 1.0 / (1.0 + np.exp((r_disc - cdr) * 16.0 / cdr))
    image = base * (1 - disc[..., None]) + np.array([235.0, 185.0, 120.0]) * disc[..., None]
    image = image * (1 - cup[..., None]) + np.array([255.0, 240.0, 205.0]) * cup[..., None]
    image = image + rng.normal(0, 4.0, image.shape)
    image = np.where((r_fov <= 1.0)[..., None], image, 0.0)
    mask = np.full((size, size), 255, np.uint8)
    mask[r_disc <= 1.0] = 128
    mask[r_disc <= cdr] = 0
    return np.clip(image, 0, 255).astype(np.uint8), mask


def render_bscans(rng: np.random.Generator, num_bscans: int, size: int, cdr: float) -> np.ndarray:
    """A raster of OCT B-scans across the optic nerve head.

    B-scan ``k`` crosses the disc at height ``y_k`` in ``[-1.2, 1.2]`` disc radii and spans ``[-1.8, 1.8]``
    disc radii; depth runs down the rows.

    Args:
        rng: speckle generator.
        num_bscans: number of B-scans.
        size: B-scan side in pixels (depth = width).
        cdr: cup-to-disc radius ratio; sets the cup excavation and the nerve-fibre layer thickness.

    Returns:
        uint8 ``(num_bscans, size, size)``.
    """
    depth = np.arange(size, dtype=np.float64)[:, None] / size  # rows, 0 = top
    x = np.linspace(-1.8, 1.8, size)[None, :]
    out = np.empty((num_bscans, size, size), np.uint8)
    for k, y in enumerate(np.linspace(-1.2, 1.2, num_bscans)):
        r = np.hypot(x, y)
        inside_cup, inside_disc = r < cdr, r < 1.0
        dip = 0.25 * cdr * np.clip(1 - (r / cdr) ** 2, 0, None)  # excavation, deeper and wider with the CDR
        surface = 0.25 + dip
        rnfl = np.where(inside_cup, 0.0, 0.14 * (1.15 - cdr) * (1 + 0.6 * np.exp(-((r - 1.0) ** 2) / 0.3)))
        retina = np.where(inside_disc, 0.0, 0.22)
        scan = np.full((size, size), 0.05)
        scan = np.where((depth >= surface) & (depth < surface + rnfl), 0.9, scan)
        below = surface + rnfl
        scan = np.where((depth >= below) & (depth < below + retina), 0.45, scan)
        rpe = (depth >= below + retina) & (depth < below + retina + 0.04) & ~inside_disc
        scan = np.where(rpe, 0.85, scan)
        deep = depth >= below + retina + np.where(inside_disc, 0.0, 0.04)
        scan = np.where(deep, 0.25 * np.exp(-(depth - below - retina) * 4), scan)
        speckle = rng.gamma(4.0, 0.25, scan.shape)
        out[k] = np.clip(scan * speckle * 230 + 8, 0, 255).astype(np.uint8)
    return out


def make_gamma_demo(
    root: str | os.PathLike,
    num_cases: int = 120,
    fundus_size: int = 96,
    num_bscans: int = 12,
    bscan_size: int = 48,
    seed: int = 0,
) -> Path:
    """Write the synthetic GAMMA-layout cohort into ``root`` and its ``cohort.csv`` (paths relative to ``root``).

    Layout: ``multi-modality_images/<id>/<id>.jpg`` (fundus), ``multi-modality_images/<id>/<id>/<k>_image.png``
    (OCT), ``glaucoma_grading_training_GT.csv`` (``data, non, early, mid_advanced``), ``Disc_Cup_Mask/<id>.png``.

    Args:
        root: output folder (created).
        num_cases: number of eyes, at least 12.
        fundus_size: fundus side in pixels, at least 48.
        num_bscans: B-scans per OCT volume, at least 2.
        bscan_size: B-scan side in pixels, at least 16.
        seed: seed of everything.

    Returns:
        path of ``cohort.csv`` (columns :data:`~medmoe.data.gamma_adapter.GAMMA_COLUMNS`).

    Raises:
        ValueError: on values below the minimums.

    Example:
        >>> csv_path = make_gamma_demo("/tmp/gamma_demo", num_cases=24)  # doctest: +SKIP
    """
    if int(num_cases) < 12 or int(fundus_size) < 48 or int(num_bscans) < 2 or int(bscan_size) < 16:
        raise ValueError(
            "make_gamma_demo needs num_cases >= 12, fundus_size >= 48, num_bscans >= 2 and bscan_size >= 16, got "
            f"{num_cases}, {fundus_size}, {num_bscans}, {bscan_size}"
        )
    root = Path(root)
    rng = np.random.default_rng([seed, 0])
    grades = balanced_labels(rng, int(num_cases), _GRADE_MIX)
    missing = rng.random((int(num_cases), 3)) < np.array([0.10, 0.10, 0.30])  # OCT, grade, mask
    grade_rows = []
    for i, grade in enumerate(grades):
        case = f"{i + 1:04d}"
        case_rng = np.random.default_rng([seed, 1, i])
        cdr = case_rng.uniform(*_CDR_RANGES[grade])
        side = 1 if case_rng.random() < 0.5 else -1  # right / left eye: disc right / left of the fovea
        centre = (
            fundus_size / 2 + case_rng.uniform(-0.06, 0.06) * fundus_size,
            fundus_size / 2 + side * case_rng.uniform(0.12, 0.2) * fundus_size,
        )
        disc_radius = case_rng.uniform(0.10, 0.13) * fundus_size
        image, mask = render_fundus(case_rng, int(fundus_size), centre, disc_radius, cdr)
        folder = root / "multi-modality_images" / case
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{case}.jpg", quality=95)
        if not missing[i, 0]:
            (folder / case).mkdir(exist_ok=True)
            for k, scan in enumerate(render_bscans(case_rng, int(num_bscans), int(bscan_size), cdr)):
                Image.fromarray(scan).save(folder / case / f"{k}_image.png")
        if not missing[i, 1]:
            grade_rows.append({"data": case, **{g: int(j == grade) for j, g in enumerate(GAMMA_GRADES)}})
        if not missing[i, 2]:
            (root / "Disc_Cup_Mask").mkdir(exist_ok=True)
            Image.fromarray(mask).save(root / "Disc_Cup_Mask" / f"{case}.png")
    atomic_write_csv(
        root / "glaucoma_grading_training_GT.csv", pd.DataFrame(grade_rows), index=False, lineterminator="\n"
    )
    build_gamma_cohort(root, output_csv=root / "cohort.csv", seed=seed)
    return root / "cohort.csv"


def gamma_demo_cohort(cache_dir: str | os.PathLike | None = None, **kwargs) -> Path:
    """Path of the GAMMA demo cohort CSV, generating it on first use and reusing it afterwards.

    Args:
        cache_dir: cache root; default ``$MEDMOE_CACHE`` or ``~/.cache/medmoe``. The cohort lives in
            ``<cache_dir>/demo/gamma_m4oe_v1`` (non-default ``kwargs`` get their own sibling folder).
        **kwargs: ``num_cases``, ``fundus_size``, ``num_bscans``, ``bscan_size``, ``seed`` of
            :func:`make_gamma_demo`.

    Returns:
        path of ``cohort.csv``; its folder is the ``data_root``.

    Raises:
        ValueError: for unknown keyword arguments or invalid values.
        RuntimeError: if the cache folder exists but holds no ``cohort.csv`` (delete it to regenerate).

    Example:
        >>> csv_path = gamma_demo_cohort()  # doctest: +SKIP
    """
    target, params = demo_folder(cache_dir, GAMMA_DEMO_NAME, _DEFAULTS, kwargs)
    return cached_demo(
        target,
        lambda folder: make_gamma_demo(folder, **params),
        {"name": GAMMA_DEMO_NAME, **params},
        f"the GAMMA demo cohort ({params['num_cases']} cases)",
    )
