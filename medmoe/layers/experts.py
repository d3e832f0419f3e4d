"""Expert MLPs batched along an expert axis (never a Python loop over experts)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import native_experts
from .grad_storage import GradientStorage

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
        self.grad_storage = GradientStorage()  # warm memory for the fused backward's weight gradients

    @property
    def dropout_active(self) -> bool:
        """Whether dropout changes the output now (training with a rate > 0)."""
        return self.training and self.drop.p > 0

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        hidden = self.drop(F.gelu(torch.baddbmm(self.b1, slots, self.w1)))
        return self.drop(torch.baddbmm(self.b2, hidden, self.w2))


def experts_forward(
    slots: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor,
    w2: torch.Tensor,
    b2: torch.Tensor,
    dropout: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """:class:`BatchedExperts`' forward, returning what :func:`experts_backward` needs.

    For hand-written backward passes (``SoftMoE``'s fused path). ``slots`` ``(n, r, d)`` may be a
    strided view (rows with a stride other than ``d``): ``baddbmm`` reads it in place. On a CPU with few
    rows per expert and weights too large to stay in cache
    (:func:`~medmoe.layers.native_experts.use_native_forward`) both layers run the native kernel, which
    streams each weight matrix once (same values up to rounding).

    Args:
        dropout: drop probability after the GELU and after the output projection (training). The masks are drawn
            as ``nn.Dropout`` draws them, in the same order as :class:`BatchedExperts`, so the same random state
            gives the same values.

    Returns:
        ``(out, pre, hidden, masks)``: the output ``(n, r, d)``, the pre-activation and the (dropped) GELU
        output, both ``(n, r, h)``, and the two boolean keep masks (``None`` without dropout).
    """
    n, r, _ = slots.shape
    native = native_experts.use_native_forward(slots, r, w1)  # few rows, weights beyond cache, CPU
    if native:
        pre = native_experts.linear_forward(slots, w1, b1, slots.new_empty(n, r, w1.shape[2]))
    else:
        pre = torch.baddbmm(b1, slots, w1)  # n r d, n d h -> n r h
    hidden, masks = F.gelu(pre), None
    if dropout > 0:
        hidden, keep_hidden = torch.ops.aten.native_dropout(hidden, dropout, True)  # what nn.Dropout runs
    if native:
        out = native_experts.linear_forward(hidden, w2, b2, hidden.new_empty(n, r, w2.shape[2]))
    else:
        out = torch.baddbmm(b2, hidden, w2)
    if dropout > 0:
        out, keep_out = torch.ops.aten.native_dropout(out, dropout, True)
        masks = (keep_hidden, keep_out)
    return out, pre, hidden, masks


def _keep_scale(dropout: float) -> float:
    """The factor kept values are multiplied by, as ``native_dropout`` computes it (0 when everything is dropped)."""
    return 0.0 if dropout >= 1 else 1.0 / (1.0 - dropout)


def experts_backward(
    grad_out: torch.Tensor,
    slots: torch.Tensor,
    pre: torch.Tensor,
    hidden: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    storage: GradientStorage | None = None,
    masks: tuple[torch.Tensor, torch.Tensor] | None = None,
    dropout: float = 0.0,
) -> tuple[torch.Tensor, ...]:
    """Gradients of :func:`experts_forward`: six ``bmm`` calls, one GELU backward written in place.

    With ``storage``, the two weight gradients are written into its warm buffers when they are free
    (see :mod:`medmoe.layers.grad_storage`) instead of freshly allocated memory. On a CPU with few rows
    per expert (:func:`~medmoe.layers.native_experts.use_native`) the two layers' gradients come from
    the native kernel instead, one pass over each weight matrix (same values up to rounding).

    With dropout, ``masks`` and ``dropout`` are :func:`experts_forward`'s (``hidden`` is the dropped activation).

    Returns:
        ``(grad_slots, grad_w1, grad_b1, grad_w2, grad_b2)``.
    """
    if masks is not None:
        grad_out = torch.ops.aten.native_dropout_backward(grad_out, masks[1], _keep_scale(dropout))
    native = native_experts.use_native(grad_out, grad_out.shape[1])
    grad_pre, grad_w2, grad_b2 = _linear_backward(grad_out, hidden, w2, "w2", storage, native)  # n r d -> n r h
    if masks is not None:
        grad_pre.mul_(masks[0]).mul_(_keep_scale(dropout))  # grad_pre is a new tensor: in place is safe
    torch.ops.aten.gelu_backward.grad_input(grad_pre, pre, grad_input=grad_pre)  # in place: no new n r h buffer
    grad_slots, grad_w1, grad_b1 = _linear_backward(grad_pre, slots, w1, "w1", storage, native)  # n r h -> n r d
    return grad_slots, grad_w1, grad_b1, grad_w2, grad_b2


def _linear_backward(
    grad: torch.Tensor,
    inputs: torch.Tensor,
    weight: torch.Tensor,
    name: str,
    storage: GradientStorage | None,
    native: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``inputs . weight + bias`` per expert: ``(grad_inputs, grad_weight, grad_bias)``.

    ``grad_inputs`` is a new contiguous tensor (the caller may write into it); ``grad_weight`` goes into
    ``storage``'s buffer for ``name`` when given. ``native``: one pass of the native kernel instead of two
    ``bmm`` and a sum.
    """
    n, r, _ = grad.shape
    grad_weight = None if storage is None else storage.take(name, tuple(weight.shape), weight.dtype, weight.device)
    if native:
        grad_weight = torch.empty_like(weight) if grad_weight is None else grad_weight  # weights are contiguous
        grad_inputs, grad_bias = grad.new_empty(n, r, weight.shape[1]), grad.new_empty(n, 1, weight.shape[2])
        native_experts.linear_backward(grad, inputs, weight, grad_inputs, grad_weight, grad_bias)
        return grad_inputs, grad_weight, grad_bias
    grad_weight = torch.bmm(inputs.transpose(1, 2), grad, out=grad_weight)  # n K r, n r N -> n K N
    return torch.bmm(grad, weight.transpose(1, 2)), grad_weight, grad.sum(1, keepdim=True)
