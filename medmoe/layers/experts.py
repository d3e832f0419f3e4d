"""Expert MLPs batched along an expert axis (never a Python loop over experts)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .grad_storage import GradientStorage

__all__ = ["BatchedExperts", "to_batches", "to_experts"]


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
        self.grad_storage = GradientStorage()  # warm memory for the fused backward's weight gradients

    @property
    def dropout_active(self) -> bool:
        """Whether dropout changes the output now (training with a rate > 0)."""
        return self.training and self.drop.p > 0

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        hidden = self.drop(F.gelu(torch.baddbmm(self.b1, slots, self.w1)))
        return self.drop(torch.baddbmm(self.b2, hidden, self.w2))


def to_experts(slots: torch.Tensor, groups: int, experts: int, slots_per_expert: int) -> torch.Tensor:
    """Slots per sample to rows per expert, :class:`BatchedExperts`' input layout.

    ``(g b, e s, d) -> (g e, b s, d)``: expert ``i`` of group ``k`` gets its ``s`` slots of every sample. A strided
    view (no copy) when ``g == s == 1``.
    """
    b, d = slots.shape[0] // groups, slots.shape[-1]
    if groups == 1 and slots_per_expert == 1:
        return slots.transpose(0, 1)
    e, s = experts, slots_per_expert
    return slots.view(groups, b, e, s, d).transpose(1, 2).reshape(groups * e, b * s, d)


def to_batches(rows: torch.Tensor, groups: int, experts: int, slots_per_expert: int) -> torch.Tensor:
    """Inverse of :func:`to_experts`: ``(g e, b s, d) -> (g b, e s, d)``."""
    b, d = rows.shape[1] // slots_per_expert, rows.shape[-1]
    if groups == 1 and slots_per_expert == 1:
        return rows.transpose(0, 1)
    e, s = experts, slots_per_expert
    return rows.view(groups, e, b, s, d).transpose(1, 2).reshape(groups * b, e * s, d)
