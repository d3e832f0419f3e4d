"""Checks and metadata helpers shared by the fundus and optic-disc transforms."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor

__all__ = ["channel_first_image", "with_meta_of"]


def channel_first_image(x, what: str, channels: int | None = None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 3 or (channels is not None and t.shape[0] != channels):
        want = f"({channels}, H, W)" if channels else "(C, H, W)"
        raise ValueError(f"{what}: expected a channel-first image {want}, got shape {tuple(t.shape)}.")
    if t.numel() == 0:
        raise ValueError(f"{what}: image is empty.")
    if t.is_floating_point() and not torch.isfinite(t).all():
        raise ValueError(f"{what}: image contains NaN or infinite values.")
    return t


def with_meta_of(out: torch.Tensor, source: object) -> torch.Tensor:
    """``out`` as a MetaTensor with ``source``'s meta and applied_operations when ``source`` is a MetaTensor (so
    ``Compose.inverse`` can still undo the crop / resize that came before), else ``out`` unchanged."""
    if isinstance(source, MetaTensor):
        plain = out.as_tensor() if isinstance(out, MetaTensor) else out
        return MetaTensor(plain, meta=source.meta, applied_operations=source.applied_operations)
    return out
