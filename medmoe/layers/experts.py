"""Expert MLPs batched along an expert axis (never a Python loop over experts)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BatchedExperts"]


class BatchedExperts(nn.Module):
    """``num_groups x num_experts`` two-layer GELU MLPs evaluated with two ``baddbmm`` calls.

    Args:
        hidden_size: token width ``d``.
        mlp_dim: hidden width ``h`` of each expert.
        num_experts: experts per group ``e``.
        num_groups: independent groups (e.g. modalities), each with its own experts.
        dropout_rate: dropout after the activation and after the output projection.

    Shapes: ``(g * e, slots, d) -> (g * e, slots, d)``: every expert processes its own slots.

    Example::

        >>> experts = BatchedExperts(hidden_size=8, mlp_dim=16, num_experts=4)
        >>> experts(torch.randn(4, 3, 8)).shape
        torch.Size([4, 3, 8])
    """

    def __init__(
        self, hidden_size: int, mlp_dim: int, num_experts: int, num_groups: int = 1, dropout_rate: float = 0.0
    ) -> None:
        super().__init__()
        n = num_groups * num_experts
        b1, b2 = 1.0 / math.sqrt(hidden_size), 1.0 / math.sqrt(mlp_dim)
        self.w1 = nn.Parameter(torch.empty(n, hidden_size, mlp_dim).uniform_(-b1, b1))
        self.b1 = nn.Parameter(torch.zeros(n, 1, mlp_dim))
        self.w2 = nn.Parameter(torch.empty(n, mlp_dim, hidden_size).uniform_(-b2, b2))
        self.b2 = nn.Parameter(torch.zeros(n, 1, hidden_size))
        self.drop = nn.Dropout(dropout_rate)

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        hidden = self.drop(F.gelu(torch.baddbmm(self.b1, slots, self.w1)))
        return self.drop(torch.baddbmm(self.b2, hidden, self.w2))
