"""Put network-grid predictions back onto the original fundus photograph.

:class:`~medmoe.transforms.ophthalmology.FundusFOVCropd` (with ``geometry_key``) records the photograph's size
and the field-of-view crop box; :class:`RestoreFundusGeometry` undoes that crop and any resize to the network
size, so masks are scored and written pixel for pixel against the photograph.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

__all__ = ["RestoreFundusGeometry", "RestoreFundusGeometryd"]


def _geometry(geometry, what: str) -> tuple[int, int, int, int, int, int]:
    g = torch.as_tensor(geometry).reshape(-1)
    if g.numel() != 6:
        raise ValueError(f"{what}: geometry must be (height, width, row_start, col_start, row_end, col_end).")
    height, width, r0, c0, r1, c1 = (int(v) for v in g)
    if height < 1 or width < 1 or r1 <= r0 or c1 <= c0:
        raise ValueError(f"{what}: invalid geometry {[height, width, r0, c0, r1, c1]} (empty image or crop box).")
    return height, width, r0, c0, r1, c1


class RestoreFundusGeometry(Transform):
    """Put an image, label map or probability map from the network grid back onto the original photograph.

    Undoes :class:`FundusFOVCropd` followed by any resize to the network size (not a pad): the input is resized
    to the crop box and placed at the box inside a ``fill``-valued image of the original size. The geometry is
    what ``FundusFOVCropd(geometry_key=...)`` records. For a label map use ``mode="nearest"`` (torch's
    ``nearest-exact``; pair it with ``Resized(mode="nearest-exact")`` forward so that the two are aligned); for a
    segmentation, restoring the class probabilities with ``"bilinear"`` and taking the ``argmax`` afterwards
    gives smoother boundaries than restoring the label map.

    Args:
        mode: ``"nearest"`` (labels; the dtype is kept) or ``"bilinear"`` (float maps, returned as float32).
        fill: value outside the crop box (0 = background label / zero probability).

    ``__call__(img (C, h, w), geometry (6,))`` returns ``(C, height, width)``.

    Raises:
        ValueError: bad mode, an input that is not ``(C, h, w)``, or a geometry that is not 6 valid integers.

    Example:
        >>> label = torch.zeros(1, 4, 4, dtype=torch.long); label[:, 1:3, 1:3] = 1
        >>> out = RestoreFundusGeometry()(label, torch.tensor([10, 12, 2, 4, 10, 12]))  # 8 x 8 box at (2, 4)
        >>> out.shape, int(out.sum()), out.dtype
        (torch.Size([1, 10, 12]), 16, torch.int64)
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, mode: str = "nearest", fill: float = 0.0) -> None:
        if mode not in ("nearest", "bilinear"):
            raise ValueError(f"RestoreFundusGeometry: mode must be 'nearest' or 'bilinear', got '{mode}'.")
        self.mode, self.fill = mode, fill

    def __call__(self, img: torch.Tensor, geometry: torch.Tensor | Sequence[int]) -> torch.Tensor:
        x = img if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))
        if x.ndim != 3 or x.numel() == 0:
            raise ValueError(f"RestoreFundusGeometry: expected a (C, h, w) input, got shape {tuple(x.shape)}.")
        height, width, r0, c0, r1, c1 = _geometry(geometry, "RestoreFundusGeometry")
        x = x.as_tensor() if isinstance(x, MetaTensor) else x
        kwargs = {"mode": "nearest-exact"} if self.mode == "nearest" else {"mode": "bilinear", "align_corners": False}
        resized = torch.nn.functional.interpolate(x[None].float(), size=(r1 - r0, c1 - c0), **kwargs)[0]
        out = torch.full((x.shape[0], height, width), float(self.fill), dtype=torch.float32, device=x.device)
        rows = slice(max(r0, 0), min(r1, height))  # the box may reach past the image (e.g. k_divisible padding)
        cols = slice(max(c0, 0), min(c1, width))
        out[:, rows, cols] = resized[:, rows.start - r0 : rows.stop - r0, cols.start - c0 : cols.stop - c0]
        return out.to(x.dtype) if self.mode == "nearest" else out


class RestoreFundusGeometryd(MapTransform):
    """Dictionary twin of :class:`RestoreFundusGeometry`: every key is put back with ``d[geometry_key]``."""

    backend = RestoreFundusGeometry.backend

    def __init__(
        self,
        keys: KeysCollection,
        geometry_key: str = "fundus_geometry",
        mode: str = "nearest",
        fill: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.geometry_key = geometry_key
        self.transform = RestoreFundusGeometry(mode, fill)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        if self.geometry_key not in d:
            raise ValueError(
                f"RestoreFundusGeometryd: geometry key '{self.geometry_key}' missing from {sorted(map(str, d))}."
            )
        for key in self.key_iterator(d):
            try:
                d[key] = self.transform(d[key], d[self.geometry_key])
            except ValueError as e:
                raise ValueError(f"key '{key}': {e}") from e
        return d
