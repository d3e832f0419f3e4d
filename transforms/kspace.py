"""MONAI-style k-space transforms: centred FFTs, coil combination, magnitude / phase, masks and noise.

Conventions (fastMRI): complex tensors are channel-first ``(C, H, W)`` (``C`` = coils), optionally with extra
leading spatial axes ``(C, S, H, W)``; the 2D FFTs act on the last two axes and are centred and orthonormal::

    kspace = fftshift(fft2(ifftshift(image), norm="ortho"))
    image = fftshift(ifft2(ifftshift(kspace), norm="ortho"))

so ``sum |image|^2 == sum |kspace|^2`` (Parseval) and the round trip is exact to float precision. The file
readers live in :mod:`medmoe.transforms.kspace_io` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.apps.reconstruction.transforms.array import EquispacedKspaceMask, RandomKspaceMask
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, ResizeWithPadOrCrop, ResizeWithPadOrCropd, Transform
from monai.utils import TransformBackends

from .keywise import KeyWise
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
    "UndersampleKspace",
    "UndersampleKspaced",
    "AddComplexGaussianNoise",
    "AddComplexGaussianNoised",
    "AddRicianNoise",
    "AddRicianNoised",
]

_DIMS = (-2, -1)


def _tensor(x, what: str, complex_required: bool = False, min_ndim: int = 3) -> torch.Tensor:
    """Plain torch tensor from numpy / torch / MetaTensor, with the checks every transform shares."""
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


def fft2c(image: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT over the last two axes (image -> k-space), fastMRI convention."""
    image = image if torch.is_complex(image) else image.to(torch.complex64)
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(image, dim=_DIMS), norm="ortho"), dim=_DIMS)


def ifft2c(kspace: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D inverse FFT over the last two axes (k-space -> image), fastMRI convention."""
    kspace = kspace if torch.is_complex(kspace) else kspace.to(torch.complex64)
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(kspace, dim=_DIMS), norm="ortho"), dim=_DIMS)


class KspaceToImage(Transform):
    """Complex k-space ``(C, [S,] H, W)`` -> complex coil images, same shape, by :func:`ifft2c`.

    Example:
        >>> KspaceToImage()(torch.ones(2, 8, 8, dtype=torch.complex64)).shape
        torch.Size([2, 8, 8])
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, kspace: torch.Tensor) -> torch.Tensor:
        return ifft2c(_tensor(kspace, "KspaceToImage"))


class ImageToKspace(Transform):
    """Image ``(C, [S,] H, W)`` (complex, or real = zero phase) -> complex k-space by :func:`fft2c`."""

    backend = [TransformBackends.TORCH]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return fft2c(_tensor(image, "ImageToKspace"))


class RootSumOfSquares(Transform):
    """Root-sum-of-squares coil combination: ``(C, ...)`` complex or real -> real ``(1, ...)``.

    ``rss = sqrt(sum_c |x_c|^2)`` (Roemer et al. 1990), the fastMRI multi-coil target.
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = _tensor(image, "RootSumOfSquares")
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
        x = _tensor(image, "ComplexToMagnitudePhase", complex_required=True)
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
        x = _tensor(image, "MagnitudePhaseToComplex")
        if phase is None:
            if x.shape[0] % 2:
                raise ValueError(f"MagnitudePhaseToComplex: joint form needs an even channel count, got {x.shape[0]}.")
            a, b = x[: x.shape[0] // 2], x[x.shape[0] // 2 :]
        else:
            a, b = x, _tensor(phase, "MagnitudePhaseToComplex (phase)")
            if a.shape != b.shape:
                raise ValueError(f"magnitude {tuple(a.shape)} and phase {tuple(b.shape)} shapes differ.")
        return torch.polar(a.float(), b.float()) if self.mode == "magnitude_phase" else torch.complex(a, b)


class ComplexCenterCrop(ResizeWithPadOrCrop):
    """Centre crop (zero-pad where smaller) to ``roi_size``, default the fastMRI 320 x 320; works on complex and
    real ``(C, H, W)``; invertible (MONAI's :class:`~monai.transforms.ResizeWithPadOrCrop`)."""

    def __init__(self, roi_size: Sequence[int] | int = (320, 320), **kwargs) -> None:
        super().__init__(spatial_size=roi_size, **kwargs)


class UndersampleKspace(RandomizableTransform):
    """Cartesian undersampling of k-space columns (readout lines along ``W`` kept or dropped).

    The mask keeps ``round(W * center_fraction)`` central columns plus others so the kept fraction is about
    ``1 / acceleration``: ``"equispaced"`` (regular spacing with a random offset) or ``"random"`` (uniform).
    Mask drawing reuses MONAI's :class:`~monai.apps.reconstruction.transforms.array.EquispacedKspaceMask` /
    ``RandomKspaceMask`` (fastMRI's mask functions); one ``(center_fraction, acceleration)`` pair is picked per
    sample when several are given.

    Args:
        mask_type: ``"equispaced"`` or ``"random"``.
        center_fractions: fraction(s) of fully sampled central columns.
        accelerations: acceleration(s), one per centre fraction.

    Returns (``__call__``): masked complex k-space, same shape as the input ``(C, [S,] H, W)``; the mask
    ``(W,)`` float of the last draw is ``self.mask``.

    Example:
        >>> t = UndersampleKspace("equispaced", [0.08], [4]); t.set_random_state(0)  # doctest: +ELLIPSIS
        <...>
        >>> out = t(torch.ones(1, 16, 100, dtype=torch.complex64)); round(float(t.mask.mean()), 2)
        0.25
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        mask_type: str = "equispaced",
        center_fractions: Sequence[float] = (0.08,),
        accelerations: Sequence[float] = (4,),
    ) -> None:
        super().__init__(prob=1.0)
        makers = {"equispaced": EquispacedKspaceMask, "random": RandomKspaceMask}
        if mask_type not in makers:
            raise ValueError(f"mask_type must be one of {sorted(makers)}, got '{mask_type}'.")
        if len(center_fractions) != len(accelerations) or not center_fractions:
            raise ValueError("center_fractions and accelerations must be non-empty and of equal length.")
        if any(a < 1 for a in accelerations) or any(not 0 <= c <= 1 for c in center_fractions):
            raise ValueError(
                f"need accelerations >= 1 and 0 <= center_fractions <= 1, got {accelerations}, {center_fractions}."
            )
        self.mask_type = mask_type
        self._monai_mask = makers[mask_type](
            list(center_fractions), list(accelerations), spatial_dims=1, is_complex=False
        )
        self.mask: torch.Tensor | None = None

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self._monai_mask.set_random_state(state=self.R)  # share one generator with MONAI's mask function
        return self

    def randomize(self, num_columns: int) -> None:  # type: ignore[override]
        self._monai_mask.R = self.R
        self._monai_mask(torch.ones(1, num_columns))  # real dummy: MONAI draws the mask along its last axis
        self.mask = self._monai_mask.mask.reshape(num_columns).float()

    def __call__(self, kspace: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        k = _tensor(kspace, "UndersampleKspace", complex_required=True)
        if randomize or self.mask is None:
            self.randomize(k.shape[-1])
        if self.mask.numel() != k.shape[-1]:
            raise ValueError(f"UndersampleKspace: mask has {self.mask.numel()} columns, k-space {k.shape[-1]}.")
        return k * self.mask.to(k.device)


class AddComplexGaussianNoise(RandomizableTransform):
    """Add i.i.d. complex Gaussian noise to a complex image (or k-space): real and imaginary parts each get
    ``N(0, sigma^2)`` with ``sigma = percent / 100 * max|x|`` over the whole sample. The magnitude of the result
    is Rician distributed (Gudbjartsson & Patz 1995).

    Args:
        percent: noise level in percent of ``max|x|``; a ``(low, high)`` pair draws it uniformly per sample.
        prob: probability of adding noise.

    Example:
        >>> t = AddComplexGaussianNoise(percent=5.0); t.set_random_state(0)  # doctest: +ELLIPSIS
        <...>
        >>> t(torch.ones(1, 4, 4, dtype=torch.complex64)).shape
        torch.Size([1, 4, 4])
    """

    backend = [TransformBackends.TORCH]
    _complex_input = True

    def __init__(self, percent: float | Sequence[float] = 5.0, prob: float = 1.0) -> None:
        super().__init__(prob)
        low, high = (percent, percent) if np.isscalar(percent) else tuple(percent)
        if not 0 <= low <= high:
            raise ValueError(f"percent must be >= 0 (or a (low, high) range), got {percent}.")
        self.percent_range = (float(low), float(high))
        self.percent = float(low)
        self.seed = 0

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.percent = float(self.R.uniform(*self.percent_range))
        self.seed = int(self.R.randint(0, 2**31 - 1))

    def _noise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        sigma = self.percent / 100.0 * float(x.abs().max())
        gen = torch.Generator().manual_seed(self.seed)  # same seed -> same field for paired keys
        real_dtype = x.real.dtype if torch.is_complex(x) else x.dtype
        n1 = torch.randn(x.shape, generator=gen, dtype=real_dtype) * sigma
        n2 = torch.randn(x.shape, generator=gen, dtype=real_dtype) * sigma
        return n1.to(x.device), n2.to(x.device), sigma

    def __call__(self, image: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        x = _tensor(image, type(self).__name__, complex_required=self._complex_input, min_ndim=2)
        if randomize:
            self.randomize()
        if not self._do_transform:
            return x
        n1, n2, _ = self._noise(x)
        return self._apply(x, n1, n2)

    def _apply(self, x: torch.Tensor, n1: torch.Tensor, n2: torch.Tensor) -> torch.Tensor:
        return x + torch.complex(n1, n2)


class AddRicianNoise(AddComplexGaussianNoise):
    """Rician noise on a magnitude image ``m >= 0`` ``(C, H, W)``: ``sqrt((m + n1)^2 + n2^2)`` with
    ``n1, n2 ~ N(0, sigma^2)``, ``sigma = percent / 100 * max(m)``; identical in distribution to taking the
    magnitude after :class:`AddComplexGaussianNoise`. In the background (``m = 0``) the mean is
    ``sigma * sqrt(pi / 2)``.
    """

    _complex_input = False

    def _apply(self, x: torch.Tensor, n1: torch.Tensor, n2: torch.Tensor) -> torch.Tensor:
        if bool((x < 0).any()):
            raise ValueError("AddRicianNoise: magnitude image must be non-negative.")
        return torch.sqrt((x + n1) ** 2 + n2**2)


# ----------------------------------------------------------------------------------------------- dictionary twins
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


class _RandKeyWise(RandomizableTransform, MapTransform):
    """Random dictionary twin: one draw per sample, shared by all keys (paired views get the same mask / noise)."""

    transform: RandomizableTransform

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.transform.set_random_state(state=self.R)
        return self

    def _first_shape(self, d: dict) -> tuple[int, ...] | None:
        for key in self.key_iterator(d):
            return tuple(np.shape(d[key]))
        return None

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        shape = self._first_shape(d)
        if shape is None:
            return d
        self._randomize_inner(shape)
        for key in self.key_iterator(d):
            try:
                d[key] = self.transform(d[key], randomize=False)
            except ValueError as e:
                raise ValueError(f"key '{key}': {e}") from e
        return d


class UndersampleKspaced(_RandKeyWise):
    """Dictionary twin of :class:`UndersampleKspace`: one mask per sample for all keys; the mask ``(W,)`` is
    stored under ``mask_key`` (``None`` to skip). A sample holding none of the keys (``allow_missing_keys``)
    gets no mask key."""

    backend = UndersampleKspace.backend

    def __init__(
        self,
        keys: KeysCollection,
        mask_type: str = "equispaced",
        center_fractions: Sequence[float] = (0.08,),
        accelerations: Sequence[float] = (4,),
        mask_key: str | None = "mask",
        allow_missing_keys: bool = False,
    ) -> None:
        self.transform = UndersampleKspace(mask_type, center_fractions, accelerations)
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key

    def _randomize_inner(self, shape: tuple[int, ...]) -> None:
        if not shape:
            raise ValueError(f"UndersampleKspaced: keys {list(self.keys)} hold no array.")
        self.transform.randomize(shape[-1])

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        self.transform.mask = None  # a sample without k-space must not get the previous sample's mask
        d = super().__call__(data)
        if self.mask_key is not None and self.transform.mask is not None:
            d[self.mask_key] = self.transform.mask.clone()
        return d


class AddComplexGaussianNoised(_RandKeyWise):
    """Dictionary twin of :class:`AddComplexGaussianNoise`; one level and seed per sample for all keys."""

    backend = AddComplexGaussianNoise.backend

    def __init__(
        self,
        keys: KeysCollection,
        percent: float | Sequence[float] = 5.0,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        self.transform = self._inner(percent, prob)
        super().__init__(keys, allow_missing_keys)

    _inner = AddComplexGaussianNoise

    def _randomize_inner(self, shape: tuple[int, ...]) -> None:
        self.transform.randomize()


class AddRicianNoised(AddComplexGaussianNoised):
    """Dictionary twin of :class:`AddRicianNoise`."""

    _inner = AddRicianNoise
