"""Optic-disc crops and optic cup / disc mask <-> label map transforms (MONAI style, array + dictionary pairs).

Cup / disc masks follow the GAMMA / REFUGE convention: grey 0 = optic cup, 128 = disc rim, 255 = background;
binary 0/1 or 0/255 disc-only or cup-only masks are read when ``mask_convention`` says so (never guessed).
Fundus loading, field-of-view cropping and normalisation are in :mod:`medmoe.transforms.ophthalmology`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    InvertibleTransform,
    MapTransform,
    SpatialCrop,
    Transform,
)
from monai.utils import TransformBackends

from .image_checks import channel_first_image, with_meta_of
from .keywise import KeyWise

__all__ = ["OpticDiscCrop", "OpticDiscCropd", "CupDiscToLabel", "CupDiscToLabeld", "LabelToCupDisc", "LabelToCupDiscd"]


def _disc_centre(disc: torch.Tensor, what: str) -> tuple[float, float]:
    m = torch.as_tensor(disc)
    m = m[0] if m.ndim == 3 else m
    if m.ndim != 2:
        raise ValueError(f"{what}: disc mask must be (1, H, W) or (H, W), got {tuple(torch.as_tensor(disc).shape)}.")
    rows, cols = torch.nonzero(m > 0, as_tuple=True)
    if rows.numel() == 0:
        raise ValueError(f"{what}: disc mask is empty; pass centre coordinates instead.")
    return float(rows.float().mean()), float(cols.float().mean())


class OpticDiscCrop(SpatialCrop):
    """Fixed-size crop centred on the optic disc, given a disc mask (its centroid; a cup / disc label map with
    disc > 0 works) or ``(row, col)`` coordinates; the window is shifted to stay inside the image. Invertible
    (MONAI's :class:`~monai.transforms.SpatialCrop`).

    An image smaller than ``roi_size`` along an axis is not padded: that axis is kept whole, so the output is
    ``(C, min(H, roi_h), min(W, roi_w))`` (pad afterwards, e.g. with MONAI's ``SpatialPad``, for a fixed size).

    Example:
        >>> img = torch.rand(3, 100, 120); disc = torch.zeros(1, 100, 120); disc[:, 40:50, 90:100] = 1
        >>> OpticDiscCrop((32, 32))(img, disc_mask=disc).shape
        torch.Size([3, 32, 32])
    """

    def __init__(self, roi_size: Sequence[int] = (256, 256), lazy: bool = False) -> None:
        super().__init__(roi_start=(0, 0), roi_end=tuple(roi_size), lazy=lazy)
        self.roi_size = tuple(int(s) for s in roi_size)

    def set_centre(self, shape: Sequence[int], centre: Sequence[float]) -> None:
        starts = []
        for size, roi, c in zip(shape, self.roi_size, centre, strict=True):
            starts.append(int(np.clip(round(c - roi / 2), 0, max(size - roi, 0))))
        self.slices = tuple(slice(s, s + r) for s, r in zip(starts, self.roi_size, strict=True))

    def __call__(self, img, centre: Sequence[float] | None = None, disc_mask=None, lazy=None):  # type: ignore[override]
        x = channel_first_image(img, "OpticDiscCrop")
        if centre is None and disc_mask is None:
            raise ValueError("OpticDiscCrop: pass a disc mask or centre (row, col) coordinates.")
        centre = _disc_centre(disc_mask, "OpticDiscCrop") if centre is None else tuple(centre)
        if len(centre) != 2:
            raise ValueError(f"OpticDiscCrop: centre must be (row, col), got {centre}.")
        self.set_centre(x.shape[1:], centre)
        return super().__call__(img, lazy=lazy)


class OpticDiscCropd(MapTransform, InvertibleTransform):
    """Dictionary twin of :class:`OpticDiscCrop`: the centre comes from ``disc_key`` (a disc or cup / disc
    label mask) or ``centre_key`` (``(row, col)``) and the same window crops every key; invertible."""

    def __init__(
        self,
        keys: KeysCollection,
        roi_size: Sequence[int] = (256, 256),
        disc_key: str | None = None,
        centre_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if (disc_key is None) == (centre_key is None):
            raise ValueError("OpticDiscCropd: give exactly one of disc_key or centre_key.")
        self.disc_key, self.centre_key = disc_key, centre_key
        self.cropper = OpticDiscCrop(roi_size)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        source = self.disc_key or self.centre_key
        if source not in d:
            raise ValueError(f"OpticDiscCropd: key '{source}' missing from {sorted(map(str, d))}.")
        centre = _disc_centre(d[source], f"key '{source}'") if self.disc_key else tuple(d[source])
        for key in self.key_iterator(d):
            try:
                d[key] = self.cropper(d[key], centre=centre)
            except ValueError as e:
                raise ValueError(f"key '{key}': {e}") from e
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.cropper.inverse(d[key])
        return d


MASK_CONVENTIONS = ("gamma", "binary_disc", "binary_cup")


def _mask_file(mask: object) -> str:
    meta = getattr(mask, "meta", None)
    name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    return f"{name}: " if name else ""


def _values(grey: torch.Tensor) -> str:
    """The set of grey values, abbreviated when there are many."""
    values = torch.unique(grey)
    shown = ", ".join(f"{float(v):g}" for v in values[:8])
    if len(values) <= 8:
        return f"{{{shown}}}"
    return f"{{{shown}, ...}} ({len(values)} values up to {float(values[-1]):g})"


class CupDiscToLabel(Transform):
    """Cup / disc mask -> label map, with an explicit ``mask_convention`` (never guessed).

    - ``"gamma"`` (default): GAMMA / REFUGE grey mask, 0 = cup, 128 = disc rim, 255 = background. Grey levels are
      assigned to the nearest of 0 / 128 / 255 (tolerates resampling / JPEG); with ``strict=True`` other values
      raise. A binary mask given here is refused with a message naming the file and the values found: all values
      in [0, 1] (a 0/1 mask), or a "cup" (grey < 64) that covers most of the image border or has no disc rim
      (a 0/255 mask; in a GAMMA mask the cup lies inside the rim).
    - ``"binary_disc"``: 0/1 or 0/255 mask, non-zero = optic disc (the cup is not annotated): label 1 inside.
    - ``"binary_cup"``: 0/1 or 0/255 mask, non-zero = optic cup (the disc is not annotated): label 2 inside.
      A binary mask with values between its two levels (e.g. a GAMMA mask, or a JPEG) is refused.

    ``output="index"``: int64 ``(1, H, W)`` with 0 = background, 1 = disc rim (``"binary_disc"``: disc), 2 = cup.
    ``output="disc_cup"``: float ``(2, H, W)`` nested channels (disc incl. cup, cup), the REFUGE evaluation
    regions; only for ``"gamma"`` (a binary mask lacks one of the two).
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, output: str = "index", strict: bool = False, mask_convention: str = "gamma") -> None:
        if output not in ("index", "disc_cup"):
            raise ValueError(f"output must be 'index' or 'disc_cup', got '{output}'.")
        if mask_convention not in MASK_CONVENTIONS:
            raise ValueError(f"mask_convention must be one of {MASK_CONVENTIONS}, got {mask_convention!r}.")
        if output == "disc_cup" and mask_convention != "gamma":
            raise ValueError(
                f"output='disc_cup' needs both disc and cup; a {mask_convention!r} mask annotates only one of them "
                "(use output='index')."
            )
        self.output, self.strict, self.mask_convention = output, strict, mask_convention

    def _gamma(self, grey: torch.Tensor, name: str) -> torch.Tensor:
        if self.strict and not torch.isin(grey, torch.tensor([0.0, 128.0, 255.0], device=grey.device)).all():
            raise ValueError(f"{name}CupDiscToLabel: values other than 0 / 128 / 255 found (strict=True).")
        cup, rim = grey < 64, (grey >= 64) & (grey < 192)
        border = torch.cat([cup[..., 0, :], cup[..., -1, :], cup[..., :, 0], cup[..., :, -1]], dim=-1)
        why = None
        if float(grey.max()) <= 1:
            why = "all values in [0, 1]: a binary 0/1 mask"
        elif float(border.float().mean()) > 0.5 or (bool(cup.any()) and not bool(rim.any())):
            why = "the 'cup' (grey < 64) covers most of the image border or has no 128 disc rim: a 0/255 mask?"
        if why:
            raise ValueError(
                f"{name}CupDiscToLabel expected a GAMMA / REFUGE grey mask (0 cup, 128 disc rim, 255 background; "
                f"mask_convention='gamma') but found values {_values(grey)} ({why}). For a binary mask pass "
                "mask_convention='binary_disc' (non-zero = optic disc) or 'binary_cup' (non-zero = optic cup)."
            )
        label = torch.zeros(grey.shape, dtype=torch.int64, device=grey.device)
        label[grey < 192] = 1
        label[cup] = 2
        return label

    def _binary(self, grey: torch.Tensor, name: str) -> torch.Tensor:
        high = 1.0 if float(grey.max()) <= 1 else 255.0
        inside = grey > high / 2
        between = (grey > high / 8) & (grey < high * 7 / 8)
        if bool(between.any()):
            raise ValueError(
                f"{name}CupDiscToLabel expected a binary 0/1 or 0/255 mask (mask_convention="
                f"'{self.mask_convention}') but found values {_values(grey)}, some between the two levels. For a "
                "GAMMA / REFUGE grey mask (0 cup, 128 disc rim, 255 background) pass mask_convention='gamma'; save "
                "binary masks losslessly (PNG), not as JPEG."
            )
        return inside.long() * (1 if self.mask_convention == "binary_disc" else 2)

    def __call__(self, mask: torch.Tensor) -> torch.Tensor:
        name = _mask_file(mask)
        m = channel_first_image(mask, f"{name}CupDiscToLabel", channels=1).float()
        if float(m.min()) < 0 or float(m.max()) > 255:
            raise ValueError(
                f"{name}CupDiscToLabel: grey values must lie in [0, 255], got [{float(m.min())}, {float(m.max())}]."
            )
        grey = m.as_tensor() if isinstance(m, MetaTensor) else m
        label = self._gamma(grey, name) if self.mask_convention == "gamma" else self._binary(grey, name)
        out = label if self.output == "index" else torch.cat([(label >= 1), (label == 2)]).float()
        return with_meta_of(out, mask)


class LabelToCupDisc(Transform):
    """Inverse of :class:`CupDiscToLabel`: index ``(1, H, W)`` or nested ``(2, H, W)`` -> uint8 GAMMA grey mask."""

    backend = [TransformBackends.TORCH]

    def __call__(self, label: torch.Tensor) -> torch.Tensor:
        t = channel_first_image(label, "LabelToCupDisc")
        if t.shape[0] == 2:
            index = (t[:1] > 0.5).long() + (t[1:] > 0.5).long()
        elif t.shape[0] == 1:
            index = t.long()
        else:
            raise ValueError(f"LabelToCupDisc: expected 1 (index) or 2 (disc, cup) channels, got {t.shape[0]}.")
        if int(index.min()) < 0 or int(index.max()) > 2:
            raise ValueError("LabelToCupDisc: labels must be 0 (background), 1 (rim) or 2 (cup).")
        grey = torch.tensor([255, 128, 0], dtype=torch.uint8, device=index.device)
        return with_meta_of(grey[index.as_tensor() if isinstance(index, MetaTensor) else index], label)


class CupDiscToLabeld(KeyWise):
    """Dictionary twin of :class:`CupDiscToLabel`."""

    backend = CupDiscToLabel.backend

    def __init__(
        self,
        keys: KeysCollection,
        output: str = "index",
        strict: bool = False,
        allow_missing_keys: bool = False,
        mask_convention: str = "gamma",
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = CupDiscToLabel(output, strict, mask_convention)


class LabelToCupDiscd(KeyWise):
    """Dictionary twin of :class:`LabelToCupDisc`."""

    backend = LabelToCupDisc.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = LabelToCupDisc()
