"""Pre-LN transformer (ViT) block whose MLP is injected: a dense MLP or a Soft MoE."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..layers import MLP, GroupedLayerNorm, SelfAttention

__all__ = ["TransformerBlock"]


class TransformerBlock(nn.Module):
    """``x += attn(LN x); x += mlp(LN x)`` with the MLP built by ``mlp_layer`` (timm's injection style).

    Args:
        hidden_size: token width ``d``.
        mlp_dim: hidden width of the MLP (of each expert for an MoE layer).
        num_heads: attention heads.
        mlp_layer: a callable ``(hidden_size=, mlp_dim=, num_groups=, dropout_rate=) -> nn.Module``,
            e.g. :class:`~medmoe.layers.MLP` or ``functools.partial(SoftMoE, num_experts=8)``.
        num_groups: independent parameters per group (modality) on a leading group axis.
        dropout_rate: dropout in attention and MLP.

    Shapes: ``(b, m, d) -> (b, m, d)`` when ``num_groups == 1``; ``(g, b, m, d) -> (g, b, m, d)``.

    Example::

        >>> from functools import partial
        >>> from medmoe.layers import SoftMoE
        >>> block = TransformerBlock(32, 64, 4, mlp_layer=partial(SoftMoE, num_experts=4))
        >>> block(torch.randn(2, 10, 32)).shape
        torch.Size([2, 10, 32])
    """

    def __init__(
        self,
        hidden_size: int,
        mlp_dim: int,
        num_heads: int,
        mlp_layer: Callable[..., nn.Module] = MLP,
        num_groups: int = 1,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.norm1 = GroupedLayerNorm(hidden_size, num_groups)
        self.attn = SelfAttention(hidden_size, num_heads, num_groups, dropout_rate)
        self.norm2 = GroupedLayerNorm(hidden_size, num_groups)
        self.mlp = mlp_layer(hidden_size=hidden_size, mlp_dim=mlp_dim, num_groups=num_groups, dropout_rate=dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeeze = x.dim() == 3
        if squeeze:
            x = x.unsqueeze(0)
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x.squeeze(0) if squeeze else x
