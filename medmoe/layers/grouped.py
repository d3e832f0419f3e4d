"""Layers with a leading group axis: one set of parameters per group, one batched kernel for all.

M4oE gives every modality its own MSoE parameters. Stacking the modalities on a group axis
``g`` lets all of them run as one ``bmm`` instead of a Python loop over modalities.

Axis legend used throughout medmoe: ``g`` group (modality), ``b`` batch, ``n``/``m`` tokens,
``d`` hidden size, ``e`` experts, ``s`` slots per expert, ``t`` tasks, ``h`` expert hidden size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GroupedLinear", "GroupedLayerNorm", "with_group_axis"]


def with_group_axis(x: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, bool]:
    """Return ``x`` as ``(g, b, n, d)`` and whether a group axis was added.

    A layer built with ``num_groups=1`` accepts plain ``(b, n, d)`` tokens too.

    Raises:
        ValueError: if ``x`` is neither ``(b, n, d)`` (only when ``num_groups == 1``) nor
            ``(num_groups, b, n, d)``.
    """
    if x.dim() == 3 and num_groups == 1:
        return x.unsqueeze(0), True
    if x.dim() == 4 and x.shape[0] == num_groups:
        return x, False
    raise ValueError(
        f"expected tokens of shape ({num_groups}, batch, tokens, dim)"
        + (" or (batch, tokens, dim)" if num_groups == 1 else "")
        + f", got {tuple(x.shape)}"
    )


class GroupedLinear(nn.Module):
    """A linear layer per group, applied to all groups in one batched matmul.

    Args:
        in_features: input width ``d``.
        out_features: output width.
        num_groups: number of groups ``g`` (each has its own weight and bias).
        bias: add a learnable bias.

    Shapes: ``(g, *, in_features) -> (g, *, out_features)``.

    Example::

        >>> layer = GroupedLinear(8, 16, num_groups=4)
        >>> layer(torch.randn(4, 2, 5, 8)).shape
        torch.Size([4, 2, 5, 16])
    """

    def __init__(self, in_features: int, out_features: int, num_groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.num_groups = in_features, out_features, num_groups
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(num_groups, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_groups, 1, out_features).uniform_(-bound, bound)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(self.num_groups, -1, self.in_features)
        out = torch.bmm(flat, self.weight) if self.bias is None else torch.baddbmm(self.bias, flat, self.weight)
        return out.view(*shape[:-1], self.out_features)


class GroupedLayerNorm(nn.Module):
    """LayerNorm over the last axis with a separate affine transform per group.

    Shapes: ``(g, *, dim) -> (g, *, dim)``.
    """

    def __init__(self, dim: int, num_groups: int = 1, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(num_groups, dim))
        self.bias = nn.Parameter(torch.zeros(num_groups, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        view = (x.shape[0],) + (1,) * (x.dim() - 2) + (self.dim,)
        return F.layer_norm(x, (self.dim,), eps=self.eps) * self.weight.view(view) + self.bias.view(view)
