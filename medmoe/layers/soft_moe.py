"""Soft MoE (Puigcerver et al., 2023) and its task-slot variant used by M4oE's MToE.

Semantics follow google-research/vmoe's ``SoftRouter`` (METHODS.md, "Soft MoE"):

* logits = (L2-normalised x) . (L2-normalised phi) x a learnable scalar ``scale`` (init 1);
* dispatch = softmax of the logits over **tokens**: every slot is a convex mix of tokens;
* combine = softmax of the logits over **all (expert, slot) pairs**: every token is a convex
  mix of slot outputs;
* the experts receive the dispatched **raw** (un-normalised) tokens.

Axis legend: ``g`` group, ``b`` batch, ``m`` tokens, ``d`` width, ``e`` experts, ``s`` slots per
expert, ``t`` tasks, ``p = e * s`` all slots.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .experts import BatchedExperts
from .grouped import with_group_axis

__all__ = ["soft_routing", "SoftMoE", "TaskSoftMoE"]


def soft_routing(x: torch.Tensor, phi: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft MoE dispatch and combine weights (Puigcerver et al. 2023, Alg. 1; vmoe ``SoftRouter``).

    Args:
        x: tokens ``(g, b, m, d)``.
        phi: slot parameters ``(g, d, p)``.
        scale: scalar logit scale per group ``(g,)``.

    Returns:
        ``(dispatch, combine)``, both ``(g, b, m, p)``: ``dispatch`` sums to 1 over ``m``,
        ``combine`` sums to 1 over ``p``.
    """
    x_n = F.normalize(x, dim=-1, eps=1e-6)
    phi_n = F.normalize(phi, dim=1, eps=1e-6) * scale.view(-1, 1, 1)
    logits = torch.matmul(x_n, phi_n.unsqueeze(1))  # g b m d, g 1 d p -> g b m p
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
        g, b, _, d = x.shape
        e, s = self.num_experts, self.num_slots
        dispatch, combine = soft_routing(x, self.router.phi, self.router.scale)
        slots = torch.matmul(dispatch.transpose(2, 3), x)  # g b p d: raw tokens into slots
        slots = slots.view(g, b, e, s, d).transpose(1, 2).reshape(g * e, b * s, d)
        outputs = self.experts(slots).view(g, e, b, s, d).transpose(1, 2).reshape(g, b, e * s, d)
        y = torch.matmul(combine, outputs)  # g b m p, g b p d -> g b m d
        return y.squeeze(0) if squeeze else y


class TaskSoftMoE(nn.Module):
    """M4oE's modality-task Soft MoE (MToE): one slot per (expert, task) and task embeddings.

    Jiang et al., M4oE, Sec. 3.2, Eqs. 1-2: ``phi`` has shape ``d x e x t``; dispatch is a softmax
    over all tokens of all modalities (Eq. 1); the learnable task embedding ``TE_k`` is added to
    every slot input of task ``k`` (shared across experts); combine is a softmax over
    ``(expert, task)`` jointly (Eq. 2) and task ``k``'s features use only the ``k``-th slice.

    Args:
        hidden_size: token width ``d``.
        mlp_dim: hidden width of each expert MLP.
        num_experts: experts ``e``.
        num_tasks: tasks ``t``.
        dropout_rate: dropout inside the experts.

    Shapes: ``(b, m, d) -> (b, t, m, d)``. After every forward, ``last_combine`` holds the
    combine weights ``(b, m, e, t)`` (with gradient) for the mutual-information loss.

    Example::

        >>> mtoe = TaskSoftMoE(hidden_size=32, mlp_dim=64, num_experts=4, num_tasks=3)
        >>> mtoe(torch.randn(2, 10, 32)).shape
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
        self.last_combine: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"TaskSoftMoE expects tokens (batch, tokens, dim), got {tuple(x.shape)}")
        b, m, d = x.shape
        e, t = self.num_experts, self.num_tasks
        dispatch, combine = soft_routing(x.unsqueeze(0), self.router.phi, self.router.scale)
        dispatch, combine = dispatch[0], combine[0]  # b m (e t)
        slots = torch.matmul(dispatch.transpose(1, 2), x).view(b, e, t, d) + self.task_embedding
        outputs = self.experts(slots.transpose(0, 1).reshape(e, b * t, d)).view(e, b, t, d)
        combine = combine.view(b, m, e, t)
        self.last_combine = combine
        return torch.einsum("bmet,ebtd->btmd", combine, outputs)
