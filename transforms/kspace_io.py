"""Readers for raw MRI k-space: fastMRI-style HDF5, Siemens TWIX ``.dat`` and complex ``.npy`` / ``.npz`` arrays.

Every reader returns a channel-first complex tensor: ``(coils, H, W)`` for one slice, or
``(coils, S, H, W)`` when all slices are kept (``slice_index=None`` on a multi-slice file).
As in fastMRI, ``H`` is the readout (frequency-encoding) axis and ``W`` the phase-encoding axis, so Cartesian
undersampling masks act on ``W``; TWIX data (lines x columns) is transposed into this layout.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Transform
from monai.utils import TransformBackends

from .keywise import KeyWise
from .kspace_fft import fft2c, ifft2c

__all__ = [
    "read_kspace",
    "remove_readout_oversampling",
    "LoadKspace",
    "LoadKspaced",
    "RemoveReadoutOversampling",
    "RemoveReadoutOversamplingd",
]

KSPACE_SUFFIXES = (".h5", ".hdf5", ".dat", ".npy", ".npz")


def _check_complex(data: np.ndarray, source: str) -> np.ndarray:
    if not np.iscomplexobj(data):
        raise ValueError(f"{source}: k-space must be complex, got dtype {data.dtype}.")
    if data.size == 0:
        raise ValueError(f"{source}: k-space array is empty.")
    if not np.isfinite(data).all():
        raise ValueError(f"{source}: k-space contains NaN or infinite values.")
    return data


def _select_slice(data: np.ndarray, slice_index: int | None, source: str) -> np.ndarray:
    """``data`` is ``(coils, S, H, W)``; returns ``(coils, H, W)`` or keeps all slices."""
    if data.shape[1] == 1:
        return data[:, 0]
    if slice_index is None:
        return data
    num_slices = data.shape[1]
    if not -num_slices <= slice_index < num_slices:
        raise ValueError(f"{source}: slice_index {slice_index} out of range for {num_slices} slices.")
    return data[:, slice_index]


def _read_h5(path: Path, slice_index: int | None) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        if "kspace" not in f:
            raise ValueError(f"{path}: no 'kspace' dataset (found {sorted(f.keys())}); expected a fastMRI-style file.")
        dset = f["kspace"]
        if slice_index is not None and dset.ndim in (3, 4) and not -dset.shape[0] <= slice_index < dset.shape[0]:
            raise ValueError(f"{path}: slice {slice_index} out of range (the file has {dset.shape[0]} slices).")
        if dset.ndim == 2:  # one single-coil slice (H, W)
            data = dset[()][None, None]
        elif dset.ndim == 3:  # single-coil (S, H, W)
            data = (dset[()] if slice_index is None else dset[slice_index][None])[None]
        elif dset.ndim == 4:  # multi-coil (S, C, H, W)
            data = np.moveaxis(dset[()] if slice_index is None else dset[slice_index][None], 0, 1)
        else:
            raise ValueError(f"{path}: 'kspace' must have 2-4 dims (S, [C], H, W), got shape {dset.shape}.")
    return _select_slice(_check_complex(np.asarray(data), str(path)), None, str(path))


def _read_twix(path: Path, slice_index: int | None) -> np.ndarray:
    try:
        import twixtools
    except ImportError as e:  # pragma: no cover - optional dependency
        raise ImportError("reading Siemens TWIX .dat files needs `pip install twixtools`.") from e
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            meas = twixtools.map_twix(str(path), verbose=False)
        except Exception as e:  # twixtools raises assorted errors on truncated / foreign files
            raise ValueError(f"{path}: not a readable Siemens TWIX file ({type(e).__name__}: {e}).") from e
    if not meas or "image" not in meas[-1]:
        raise ValueError(f"{path}: TWIX file holds no imaging scan.")
    image = meas[-1]["image"]
    image.flags["squeeze_singletons"] = True
    dims = list(image.non_singleton_dims)
    for required in ("Lin", "Col"):
        if required not in dims:
            raise ValueError(f"{path}: TWIX imaging data has no '{required}' dimension (dims {dims}).")
    data = np.asarray(image[:])
    if "Cha" not in dims:
        data, dims = data[None], ["Cha", *dims]
    others = [d for d in dims if d not in ("Cha", "Lin", "Col")]
    order = [dims.index("Cha"), *[dims.index(d) for d in others], dims.index("Col"), dims.index("Lin")]
    data = np.transpose(data, order)
    data = data.reshape(data.shape[0], -1, data.shape[-2], data.shape[-1])  # (coils, S, readout, lines)
    return _select_slice(_check_complex(data, str(path)), slice_index, str(path))


def _read_numpy(path: Path, slice_index: int | None) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ValueError(f"{path}: not a readable numpy file ({e}).") from e
    if isinstance(data, np.lib.npyio.NpzFile):
        key = "kspace" if "kspace" in data.files else (data.files[0] if data.files else None)
        if key is None:
            raise ValueError(f"{path}: empty .npz archive.")
        data = data[key]
    if data.ndim not in (2, 3, 4):
        raise ValueError(f"{path}: complex array must be (H, W), (C, H, W) or (C, S, H, W); got shape {data.shape}.")
    if data.ndim == 2:
        data = data[None, None]
    elif data.ndim == 3:
        data = data[:, None]
    return _select_slice(_check_complex(data, str(path)), slice_index, str(path))


def read_kspace(path: str | Path, slice_index: int | None = None) -> torch.Tensor:
    """Read raw k-space into a channel-first complex64 tensor.

    Args:
        path: a fastMRI-style ``.h5`` (dataset ``kspace``: ``(S, H, W)`` single-coil or ``(S, C, H, W)``
            multi-coil), a Siemens TWIX ``.dat`` (last measurement, read with ``twixtools``), or a complex
            ``.npy`` / ``.npz`` array ``(H, W)``, ``(C, H, W)`` or ``(C, S, H, W)``.
        slice_index: slice to keep; ``None`` keeps all slices.

    Returns:
        complex64 tensor ``(C, H, W)`` (one slice) or ``(C, S, H, W)``.

    Raises:
        ValueError: missing / empty / unreadable file, unknown suffix, real-valued or non-finite data.

    Example:
        >>> k = read_kspace("/work/shared/data/kspace/gre.dat")  # doctest: +SKIP
        >>> k.shape  # 2 coils, 320 readout samples (2x oversampled), 160 phase-encoding lines
        torch.Size([2, 320, 160])
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"k-space file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"k-space file is empty: {path}")
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        data = _read_h5(path, slice_index)
    elif suffix == ".dat":
        data = _read_twix(path, slice_index)
    elif suffix in (".npy", ".npz"):
        data = _read_numpy(path, slice_index)
    else:
        raise ValueError(f"{path}: unknown k-space file type '{suffix}'; expected one of {KSPACE_SUFFIXES}.")
    return torch.from_numpy(np.ascontiguousarray(data).astype(np.complex64))


def remove_readout_oversampling(kspace: torch.Tensor, factor: int = 2, axis: int = -2) -> torch.Tensor:
    """Remove readout oversampling: inverse FFT along the readout axis, keep the central ``1 / factor`` of the
    field of view, FFT back (Siemens scanners acquire 2x oversampled readouts).

    Args:
        kspace: complex ``(C, [S,] H, W)``; the readout axis length divisible by ``factor``.
        factor: oversampling factor.
        axis: readout axis, ``-2`` (``H``) in the fastMRI layout used here.

    Returns:
        complex k-space with the readout axis shortened ``factor`` times.
    """
    if not torch.is_complex(kspace):
        raise ValueError(f"remove_readout_oversampling: k-space must be complex, got {kspace.dtype}.")
    length = kspace.shape[axis]
    if factor < 1 or length % factor:
        raise ValueError(f"readout length {length} is not divisible by the oversampling factor {factor}.")
    image = ifft2c(kspace, dim=axis)
    return fft2c(image.narrow(axis, (length - length // factor) // 2, length // factor), dim=axis)


class LoadKspace(Transform):
    """Load raw k-space from a file path (see :func:`read_kspace`); returns complex ``(C, H, W)``.

    Example:
        >>> LoadKspace(slice_index=0)("knee.h5").shape  # doctest: +SKIP
        torch.Size([15, 640, 368])
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, slice_index: int | None = None, remove_oversampling: bool = False) -> None:
        self.slice_index = slice_index
        self.remove_oversampling = remove_oversampling

    def __call__(self, path: str | Path) -> torch.Tensor:
        kspace = read_kspace(path, self.slice_index)
        return remove_readout_oversampling(kspace) if self.remove_oversampling else kspace


class LoadKspaced(KeyWise):
    """Dictionary twin of :class:`LoadKspace`: replaces each path under ``keys`` by its complex k-space."""

    backend = LoadKspace.backend

    def __init__(
        self,
        keys: KeysCollection,
        slice_index: int | None = None,
        remove_oversampling: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = LoadKspace(slice_index, remove_oversampling)


class RemoveReadoutOversampling(Transform):
    """Wraps :func:`remove_readout_oversampling`: complex ``(C, H, W)`` -> ``(C, H // factor, W)``."""

    backend = [TransformBackends.TORCH]

    def __init__(self, factor: int = 2) -> None:
        self.factor = factor

    def __call__(self, kspace: torch.Tensor) -> torch.Tensor:
        return remove_readout_oversampling(torch.as_tensor(kspace), self.factor)


class RemoveReadoutOversamplingd(KeyWise):
    """Dictionary twin of :class:`RemoveReadoutOversampling`."""

    backend = RemoveReadoutOversampling.backend

    def __init__(self, keys: KeysCollection, factor: int = 2, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = RemoveReadoutOversampling(factor)
