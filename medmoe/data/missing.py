"""Explicit placeholders for missing modalities so that samples with absent views still batch.

DESIGN.md: a missing modality is never silently replaced by zeros in the data layer. The
placeholder is NaN-filled, and ``modality_mask`` says it is absent: a model that ignored the mask
would produce NaNs at once instead of quietly learning from fake zeros. The model decides how to
fill the gap (``M4oE(missing_modality=...)``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor

__all__ = ["FillMissingModalitiesd"]


class FillMissingModalitiesd(MapTransform):
    """Insert a NaN tensor of ``shape`` for every modality key the sample lacks; check the mask agrees.

    Args:
        keys: modality keys in model order (the ``modality_mask`` column order).
        shape: the shape every present modality has after preprocessing, e.g. ``(1, 64, 64)``.
        mask_key: the sample's ``(M,)`` bool presence mask.

    Raises:
        ValueError: if the mask and the keys disagree, or a present modality has another shape.
    """

    def __init__(self, keys: KeysCollection, shape: Sequence[int], mask_key: str = "modality_mask") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.shape, self.mask_key = tuple(int(s) for s in shape), mask_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        mask = np.asarray(d[self.mask_key], dtype=bool)
        if mask.shape != (len(self.keys),):
            raise ValueError(f"'{self.mask_key}' has shape {mask.shape}, expected ({len(self.keys)},)")
        for i, key in enumerate(self.keys):
            if bool(mask[i]) != (key in d):
                raise ValueError(f"'{self.mask_key}' says {key} is {'present' if mask[i] else 'absent'} but it is not")
            if key in d:
                if tuple(d[key].shape) != self.shape:
                    raise ValueError(f"modality '{key}' has shape {tuple(d[key].shape)}, expected {self.shape}")
                d[key] = convert_to_tensor(d[key], dtype=torch.float32, track_meta=False)
            else:
                d[key] = torch.full(self.shape, float("nan"))
        d[self.mask_key] = torch.as_tensor(mask)
        return d
