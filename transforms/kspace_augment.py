"""Random k-space augmentations: undersampling masks (fastMRI's equispaced / random) and complex Gaussian or
Rician noise, with dictionary twins that draw once per sample and apply the same draw to every key.

Conventions as :mod:`medmoe.transforms.kspace` (complex channel-first ``(C, H, W)``, centred orthonormal FFTs).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.apps.reconstruction.transforms.array import EquispacedKspaceMask, RandomKspaceMask
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import TransformBackends

from .kspace import kspace_tensor

__all__ = [
    "UndersampleKspace",
    "UndersampleKspaced",
    "AddComplexGaussianNoise",
    "AddComplexGaussianNoised",
    "AddRicianNoise",
    "AddRicianNoised",
]


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
        k = kspace_tensor(kspace, "UndersampleKspace", complex_required=True)
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
        x = kspace_tensor(image, type(self).__name__, complex_required=self._complex_input, min_ndim=2)
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
