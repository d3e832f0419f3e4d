"""MONAI-style k-space transforms: centred FFTs, coil combination, magnitude / phase, centre crop.

Conventions (fastMRI): complex tensors are channel-first ``(C, H, W)`` (``C`` = coils), optionally with extra
leading spatial axes ``(C, S, H, W)``; the 2D FFTs act on the last two axes and are centred and orthonormal
(:func:`~medmoe.transforms.kspace_fft.fft2c` / :func:`~medmoe.transforms.kspace_fft.ifft2c`, re-exported here)::

    kspace = fftshift(fft2(ifftshift(image), norm="ortho"))
    image = fftshift(ifft2(ifftshift(kspace), norm="ortho"))

so ``sum |image|^2 == sum |kspace|^2`` (Parseval) and the round trip is exact to float precision. The file
readers live in :mod:`medmoe.transforms.kspace_io` and are re-exported here; the random augmentations
(undersampling masks, complex Gaussian and Rician noise) in :mod:`medmoe.transforms.kspace_augment`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, ResizeWithPadOrCrop, ResizeWithPadOrCropd, Transform
from monai.utils import TransformBackends

from .keywise import KeyWise
from .kspace_fft import fft2c, ifft2c
from .kspace_io import (
    LoadKspace,
    LoadKspaced,
    RemoveReadoutOversampling,
    RemoveReadoutOversamplingd,
    read_kspace,
    remove_readout_oversampling,
)

__all__ = [
    "read_kspace",
    "remove_readout_oversampling",
    "fft2c",
    "ifft2c",
    "LoadKspace",
    "LoadKspaced",
    "RemoveReadoutOversampling",
    "RemoveReadoutOversamplingd",
    "KspaceToImage",
    "KspaceToImaged",
    "ImageToKspace",
    "ImageToKspaced",
    "RootSumOfSquares",
    "RootSumOfSquaresd",
    "ComplexToMagnitudePhase",
    "ComplexToMagnitudePhased",
    "MagnitudePhaseToComplex",
    "MagnitudePhaseToComplexd",
    "ComplexCenterCrop",
    "ComplexCenterCropd",
]


def kspace_tensor(x, what: str, complex_required: bool = False, min_ndim: int = 3) -> torch.Tensor:
    """Plain torch tensor from numpy / torch / MetaTensor, with the checks every k-space transform shares.

    Raises:
        ValueError: naming ``what`` when the input is not complex (with ``complex_required``), has fewer than
            ``min_ndim`` dimensions, is empty or holds NaN / infinite values.
    """
    t = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
    if complex_required and not torch.is_complex(t):
        raise ValueError(f"{what}: expected a complex tensor, got dtype {t.dtype}.")
    if t.ndim < min_ndim:
        raise ValueError(
            f"{what}: expected a channel-first array with >= {min_ndim} dims (C, H, W), got {tuple(t.shape)}."
        )
    if t.numel() == 0:
        raise ValueError(f"{what}: input is empty, shape {tuple(t.shape)}.")
    if not torch.isfinite(torch.view_as_real(t) if torch.is_complex(t) else t).all():
        raise ValueError(f"{what}: input contains NaN or infinite values.")
    return t


class KspaceToImage(Transform):
    """Complex k-space ``(C, [S,] H, W)`` -> complex coil images, same shape, by :func:`ifft2c`.

    Example:
        >>> KspaceToImage()(torch.ones(2, 8, 8, dtype=torch.complex64)).shape
        torch.Size([2, 8, 8])
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, kspace: torch.Tensor) -> torch.Tensor:
        return ifft2c(kspace_tensor(kspace, "KspaceToImage"))


class ImageToKspace(Transform):
    """Image ``(C, [S,] H, W)`` (complex, or real = zero phase) -> complex k-space by :func:`fft2c`."""

    backend = [TransformBackends.TORCH]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return fft2c(kspace_tensor(image, "ImageToKspace"))


class RootSumOfSquares(Transform):
    """Root-sum-of-squares coil combination: ``(C, ...)`` complex or real -> real ``(1, ...)``.

    ``rss = sqrt(sum_c |x_c|^2)`` (Roemer et al. 1990), the fastMRI multi-coil target.
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = kspace_tensor(image, "RootSumOfSquares")
        return torch.sqrt((x.abs() ** 2).sum(dim=0, keepdim=True))


class ComplexToMagnitudePhase(Transform):
    """Complex ``(C, H, W)`` -> real ``(2C, H, W)``: magnitudes then phases (radians in ``(-pi, pi]``) stacked
    on the channel axis (I2M2's two modalities in joint form), or real then imaginary parts
    (``mode="real_imag"``, the 2-channel form of complex networks).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, mode: str = "magnitude_phase") -> None:
        if mode not in ("magnitude_phase", "real_imag"):
            raise ValueError(f"mode must be 'magnitude_phase' or 'real_imag', got '{mode}'.")
        self.mode = mode

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = kspace_tensor(image, "ComplexToMagnitudePhase", complex_required=True)
        parts = (x.abs(), x.angle()) if self.mode == "magnitude_phase" else (x.real, x.imag)
        return torch.cat(parts, dim=0)


class MagnitudePhaseToComplex(Transform):
    """Inverse of :class:`ComplexToMagnitudePhase`: real ``(2C, H, W)`` -> complex ``(C, H, W)``.

    ``__call__(joint)`` splits the channels; ``__call__(magnitude, phase)`` takes them separately.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, mode: str = "magnitude_phase") -> None:
        ComplexToMagnitudePhase(mode)  # validates mode
        self.mode = mode

    def __call__(self, image: torch.Tensor, phase: torch.Tensor | None = None) -> torch.Tensor:
        x = kspace_tensor(image, "MagnitudePhaseToComplex")
        if phase is None:
            if x.shape[0] % 2:
                raise ValueError(f"MagnitudePhaseToComplex: joint form needs an even channel count, got {x.shape[0]}.")
            a, b = x[: x.shape[0] // 2], x[x.shape[0] // 2 :]
        else:
            a, b = x, kspace_tensor(phase, "MagnitudePhaseToComplex (phase)")
            if a.shape != b.shape:
                raise ValueError(f"magnitude {tuple(a.shape)} and phase {tuple(b.shape)} shapes differ.")
        return torch.polar(a.float(), b.float()) if self.mode == "magnitude_phase" else torch.complex(a, b)


class ComplexCenterCrop(ResizeWithPadOrCrop):
    """Centre crop (zero-pad where smaller) to ``roi_size``, default the fastMRI 320 x 320; works on complex and
    real ``(C, H, W)``; invertible (MONAI's :class:`~monai.transforms.ResizeWithPadOrCrop`)."""

    def __init__(self, roi_size: Sequence[int] | int = (320, 320), **kwargs) -> None:
        super().__init__(spatial_size=roi_size, **kwargs)


class KspaceToImaged(KeyWise):
    """Dictionary twin of :class:`KspaceToImage`."""

    backend = KspaceToImage.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = KspaceToImage()


class ImageToKspaced(KeyWise):
    """Dictionary twin of :class:`ImageToKspace`."""

    backend = ImageToKspace.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ImageToKspace()


class RootSumOfSquaresd(KeyWise):
    """Dictionary twin of :class:`RootSumOfSquares`."""

    backend = RootSumOfSquares.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = RootSumOfSquares()


# Key suffixes of the two parts in the split form of the dictionary twins, by ``mode``.
_SPLIT_SUFFIXES: dict[str, tuple[str, str]] = {
    "magnitude_phase": ("_magnitude", "_phase"),
    "real_imag": ("_real", "_imag"),
}


class ComplexToMagnitudePhased(MapTransform):
    """Dictionary twin of :class:`ComplexToMagnitudePhase`.

    With ``split=True`` the key is replaced by two keys ``{key}_magnitude`` and ``{key}_phase`` (``(C, H, W)``
    each; I2M2 treats them as separate modalities), or ``{key}_real`` and ``{key}_imag`` with
    ``mode="real_imag"``; otherwise the key holds the joint ``(2C, H, W)`` form.
    """

    backend = ComplexToMagnitudePhase.backend

    def __init__(
        self,
        keys: KeysCollection,
        split: bool = False,
        mode: str = "magnitude_phase",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.split = split
        self.transform = ComplexToMagnitudePhase(mode)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        first, second = _SPLIT_SUFFIXES[self.transform.mode]
        for key in self.key_iterator(d):
            try:
                joint = self.transform(d[key])
            except ValueError as e:
                raise ValueError(f"key '{key}': {e}") from e
            if self.split:
                half = joint.shape[0] // 2
                d[f"{key}{first}"], d[f"{key}{second}"] = joint[:half], joint[half:]
                del d[key]
            else:
                d[key] = joint
        return d


class MagnitudePhaseToComplexd(MapTransform):
    """Dictionary twin of :class:`MagnitudePhaseToComplex`; with ``split=True`` it reads ``{key}_magnitude`` and
    ``{key}_phase`` (``{key}_real`` and ``{key}_imag`` with ``mode="real_imag"``) and writes the complex image to
    ``key``."""

    backend = MagnitudePhaseToComplex.backend

    def __init__(
        self,
        keys: KeysCollection,
        split: bool = False,
        mode: str = "magnitude_phase",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.split = split
        self.transform = MagnitudePhaseToComplex(mode)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        first, second = _SPLIT_SUFFIXES[self.transform.mode]
        keys = [k for k in self.keys if f"{k}{first}" in d] if self.split else list(self.key_iterator(d))
        if self.split and not self.allow_missing_keys and len(keys) != len(self.keys):
            raise ValueError(f"missing '<key>{first}' for some of {list(self.keys)}; found {sorted(map(str, d))}.")
        for key in keys:
            try:
                if self.split:
                    d[key] = self.transform(d.pop(f"{key}{first}"), d.pop(f"{key}{second}"))
                else:
                    d[key] = self.transform(d[key])
            except (ValueError, KeyError) as e:
                raise ValueError(f"key '{key}': {e}") from e
        return d


class ComplexCenterCropd(ResizeWithPadOrCropd):
    """Dictionary twin of :class:`ComplexCenterCrop` (invertible)."""

    def __init__(self, keys: KeysCollection, roi_size: Sequence[int] | int = (320, 320), **kwargs) -> None:
        super().__init__(keys, spatial_size=roi_size, **kwargs)
