"""Embedded fastMRI-style demo cohort: synthetic single-coil knee k-space in h5 files + ``cohort.csv``.

:func:`make_fastmri_demo` writes one h5 file per volume (dataset ``kspace``: complex64 ``(slices, H, W)``,
single-coil, fastMRI layout and centred orthonormal FFT) and one CSV row per slice with four binary labels
(fastMRI+ groups ``acl``, ``meniscus``, ``cartilage``, ``other``). Each pathology is drawn so that a different
I2M2 expert is needed (papers/i2m2_paper.txt, Sec. 3):

- ``acl``: a bright blob in the **magnitude** (phase unchanged) -> the magnitude expert;
- ``meniscus``: a phase bump in a disc, magnitude unchanged -> the **phase** expert only;
- ``cartilage``: every slice has a small dark magnitude spot and a small phase dip at independent places; the
  label is 1 when the two coincide -> only the **joint** expert can tell (each modality alone sees one spot
  in every slice);
- ``other``: a bright ring that also shifts the phase -> visible in **both** (redundant).

About 10% of label cells are empty (missing). Splits are 70/15/15 by volume. :func:`fastmri_demo_cohort`
generates it once into a cache folder and reuses it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from medmoe.data.demo_cache import cached_demo, demo_folder
from medmoe.data.split import split_by_patient
from medmoe.transforms.kspace_fft import fft2c
from medmoe.utils import atomic_path, atomic_write_rows

__all__ = ["DEMO_NAME", "FASTMRI_LABELS", "FASTMRI_COLUMNS", "fastmri_demo_cohort", "make_fastmri_demo"]

DEMO_NAME = "fastmri_i2m2_v1"
"""Cache sub-folder (``<cache root>/demo/fastmri_i2m2_v1``); bump the version when the generator changes."""

FASTMRI_LABELS = ("acl", "meniscus", "cartilage", "other")
FASTMRI_COLUMNS = ("slice_id", "kspace", "slice", *FASTMRI_LABELS, "split", "volume")
"""Cohort CSV columns shared by the demo and :mod:`medmoe.data.fastmri_adapter`."""

_DEFAULTS = {"num_volumes": 100, "num_slices": 4, "image_size": 64, "seed": 0}
_PREVALENCE = 0.4


def _disc(yy: np.ndarray, xx: np.ndarray, centre: tuple[float, float], radius: float) -> np.ndarray:
    """Soft-edged disc in ``[0, 1]``."""
    dist = np.hypot(yy - centre[0], xx - centre[1])
    return np.clip(radius + 0.5 - dist, 0.0, 1.0)


def render_slice(rng: np.random.Generator, labels: dict[str, int], size: int, noise: float = 0.01) -> np.ndarray:
    """One synthetic knee-like complex image ``(size, size)`` showing the pathologies in ``labels``.

    Args:
        rng: random generator (anatomy, positions, background phase, noise).
        labels: ``{acl, meniscus, cartilage, other}`` -> 0/1.
        size: image side (>= 32).
        noise: std of the complex Gaussian noise (real and imaginary parts).

    Returns:
        complex128 image; magnitude about ``[0, 1.5]``, phase within ``(-pi, pi)`` inside the knee.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    s = size / 64.0
    c = size / 2 + rng.uniform(-2, 2, 2) * s
    # femur above, tibia below, joint space between; soft tissue ellipse around both
    tissue = np.clip(1.0 - ((yy - c[0]) / (22 * s)) ** 2 - ((xx - c[1]) / (18 * s)) ** 2, 0, 1) ** 0.3
    femur = ((yy - (c[0] - 9 * s)) / (9 * s)) ** 2 + ((xx - c[1]) / (12 * s)) ** 2 < 1
    tibia = ((yy - (c[0] + 10 * s)) / (8 * s)) ** 2 + ((xx - c[1]) / (11 * s)) ** 2 < 1
    magnitude = 0.35 * tissue + 0.35 * femur + 0.3 * tibia
    magnitude = magnitude * (1 + 0.05 * rng.standard_normal((size, size)))
    # smooth background phase (B0 / coil phase): a random low-order polynomial of at most ~0.8 rad
    ny, nx = (yy - size / 2) / size, (xx - size / 2) / size
    a = rng.uniform(-0.8, 0.8, 4)
    phase = a[0] * ny + a[1] * nx + a[2] * ny * nx * 2 + a[3] * (ny**2 - nx**2)

    # every position is drawn whatever the labels, so flipping one label changes only its own pattern
    spots = c + rng.uniform(-1, 1, (5, 2)) * np.array([12, 10]) * s  # acl, meniscus, mag spot, phase spot, other
    while np.hypot(*(spots[2] - spots[3])) < 8 * s:
        spots[3] = c + rng.uniform(-1, 1, 2) * np.array([12, 10]) * s
    if labels["acl"]:
        magnitude = magnitude + 0.8 * _disc(yy, xx, spots[0], 3.5 * s)
    if labels["meniscus"]:
        phase = phase + 1.6 * _disc(yy, xx, spots[1], 5.0 * s)
    phase_spot = spots[2] if labels["cartilage"] else spots[3]
    magnitude = magnitude * (1 - 0.6 * _disc(yy, xx, spots[2], 3.5 * s))
    phase = phase - 1.2 * _disc(yy, xx, phase_spot, 3.5 * s)
    if labels["other"]:
        radius = 5.0 * s
        ring = _disc(yy, xx, spots[4], radius) - _disc(yy, xx, spots[4], radius - 2 * s)
        magnitude, phase = magnitude + 0.5 * ring, phase + 0.8 * ring
    image = magnitude * np.exp(1j * phase)
    return image + noise * (rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size)))


def _kspace(image: np.ndarray) -> np.ndarray:
    """K-space of a complex numpy image by the transforms' centred orthonormal FFT (:func:`fft2c`)."""
    return fft2c(torch.from_numpy(image)).numpy()


def make_fastmri_demo(
    root: str | os.PathLike, num_volumes: int = 100, num_slices: int = 4, image_size: int = 64, seed: int = 0
) -> Path:
    """Write the synthetic fastMRI-style cohort (``kspace/<volume>.h5`` + ``cohort.csv``) into ``root``.

    Each file holds ``kspace`` complex64 ``(num_slices, image_size, image_size)`` (single-coil, as the fastMRI
    ``singlecoil_*`` files) and the attributes ``acquisition`` and ``medmoe_demo``; the CSV holds one row per
    slice (``slice_id``, relative ``kspace`` path, ``slice`` index, the four labels with ~10% empty, ``split``,
    ``volume``). Labels are drawn independently per slice with prevalence 0.4. Splits are 70/15/15 by volume.
    The output is identical for a given set of arguments.

    Args:
        root: output folder (created; existing demo files are overwritten).
        num_volumes: number of volumes (h5 files), at least 8.
        num_slices: slices per volume, at least 1.
        image_size: side of the square k-space / image, at least 32.
        seed: seed of everything.

    Returns:
        path of ``cohort.csv``.

    Raises:
        ValueError: if an argument is out of range.

    Example:
        >>> csv_path = make_fastmri_demo("/tmp/fastmri_demo", num_volumes=8)  # doctest: +SKIP
    """
    import h5py

    if int(num_volumes) < 8:
        raise ValueError(f"num_volumes must be >= 8 (so every split gets a volume), got {num_volumes}")
    if int(num_slices) < 1:
        raise ValueError(f"num_slices must be >= 1, got {num_slices}")
    if int(image_size) < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    root = Path(root)
    (root / "kspace").mkdir(parents=True, exist_ok=True)
    volumes = [f"file{v + 1:04d}" for v in range(int(num_volumes))]
    splits = split_by_patient(volumes, seed=seed)
    rng = np.random.default_rng([seed, 0])
    labels = (rng.random((len(volumes), int(num_slices), len(FASTMRI_LABELS))) < _PREVALENCE).astype(int)
    missing = rng.random(labels.shape) < 0.10
    records = []
    for v, volume in enumerate(volumes):
        slices = []
        for s in range(int(num_slices)):
            slice_labels = dict(zip(FASTMRI_LABELS, labels[v, s].tolist()))
            image = render_slice(np.random.default_rng([seed, 1, v, s]), slice_labels, int(image_size))
            slices.append(_kspace(image))
            record = {"slice_id": f"{volume}_s{s:02d}", "kspace": f"kspace/{volume}.h5", "slice": s}
            record.update({k: ("" if missing[v, s, j] else slice_labels[k]) for j, k in enumerate(FASTMRI_LABELS)})
            records.append({**record, "split": splits[volume], "volume": volume})
        with atomic_path(root / "kspace" / f"{volume}.h5") as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("kspace", data=np.stack(slices).astype(np.complex64))
            f.attrs["acquisition"] = "CORPD_FBK"
            f.attrs["medmoe_demo"] = f"{DEMO_NAME} seed {seed}"
    csv_path = root / "cohort.csv"
    atomic_write_rows(csv_path, records, list(FASTMRI_COLUMNS))
    return csv_path


def fastmri_demo_cohort(cache_dir: str | os.PathLike | None = None, **kwargs) -> Path:
    """Path of the fastMRI demo cohort CSV, generating it on first use and reusing it afterwards.

    Generation goes into a temp folder that is renamed into place when complete (as
    :func:`~medmoe.data.embed_demo_cohort`), so concurrent callers (DDP ranks) end up with one copy.

    Args:
        cache_dir: cache root; default ``$MEDMOE_CACHE`` or ``~/.cache/medmoe``. The cohort lives in
            ``<cache_dir>/demo/fastmri_i2m2_v1`` (non-default ``kwargs`` get their own sibling folder).
        **kwargs: ``num_volumes``, ``num_slices``, ``image_size``, ``seed`` of :func:`make_fastmri_demo`.

    Returns:
        path of ``cohort.csv``; its folder is the ``data_root``.

    Raises:
        ValueError: for unknown keyword arguments or invalid values.
        RuntimeError: if the cache folder exists but holds no ``cohort.csv`` (delete it to regenerate).

    Example:
        >>> csv_path = fastmri_demo_cohort()  # doctest: +SKIP
    """
    target, params = demo_folder(cache_dir, DEMO_NAME, _DEFAULTS, kwargs)
    return cached_demo(
        target,
        lambda folder: make_fastmri_demo(folder, **params),
        {"name": DEMO_NAME, **params},
        "the fastMRI demo cohort",
    )
