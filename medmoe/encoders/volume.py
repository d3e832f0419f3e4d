"""3D (or 2D) image encoder built from MONAI residual units that outputs tokens ``(b, n, d)``."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from monai.networks.blocks import ResidualUnit
from monai.networks.layers.factories import Pool
from torch import nn

from .pretrained import load_pretrained, prefix_key_map

__all__ = ["VolumeEncoder"]


class VolumeEncoder(nn.Module):
    """A small MONAI residual CNN whose feature map becomes ``num_tokens`` tokens of width ``hidden_size``.

    Stages of :class:`monai.networks.blocks.ResidualUnit` (each ``stride`` down-samples) give a feature map
    ``(b, C, *grid)``. Tokens come from one of two poolings:

    - ``token_grid`` set (``prod(token_grid) == num_tokens``): adaptive average pooling to that grid, each
      cell (row-major) is a token, projected ``C -> hidden_size`` by one shared linear layer, so the tokens keep
      coarse spatial position (e.g. left / right hemisphere for ``(2, 1, 1)``);
    - ``token_grid`` None: global average pooling, then a linear layer to ``num_tokens * hidden_size``
      (I2MoE's "patches" of a pooled embedding, as its ADNI encoders do).

    Any input size works as long as every spatial side is at least the total stride.

    Args:
        spatial_dims: 3 for volumes (2 for images).
        in_channels: input channels.
        hidden_size: token width ``d``.
        num_tokens: tokens per sample ``n``.
        channels: output channels of the stages.
        strides: stride of each stage (same length as ``channels``).
        num_res_units: residual units per stage (the first one strides).
        token_grid: pooled grid whose cells are the tokens (see above), or None.
        norm: MONAI norm of the units (``"instance"``, ``"batch"``, ``("group", {"num_groups": 4})``, ...).
        dropout_rate: dropout in the units.
        pretrained_weights: None, or a weights file (``.safetensors``, ``.pt``, ``.pth``, ``.bin``) to start from,
            loaded by :func:`~medmoe.encoders.load_pretrained` (every key must fit, else one error naming the file).
        pretrained_prefix: where this encoder's keys sit in that file, e.g. ``"encoders.encoders.mri."`` in a whole
            I2MoE checkpoint (the file's other keys are not used); ``""`` for a file of this encoder alone.

    Shapes: ``(b, in_channels, *spatial) -> (b, num_tokens, hidden_size)``.

    Raises:
        ValueError: on inconsistent options; at call time on a wrong number of dimensions or channels, or an
            input smaller than the total stride (naming the sizes).

    Example::

        >>> encoder = VolumeEncoder(3, 1, hidden_size=32, num_tokens=8, token_grid=(2, 2, 2))
        >>> encoder(torch.randn(2, 1, 24, 28, 24)).shape
        torch.Size([2, 8, 32])
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        hidden_size: int = 64,
        num_tokens: int = 1,
        channels: Sequence[int] = (8, 16, 32),
        strides: Sequence[int] = (2, 2, 2),
        num_res_units: int = 1,
        token_grid: Sequence[int] | None = None,
        norm: str | tuple = "instance",
        dropout_rate: float = 0.0,
        pretrained_weights: str | os.PathLike | None = None,
        pretrained_prefix: str = "",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(channels) == 0 or len(channels) != len(strides):
            raise ValueError(f"channels {list(channels)} and strides {list(strides)} must be non-empty, equal length")
        if num_tokens < 1 or num_res_units < 1:
            raise ValueError(f"num_tokens and num_res_units must be >= 1, got {num_tokens}, {num_res_units}")
        if token_grid is not None:
            token_grid = tuple(int(g) for g in token_grid)
            if len(token_grid) != spatial_dims or math.prod(token_grid) != num_tokens:
                raise ValueError(
                    f"token_grid {token_grid} must have {spatial_dims} sides whose product is num_tokens ({num_tokens})"
                )
        self.spatial_dims, self.in_channels = spatial_dims, in_channels
        self.hidden_size, self.num_tokens, self.token_grid = hidden_size, num_tokens, token_grid
        self.total_stride = math.prod(int(s) for s in strides)
        layers: list[nn.Module] = []
        previous = in_channels
        for out, stride in zip(channels, strides):
            for unit in range(num_res_units):
                layers.append(
                    ResidualUnit(
                        spatial_dims,
                        previous,
                        int(out),
                        strides=int(stride) if unit == 0 else 1,
                        norm=norm,
                        dropout=dropout_rate or None,
                    )
                )
                previous = int(out)
        self.features = nn.Sequential(*layers)
        if token_grid is not None:
            self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](token_grid)
            self.proj = nn.Linear(previous, hidden_size)
        else:
            self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
            self.proj = nn.Linear(previous, num_tokens * hidden_size)
        self.norm = nn.LayerNorm(hidden_size)
        if pretrained_weights is not None:
            load_pretrained(self, pretrained_weights, key_map=prefix_key_map(pretrained_prefix))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected (b, {self.in_channels}, {', '.join(['*'] * self.spatial_dims)}), got {tuple(x.shape)}"
            )
        if min(x.shape[2:]) < self.total_stride:
            raise ValueError(
                f"input spatial size {tuple(x.shape[2:])} is smaller than the encoder's total stride "
                f"{self.total_stride}; use a larger image or fewer / smaller strides"
            )
        pooled = self.pool(self.features(x))  # b c *grid
        if self.token_grid is not None:
            tokens = self.proj(pooled.flatten(2).transpose(1, 2))  # b n d
        else:
            tokens = self.proj(pooled.flatten(1)).view(x.shape[0], self.num_tokens, self.hidden_size)
        return self.norm(tokens)
