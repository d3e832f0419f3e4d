"""Dense MLP with the same constructor words as :class:`~medmoe.layers.SoftMoE` (an injectable ``mlp_layer``)."""

from __future__ import annotations

import torch
from torch import nn

from .grouped import GroupedLinear, with_group_axis

__all__ = ["MLP"]


class MLP(nn.Module):
    """Two-layer GELU MLP, optionally one per group, for transformer blocks.

    Args:
        hidden_size: token width ``d``.
        mlp_dim: hidden width.
        num_groups: independent MLPs stacked on a leading group axis.
        dropout_rate: dropout after the activation and the output projection.

    Shapes: ``(b, m, d) -> (b, m, d)`` when ``num_groups == 1``; ``(g, b, m, d) -> (g, b, m, d)``.
    """

    def __init__(self, hidden_size: int, mlp_dim: int, num_groups: int = 1, dropout_rate: float = 0.0) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.fc1 = GroupedLinear(hidden_size, mlp_dim, num_groups)
        self.fc2 = GroupedLinear(mlp_dim, hidden_size, num_groups)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, squeeze = with_group_axis(x, self.num_groups)
        y = self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
        return y.squeeze(0) if squeeze else y
