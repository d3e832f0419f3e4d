"""Dictionary k-space transforms that read or write *other* keys: a per-sample slice index from the cohort, and
a complex image split into named ``magnitude`` / ``phase`` modality keys (I2M2's two modalities).

The key-wise twins in :mod:`medmoe.transforms.kspace` map each key onto itself; these two link keys: the slice to
load comes from a cohort column, and one complex image becomes two modalities plus their presence mask.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import TransformBackends

from .kspace import ComplexToMagnitudePhase
from .kspace_io import LoadKspace

__all__ = ["LoadKspaceSliced", "SplitMagnitudePhased"]


class LoadKspaceSliced(MapTransform):
    """Load one k-space slice per sample: the path from ``keys``, the slice index from ``slice_key``.

    A fastMRI cohort has one row per slice (the same h5 path, a different ``slice`` column), so the slice index
    is per sample rather than a constructor argument as in :class:`~medmoe.transforms.LoadKspaced`.

    Args:
        keys: path keys; each is replaced by its complex ``(C, H, W)`` k-space.
        slice_key: key of the slice index (an int, or a string such as a CSV cell).
        remove_oversampling: remove 2x readout oversampling (Siemens raw data).
        allow_missing_keys: skip absent path keys.

    Raises:
        ValueError: naming the key, on a missing / non-integer slice index or an unreadable file.

    Example:
        >>> LoadKspaceSliced("kspace")({"kspace": "file1000001.h5", "slice": "17"})["kspace"].shape  # doctest: +SKIP
        torch.Size([1, 640, 368])
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        keys: KeysCollection,
        slice_key: str = "slice",
        remove_oversampling: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.slice_key, self.remove_oversampling = slice_key, remove_oversampling

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.slice_key not in d:
                raise ValueError(f"key '{key}': no slice index under '{self.slice_key}' (keys: {sorted(map(str, d))})")
            raw = d[self.slice_key]
            try:
                number = float(raw.item() if hasattr(raw, "item") else raw)
                if not number.is_integer():
                    raise ValueError
            except (TypeError, ValueError):
                raise ValueError(
                    f"key '{key}': slice index {raw!r} under '{self.slice_key}' is not an integer"
                ) from None
            try:
                d[key] = LoadKspace(int(number), self.remove_oversampling)(d[key])
            except ValueError as e:
                raise ValueError(f"key '{key}': {e}") from e
        return d


class SplitMagnitudePhased(MapTransform):
    """Complex image under ``key`` -> real ``magnitude_key`` and ``phase_key`` (``(C, H, W)`` each, phase in
    radians), plus a presence mask for the two as modalities.

    Magnitude and phase come from one acquisition, so they are present or absent together: ``mask_key`` (if
    set) receives a ``(2,)`` bool array ``[present, present]`` in (magnitude, phase) order, replacing the
    cohort's one-column mask of the k-space path. An absent source key (``allow_missing_keys``) writes
    ``[False, False]`` and no images (fill them with :class:`~medmoe.data.FillMissingModalitiesd`).

    Args:
        key: the complex image key (removed unless ``keep_source``).
        magnitude_key: output key of ``|x|``.
        phase_key: output key of ``angle(x)`` in ``(-pi, pi]``.
        mask_key: presence mask key to write, or ``None`` to leave masks alone.
        keep_source: keep the complex image under ``key``.
        allow_missing_keys: tolerate an absent ``key``.

    Raises:
        ValueError: naming the key, if the image is not complex or not channel-first.

    Example:
        >>> out = SplitMagnitudePhased("image")({"image": torch.ones(1, 4, 4, dtype=torch.complex64)})
        >>> out["magnitude"].shape, out["phase"].shape, out["modality_mask"].tolist()
        (torch.Size([1, 4, 4]), torch.Size([1, 4, 4]), [True, True])
    """

    backend = ComplexToMagnitudePhase.backend

    def __init__(
        self,
        key: str,
        magnitude_key: str = "magnitude",
        phase_key: str = "phase",
        mask_key: str | None = "modality_mask",
        keep_source: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(key, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"SplitMagnitudePhased takes one source key, got {list(self.keys)}")
        self.magnitude_key, self.phase_key, self.mask_key = magnitude_key, phase_key, mask_key
        self.keep_source = keep_source
        self.transform = ComplexToMagnitudePhase("magnitude_phase")

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        present = False
        for key in self.key_iterator(d):
            image = d[key]
            image = image.as_tensor() if hasattr(image, "as_tensor") else image
            try:
                joint = self.transform(image)
            except ValueError as e:
                raise ValueError(f"key '{key}': {e}") from e
            half = joint.shape[0] // 2
            d[self.magnitude_key], d[self.phase_key] = joint[:half].float(), joint[half:].float()
            if not self.keep_source:
                del d[key]
            present = True
        if self.mask_key is not None:
            d[self.mask_key] = np.array([present, present], dtype=bool)
        return d
