"""Checks and metadata helpers shared by the fundus, optic-disc and OCT transforms."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor

__all__ = ["channel_first_image", "finite_tensor", "with_meta_of"]


def finite_tensor(x, what: str, ndim: int, expected: str, noun: str = "image") -> torch.Tensor:
    """``x`` as a tensor with ``ndim`` dimensions, not empty and (if floating) finite.

    Errors name ``what`` (the transform or file) and say ``expected`` (e.g. "an OCT volume (1, N, H, W)").
    """
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != ndim:
        raise ValueError(f"{what}: expected {expected}, got shape {tuple(t.shape)}.")
    if t.numel() == 0:
        raise ValueError(f"{what}: {noun} is empty.")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ValueError(f"{what}: {noun} contains NaN or infinite values.")
    return t


def channel_first_image(x, what: str, channels: int | None = None) -> torch.Tensor:
    """A channel-first ``(C, H, W)`` image (``channels`` of them when given), not empty and finite."""
    want = f"a channel-first image ({channels}, H, W)" if channels else "a channel-first image (C, H, W)"
    t = finite_tensor(x, what, 3, want)
    if channels is not None and t.shape[0] != channels:
        raise ValueError(f"{what}: expected {want}, got shape {tuple(t.shape)}.")
    return t


def with_meta_of(out: torch.Tensor, source: object) -> torch.Tensor:
    """``out`` as a MetaTensor with ``source``'s meta and applied_operations when ``source`` is a MetaTensor (so
    ``Compose.inverse`` can still undo the crop / resize that came before), else ``out`` unchanged."""
    if isinstance(source, MetaTensor):
        plain = out.as_tensor() if isinstance(out, MetaTensor) else out
        return MetaTensor(plain, meta=source.meta, applied_operations=source.applied_operations)
    return out
