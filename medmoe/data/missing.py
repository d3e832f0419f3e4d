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

from ..losses.multitask import present_key

__all__ = ["FillMissingMasksd", "FillMissingModalitiesd"]


class FillMissingModalitiesd(MapTransform):
    """Insert a NaN tensor of ``shape`` for every modality key the sample lacks; check the mask agrees.

    Args:
        keys: modality keys in model order (the ``modality_mask`` column order).
        shape: the shape every present modality has after preprocessing, e.g. ``(1, 64, 64)``, or a mapping
            key -> shape when the modalities differ (fundus ``(3, 64, 64)`` and OCT ``(1, 8, 32, 32)``).
        mask_key: the sample's ``(M,)`` bool presence mask.

    Raises:
        ValueError: if the mask and the keys disagree, or a present modality has another shape.
    """

    def __init__(
        self, keys: KeysCollection, shape: Sequence[int] | Mapping[str, Sequence[int]], mask_key: str = "modality_mask"
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        if isinstance(shape, Mapping):
            unknown = [k for k in self.keys if k not in shape]
            if unknown:
                raise ValueError(f"shape has no entry for modality key(s) {unknown}")
            self.shapes = {k: tuple(int(s) for s in shape[k]) for k in self.keys}
        else:
            self.shapes = dict.fromkeys(self.keys, tuple(int(s) for s in shape))
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        mask = np.asarray(d[self.mask_key], dtype=bool)
        if mask.shape != (len(self.keys),):
            raise ValueError(f"'{self.mask_key}' has shape {mask.shape}, expected ({len(self.keys)},)")
        for i, key in enumerate(self.keys):
            if bool(mask[i]) != (key in d):
                raise ValueError(f"'{self.mask_key}' says {key} is {'present' if mask[i] else 'absent'} but it is not")
            if key in d:
                if tuple(d[key].shape) != self.shapes[key]:
                    raise ValueError(f"modality '{key}' has shape {tuple(d[key].shape)}, expected {self.shapes[key]}")
                d[key] = convert_to_tensor(d[key], dtype=torch.float32, track_meta=False)
            else:
                d[key] = torch.full(self.shapes[key], float("nan"))
        d[self.mask_key] = torch.as_tensor(mask)
        return d


class FillMissingMasksd(MapTransform):
    """Zero placeholder + ``"<key>_present"`` flag for segmentation masks, so samples without a mask still batch.

    A present mask is kept (as an int64 tensor) with the flag True; an absent one becomes zeros of ``shape`` with
    the flag False. The loss skips flagged-absent samples (:func:`medmoe.losses.masked_dice_ce`), so the zeros
    never count as "no structure" (unlike a missing modality, a placeholder mask is never read as data).

    Args:
        keys: segmentation mask keys (each a task of the model).
        shape: the shape of a present mask after preprocessing, e.g. ``(1, 64, 64)``.

    Raises:
        ValueError: naming the key if a present mask has another shape.

    Example::

        >>> fill = FillMissingMasksd("cup", shape=(1, 4, 4))
        >>> sample = fill({"case_id": "0007"})
        >>> sample["cup"].shape, bool(sample["cup_present"])
        (torch.Size([1, 4, 4]), False)
    """

    def __init__(self, keys: KeysCollection, shape: Sequence[int]) -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.shape = tuple(int(s) for s in shape)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.keys:
            present = d.get(key) is not None
            if present:
                if tuple(d[key].shape) != self.shape:
                    raise ValueError(f"mask '{key}' has shape {tuple(d[key].shape)}, expected {self.shape}")
                d[key] = convert_to_tensor(d[key], dtype=torch.int64, track_meta=False)
            else:
                d[key] = torch.zeros(self.shape, dtype=torch.int64)
            d[present_key(key)] = torch.tensor(present)
        return d
