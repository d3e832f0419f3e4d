"""Soft MoE (Puigcerver et al., 2023) and its task-slot variant used by M4oE's MToE.

Semantics follow google-research/vmoe's ``SoftRouter`` (METHODS.md, "Soft MoE")::

    logits   = normalize(x) . normalize(phi) * scale     g b m d, g d p -> g b m p   (routing)
    dispatch = softmax of logits over tokens m           every slot is a convex mix of tokens
    combine  = softmax of logits over all slots p        every token is a convex mix of slot outputs
    slots    = dispatch^T . x                            g b m p, g b m d -> g b p d (dispatch; raw tokens)
    outputs  = experts(slots)                            (g e) (b s) d: expert i takes its s slots of every sample
    y        = combine . outputs                         g b m p, g b p d -> g b m d (combine)

Axis legend: ``g`` group (modality), ``b`` batch, ``m`` tokens, ``d`` width, ``e`` experts, ``s`` slots per expert,
``p = e s`` all slots, ``t`` tasks. ``scale`` is a learnable scalar (init 1), ``phi`` the slot parameters.

``SoftMoE`` computes this in :meth:`SoftMoE._forward_autograd` (below, plain PyTorch) or, where
:func:`~medmoe.layers.native.fused_applies` (no autocast, no ``torch.func``), as one fused autograd function with a
hand-written backward and, on a CPU, native C kernels: :func:`~medmoe.layers.native.fused_soft_moe`, same values up to
rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import native
from .experts import BatchedExperts, to_batches, to_experts
from .grouped import with_group_axis

__all__ = ["NORM_EPS", "SoftMoE", "TaskSoftMoE", "slot_weights", "soft_routing"]

NORM_EPS = 1e-6
"""As ``F.normalize(..., eps=1e-6)``: token and slot-parameter norms are clamped to at least this."""


def slot_weights(phi: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """L2-normalised slot parameters ``phi`` ``(g, d, p)`` times the learnable scale ``(g,)``: ``(g, d, p)``."""
    return F.normalize(phi, dim=1, eps=NORM_EPS) * scale.view(-1, 1, 1)


def soft_routing(x: torch.Tensor, phi: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft MoE dispatch and combine weights (Puigcerver et al. 2023, Alg. 1; vmoe ``SoftRouter``).

    ``logits = normalize(x) . normalize(phi) * scale``, computed as ``(x . phi_n) / |x|`` so that no
    normalised copy of the tokens is made.

    Args:
        x: tokens ``(g, b, m, d)``.
        phi: slot parameters ``(g, d, p)``.
        scale: scalar logit scale per group ``(g,)``.

    Returns:
        ``(dispatch, combine)``, both ``(g, b, m, p)``: ``dispatch`` sums to 1 over ``m``,
        ``combine`` sums to 1 over ``p``.
    """
    inv_norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(NORM_EPS).reciprocal()
    logits = torch.matmul(x, slot_weights(phi, scale).unsqueeze(1)) * inv_norm  # g b m d, g 1 d p -> g b m p
    return logits.softmax(dim=2), logits.softmax(dim=3)


class _SoftRouterParams(nn.Module):
    """Slot parameters ``phi (g, d, p)`` (lecun-normal, as vmoe) and a scalar ``scale`` per group."""

    def __init__(self, hidden_size: int, num_slots_total: int, num_groups: int) -> None:
        super().__init__()
        self.phi = nn.Parameter(torch.randn(num_groups, hidden_size, num_slots_total) * hidden_size**-0.5)
        self.scale = nn.Parameter(torch.ones(num_groups))


class SoftMoE(nn.Module):
    """Soft mixture of experts; a drop-in replacement for a transformer block's MLP.

    Puigcerver et al., "From Sparse to Soft Mixtures of Experts", ICLR 2024, Sec. 2.
    With ``num_groups > 1`` every group (modality) has its own router and experts and all groups
    run in the same batched matmuls (M4oE's per-modality MSoE, Sec. 3.2).

    Args:
        hidden_size: token width ``d``.
        mlp_dim: hidden width of each expert MLP.
        num_experts: experts per group ``e``.
        num_slots: slots per expert ``s``.
        num_groups: independent routers + experts stacked on a leading group axis.
        dropout_rate: dropout inside the experts.

    Shapes: ``(b, m, d) -> (b, m, d)`` when ``num_groups == 1``; ``(g, b, m, d) -> (g, b, m, d)``.

    Without autocast or ``torch.func`` transforms the layer runs as one autograd function with a hand-written
    backward (:mod:`medmoe.layers.native`: the same values as the plain path, ``_forward_autograd``, up to
    rounding; with dropout, the same masks for the same random state). ``benchmarks/soft_moe.py`` measures it
    against ``soft-moe-pytorch`` and a dense MLP.

    Example::

        >>> moe = SoftMoE(hidden_size=32, mlp_dim=64, num_experts=4, num_slots=2)
        >>> moe(torch.randn(2, 10, 32)).shape
        torch.Size([2, 10, 32])
    """

    def __init__(
        self,
        hidden_size: int,
        mlp_dim: int,
        num_experts: int = 4,
        num_slots: int = 1,
        num_groups: int = 1,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if num_experts < 1 or num_slots < 1 or num_groups < 1:
            raise ValueError(
                f"num_experts, num_slots, num_groups must be >= 1, got {num_experts}, {num_slots}, {num_groups}"
            )
        self.num_experts, self.num_slots, self.num_groups = num_experts, num_slots, num_groups
        self.router = _SoftRouterParams(hidden_size, num_experts * num_slots, num_groups)
        self.experts = BatchedExperts(hidden_size, mlp_dim, num_experts, num_groups, dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, squeeze = with_group_axis(x, self.num_groups)
        if native.fused_applies(x):
            phi_n = slot_weights(self.router.phi, self.router.scale)
            y = native.fused_soft_moe(x, phi_n, self.experts, self.num_experts, self.num_slots, NORM_EPS)
        else:
            y = self._forward_autograd(x)
        return y.squeeze(0) if squeeze else y

    def _forward_autograd(self, x: torch.Tensor) -> torch.Tensor:
        """The algorithm in plain PyTorch (the module docstring's six lines): ``(g, b, m, d) -> (g, b, m, d)``."""
        g, b, _, d = x.shape
        e, s = self.num_experts, self.num_slots
        dispatch, combine = soft_routing(x, self.router.phi, self.router.scale)  # g b m p, both
        slots = torch.einsum("gbmp,gbmd->gbpd", dispatch, x)
        outputs = self.experts(to_experts(slots.reshape(g * b, e * s, d), g, e, s))  # (g e) (b s) d
        outputs = to_batches(outputs, g, e, s).view(g, b, e * s, d)
        return torch.einsum("gbmp,gbpd->gbmd", combine, outputs)


class TaskSoftMoE(nn.Module):
    """M4oE's modality-task Soft MoE (MToE): one slot per (expert, task) and task embeddings.

    M4oE, Sec. 3.2, Eqs. 1-2: ``phi`` has shape ``d x e x t``; dispatch is a softmax
    over all tokens of all modalities (Eq. 1); the learnable task embedding ``TE_k`` is added to
    every slot input of task ``k`` (shared across experts); combine is a softmax over
    ``(expert, task)`` jointly (Eq. 2) and task ``k``'s features use only the ``k``-th slice.

    Args:
        hidden_size: token width ``d``.
        mlp_dim: hidden width of each expert MLP.
        num_experts: experts ``e``.
        num_tasks: tasks ``t``.
        dropout_rate: dropout inside the experts.

    Shapes: ``(b, m, d) -> ((b, t, m, d), (b, m, e, t))``: the task features and this call's combine
    weights (with gradient), for the mutual-information loss.

    Example::

        >>> mtoe = TaskSoftMoE(hidden_size=32, mlp_dim=64, num_experts=4, num_tasks=3)
        >>> mtoe(torch.randn(2, 10, 32))[0].shape
        torch.Size([2, 3, 10, 32])
    """

    def __init__(
        self, hidden_size: int, mlp_dim: int, num_experts: int, num_tasks: int, dropout_rate: float = 0.0
    ) -> None:
        super().__init__()
        if num_experts < 1 or num_tasks < 1:
            raise ValueError(f"num_experts and num_tasks must be >= 1, got {num_experts} and {num_tasks}")
        self.num_experts, self.num_tasks = num_experts, num_tasks
        self.router = _SoftRouterParams(hidden_size, num_experts * num_tasks, 1)
        self.task_embedding = nn.Parameter(torch.randn(num_tasks, hidden_size) * 0.02)
        self.experts = BatchedExperts(hidden_size, mlp_dim, num_experts, 1, dropout_rate)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 3:
            raise ValueError(f"TaskSoftMoE expects tokens (batch, tokens, dim), got {tuple(x.shape)}")
        b, m, d = x.shape
        e, t = self.num_experts, self.num_tasks
        dispatch, combine = soft_routing(x.unsqueeze(0), self.router.phi, self.router.scale)
        dispatch, combine = dispatch[0], combine[0]  # b m (e t)
        slots = torch.matmul(dispatch.transpose(1, 2), x).view(b, e, t, d) + self.task_embedding
        outputs = self.experts(slots.transpose(0, 1).reshape(e, b * t, d)).view(e, b, t, d)
        combine = combine.view(b, m, e, t)
        return torch.einsum("bmet,ebtd->btmd", combine, outputs), combine
