"""Multi-head self-attention with optional per-group projections (one modality per group)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .grouped import GroupedLinear, with_group_axis

__all__ = ["SelfAttention"]


class SelfAttention(nn.Module):
    """Multi-head self-attention (scaled dot product), tokens attend within their own group.

    Args:
        hidden_size: token width ``d`` (divisible by ``num_heads``).
        num_heads: attention heads.
        num_groups: independent projection weights stacked on a leading group axis.
        dropout_rate: dropout on the output projection (none on the attention weights, as timm's
            default, which keeps the fused attention kernel).
        qkv_bias: bias on the query/key/value projection.

    Shapes: ``(b, m, d) -> (b, m, d)`` when ``num_groups == 1``; ``(g, b, m, d) -> (g, b, m, d)``.

    Raises:
        ValueError: if ``hidden_size`` is not divisible by ``num_heads``.
    """

    def __init__(
        self, hidden_size: int, num_heads: int, num_groups: int = 1, dropout_rate: float = 0.0, qkv_bias: bool = True
    ) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.num_groups = num_heads, num_groups
        self.qkv = GroupedLinear(hidden_size, 3 * hidden_size, num_groups, bias=qkv_bias)
        self.proj = GroupedLinear(hidden_size, hidden_size, num_groups)
        self.drop = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, squeeze = with_group_axis(x, self.num_groups)
        g, b, m, d = x.shape
        q, k, v = self.qkv(x).view(g * b, m, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(g, b, m, d)
        y = self.drop(self.proj(y))
        return y.squeeze(0) if squeeze else y
