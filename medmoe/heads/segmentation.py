"""Segmentation head: tokens on a patch grid -> progressive 2x upsampling decoder -> mask logits at input size."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.blocks import UnetOutBlock, UnetResBlock
from monai.networks.blocks.dynunet_block import get_conv_layer
from torch import nn

__all__ = ["SegmentationHead"]


def _tuple(value: int | Sequence[int], n: int, what: str) -> tuple[int, ...]:
    out = (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(out) != n:
        raise ValueError(f"{what} needs {n} values (one per spatial dim), got {value}")
    return out


def _log2(value: int, what: str) -> int:
    if value < 1 or value & (value - 1):
        raise ValueError(f"{what} must be a power of two, got {value}")
    return int(math.log2(value))


class SegmentationHead(nn.Module):
    """UNETR/SETR-style decoder from tokens ``(b, n, d)`` on a patch grid to per-class logits at the input size.

    The tokens are laid out on the patch grid ``(b, d, h, w)``, then ``log2(max(patch_size))`` stages each
    upsample by 2 (a transposed conv; a spatial dim whose patch side is already reached is upsampled by 1)
    and refine with a MONAI ``UnetResBlock``. A skip feature map (e.g. from a CNN embedder) at a stage's output
    resolution is projected by a 1x1 conv and **added** to the upsampled map before the refinement, so a
    skip is optional per call: a stage declared with ``skip_channels`` uses it when given and works without
    it. A final 1x1 conv (``UnetOutBlock``) gives the logits.

    Convention: ``out_channels`` = number of classes ``K >= 2`` including background, softmax over the
    channel axis (binary segmentation = 2 logits, like the classification heads); the matching loss is
    ``DiceCELoss(to_onehot_y=True, softmax=True)`` on an integer label map (:class:`~medmoe.losses.MultiTaskLoss`).

    Args:
        spatial_dims: 2 (images) or 3 (volumes).
        hidden_size: token width ``d``.
        out_channels: number of classes ``K`` (>= 2).
        patch_size: patch side (or one per spatial dim), each a power of two: the upsampling factor.
        feature_size: channels of the last (full-resolution) stage; stage ``i`` of ``s`` has
            ``feature_size * 2 ** (s - 1 - i)`` channels (UNETR's halving).
        skip_channels: channels of the skip map at each stage output (coarsest first, length = number of
            stages), ``0`` / ``None`` for a stage without skip.
        norm_name: MONAI norm of the residual blocks (``"instance"``, ``"batch"``, ...).
        dropout_rate: dropout in the residual blocks.

    Shapes: ``tokens (b, h*w, d)``, ``grid_size (h, w)`` -> logits ``(b, K, h*ph, w*pw)``; skip ``i`` is
    ``(b, skip_channels[i], h*ph_i, w*pw_i)`` with the stage-``i`` factors ``min(2**(i+1), patch)``.

    Raises:
        ValueError: on a patch side that is not a power of two, ``out_channels < 2``, a token count that does
            not match ``grid_size``, or a skip of the wrong shape / at a stage declared without skip.

    Example::

        >>> head = SegmentationHead(2, hidden_size=32, out_channels=2, patch_size=8)
        >>> head(torch.randn(2, 4 * 6, 32), (4, 6)).shape
        torch.Size([2, 2, 32, 48])
    """

    def __init__(
        self,
        spatial_dims: int,
        hidden_size: int,
        out_channels: int,
        patch_size: int | Sequence[int],
        feature_size: int = 16,
        skip_channels: Sequence[int | None] | None = None,
        norm_name: str | tuple = "instance",
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if int(out_channels) < 2:
            raise ValueError(f"out_channels must be >= 2 (classes incl. background; binary = 2), got {out_channels}")
        self.spatial_dims = spatial_dims
        self.patch_size = _tuple(patch_size, spatial_dims, "patch_size")
        steps = [_log2(p, "patch_size") for p in self.patch_size]
        num_stages = max(steps)
        # per stage and dim: 2 while that dim still needs upsampling, else 1 (non-square patches)
        self.scales = [tuple(2 if i < s else 1 for s in steps) for i in range(num_stages)]
        skips = [int(c or 0) for c in (skip_channels or [0] * num_stages)]
        if len(skips) != num_stages:
            raise ValueError(f"skip_channels needs {num_stages} entries (one per upsampling stage), got {len(skips)}")
        self.skip_channels = skips
        channels = [feature_size * 2 ** (num_stages - 1 - i) for i in range(num_stages)]
        ins = [hidden_size, *channels[:-1]]
        self.up = nn.ModuleList(
            get_conv_layer(spatial_dims, c_in, c_out, scale, scale, conv_only=True, is_transposed=True)
            for c_in, c_out, scale in zip(ins, channels, self.scales)
        )
        self.skip_proj = nn.ModuleList(
            get_conv_layer(spatial_dims, c_skip, c_out, 1, 1, conv_only=True) if c_skip else nn.Identity()
            for c_skip, c_out in zip(skips, channels)
        )
        self.refine = nn.ModuleList(
            UnetResBlock(spatial_dims, c, c, 3, 1, norm_name=norm_name, dropout=dropout_rate or None) for c in channels
        )
        self.out = UnetOutBlock(spatial_dims, channels[-1] if channels else hidden_size, int(out_channels))

    def forward(
        self,
        tokens: torch.Tensor,
        grid_size: Sequence[int],
        skips: Sequence[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        grid = _tuple(grid_size, self.spatial_dims, "grid_size")
        b, n, d = tokens.shape
        if n != math.prod(grid):
            raise ValueError(f"{n} tokens do not fill the patch grid {grid} ({math.prod(grid)} cells)")
        skips = list(skips or [None] * len(self.up))
        if len(skips) != len(self.up):
            raise ValueError(f"skips needs {len(self.up)} entries (None for no skip), got {len(skips)}")
        x = tokens.transpose(1, 2).reshape(b, d, *grid)  # b n d -> b d h w
        for i, (up, proj, refine, skip) in enumerate(zip(self.up, self.skip_proj, self.refine, skips)):
            x = up(x)
            if skip is not None:
                if not self.skip_channels[i]:
                    raise ValueError(f"a skip was given at stage {i}, declared without skip_channels")
                if skip.shape[0] != b or tuple(skip.shape[2:]) != tuple(x.shape[2:]):
                    raise ValueError(
                        f"skip {i} must be (batch={b}, {self.skip_channels[i]}, {tuple(x.shape[2:])}), "
                        f"got {tuple(skip.shape)}"
                    )
                x = x + proj(skip)
            x = refine(x)
        return self.out(x)
