"""Pre-activation ResNet 2D image encoder (He et al. 2016, "Identity Mappings in Deep Residual Networks")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from math import gcd

import torch
from torch import nn

__all__ = ["PreActResNet2d", "PreActBlock"]

NORMS = ("group", "batch")
STEMS = ("cifar", "imagenet")


def _norm(kind: str, channels: int, groups: int, norm_groups: int) -> nn.Module:
    if kind == "batch":  # per channel, so experts (channel groups) never mix
        return nn.BatchNorm2d(channels)
    # GroupNorm groups must not straddle two experts: gcd(norm_groups, channels per expert) groups per expert
    return nn.GroupNorm(groups * gcd(norm_groups, channels // groups), channels)


class PreActBlock(nn.Module):
    """Pre-activation basic block: ``x + conv(relu(norm(conv(relu(norm(x))))))`` (He et al. 2016b, Fig. 4e).

    Channel counts are totals over the ``groups`` independent experts (``groups`` divides both).
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, groups: int, norm: str, norm_groups: int
    ) -> None:
        super().__init__()
        self.norm1 = _norm(norm, in_channels, groups, norm_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, groups=groups, bias=False)
        self.norm2 = _norm(norm, out_channels, groups, norm_groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, groups=groups, bias=False)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride, groups=groups, bias=False)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.norm2(out)))
        return out + shortcut


class PreActResNet2d(nn.Module):
    """Pre-activation ResNet (ResNet-18 by default) 2D image encoder returning pooled features.

    With ``groups = g > 1`` the module holds ``g`` independent encoders (own weights and norms, no
    channel mixing) run as one grouped computation: the input is their images concatenated along
    channels and the output their pooled features concatenated, in group order. I2M2 uses this to run
    all unimodal experts in one pass.

    Architecture: stem -> 4 stages of ``blocks[i]`` pre-activation basic blocks (widths
    ``base_channels * (1, 2, 4, 8)``, stride 2 from stage 2 on) -> norm -> ReLU -> adaptive average
    pool to ``pool_size x pool_size`` -> flatten. Kaiming-normal conv init, norms at (1, 0).

    Args:
        in_channels: input channels of each encoder (1 for magnitude or phase, 2 for both).
        base_channels: width of the first stage (64 for ResNet-18; 4-8 builds a tiny test encoder).
        blocks: basic blocks per stage; ``(2, 2, 2, 2)`` is ResNet-18.
        stem: ``"cifar"`` (3x3 conv, stride 1: the CIFAR-style pre-act ResNet) or ``"imagenet"``
            (7x7 conv stride 2 + 3x3 max pool stride 2: 16x cheaper on large images).
        norm: ``"group"`` (GroupNorm, the I2M2 fastMRI default) or ``"batch"``.
        norm_groups: GroupNorm groups per encoder (reduced to ``gcd(norm_groups, channels)``).
        pool_size: side of the final adaptive average pool (1 = global pooling).
        groups: number of independent encoders ``g``.

    Shapes: ``(B, g * in_channels, H, W) -> (B, g * out_features)`` with
    ``out_features = 8 * base_channels * pool_size**2``.

    Raises:
        ValueError: on an unknown ``stem`` / ``norm``, non-positive sizes, or a wrong input channel count.

    Example::

        >>> encoder = PreActResNet2d(in_channels=2, base_channels=8)
        >>> encoder(torch.rand(2, 2, 32, 32)).shape
        torch.Size([2, 64])
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 64,
        blocks: Sequence[int] = (2, 2, 2, 2),
        stem: str = "cifar",
        norm: str = "group",
        norm_groups: int = 32,
        pool_size: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got '{stem}'")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got '{norm}'")
        if min(in_channels, base_channels, norm_groups, pool_size, groups) < 1 or not blocks or min(blocks) < 1:
            raise ValueError("in_channels, base_channels, norm_groups, pool_size, groups and blocks must be >= 1")
        self.in_channels, self.groups = in_channels, groups
        width = base_channels * groups
        if stem == "cifar":
            self.stem = nn.Conv2d(in_channels * groups, width, 3, 1, 1, groups=groups, bias=False)
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels * groups, width, 7, 2, 3, groups=groups, bias=False),
                nn.MaxPool2d(3, 2, 1),
            )
        stages, channels = [], width
        for i, depth in enumerate(blocks):
            out = width * 2**i
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                stages.append(PreActBlock(channels, out, stride, groups, norm, norm_groups))
                channels = out
        self.stages = nn.Sequential(*stages)
        self.final_norm = _norm(norm, channels, groups, norm_groups)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.out_features = channels // groups * pool_size**2
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He init, fan_out per group: each group starts like a separate network
                fan_out = m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, (nn.GroupNorm, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels * self.groups:
            raise ValueError(
                f"expected (B, {self.in_channels * self.groups}, H, W) input "
                f"({self.groups} x {self.in_channels} channels), got {tuple(x.shape)}"
            )
        x = torch.relu(self.final_norm(self.stages(self.stem(x))))
        # channels are group-contiguous, so the flattened features are too: (B, g * out_features)
        return self.pool(x).flatten(1)
