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
from torch.autograd.function import once_differentiable

from . import native_routing
from .experts import BatchedExperts, experts_backward, experts_forward
from .grouped import with_group_axis

__all__ = ["soft_routing", "SoftMoE", "TaskSoftMoE"]

_EPS = 1e-6  # as F.normalize(..., eps=1e-6): norms are clamped to >= _EPS


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _functorch_active() -> bool:
    """Whether a ``torch.func`` transform (vmap, grad, ...) is running: the fused function does not support them."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active and active())


def _slot_weights(phi: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """L2-normalised slot parameters times the learnable scale: ``(g, d, p)``."""
    return F.normalize(phi, dim=1, eps=_EPS) * scale.view(-1, 1, 1)


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
    inv_norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(_EPS).reciprocal()
    logits = torch.matmul(x, _slot_weights(phi, scale).unsqueeze(1)) * inv_norm  # g b m d, g 1 d p -> g b m p
    return logits.softmax(dim=2), logits.softmax(dim=3)


def _to_experts(t: torch.Tensor, g: int, e: int, s: int) -> torch.Tensor:
    """Slots ``(g b, e s, d) -> (g e, b s, d)``; a strided view (no copy) when ``g == s == 1``."""
    b, d = t.shape[0] // g, t.shape[-1]
    if g == 1 and s == 1:
        return t.transpose(0, 1)
    return t.view(g, b, e, s, d).transpose(1, 2).reshape(g * e, b * s, d)


def _to_batches(t: torch.Tensor, g: int, e: int, s: int) -> torch.Tensor:
    """Inverse of :func:`_to_experts`: ``(g e, b s, d) -> (g b, e s, d)``."""
    b, d = t.shape[1] // s, t.shape[-1]
    if g == 1 and s == 1:
        return t.transpose(0, 1)
    return t.view(g, e, b, s, d).transpose(1, 2).reshape(g * b, e * s, d)


class _FusedSoftMoE(torch.autograd.Function):
    """Soft MoE forward with a hand-written backward (same values as the autograd path).

    Forward, with ``L = g b`` (one matrix per group and sample), ``P = g e`` (one per expert)::

        logits   = (x . phi_n) / |x|                         g (b m) d, g d p -> g (b m) p
        dispatch = softmax over m, combine = softmax over p   L m p
        slots    = dispatch^T . x                            L p m, L m d -> L p d -> P (b s) d
        outputs  = experts(slots)                            P (b s) d -> L p d
        y        = combine . outputs                         L m p, L p d -> L m d

    The backward accumulates the three contributions to ``grad_x`` (dispatch, logits, norm) in
    one buffer (``baddbmm_``, ``addcmul_``) instead of autograd's separate token-sized tensors,
    and the slot layout changes are strided views when ``g == s == 1``. The expert weight gradients
    go into warm reusable memory (:class:`~medmoe.layers.grad_storage.GradientStorage`).

    On a CPU, when :func:`~medmoe.layers.native_routing.use_native_routing` says so, everything but the experts
    (logits, both softmaxes, dispatch, combine and their gradients) runs in the native kernels instead, one sample
    at a time (same values up to rounding); slots and expert outputs are then contiguous in the experts' layout.
    """

    @staticmethod
    def forward(ctx, x, phi_n, w1, b1, w2, b2, num_experts, num_slots, grad_storage=None, dropout=0.0):  # noqa: D102
        g, b, m, d = x.shape
        e, s = num_experts, num_slots
        ctx.native_routing = native_routing.use_native_routing(x, e * s)
        if ctx.native_routing:  # one sample at a time in cache; slots and outputs in the experts' layout
            x, phi_n = x.contiguous(), phi_n.contiguous()
            inv_norm, logits, dispatch, combine, slots = native_routing.routing_forward(x, phi_n, e, s, _EPS)
            out, pre, hidden, masks = experts_forward(slots, w1, b1, w2, b2, dropout)
            y = native_routing.combine_forward(combine, out, e, s)
        else:
            x_g = x.reshape(g, b * m, d)
            inv_norm = torch.linalg.vector_norm(x_g, dim=-1, keepdim=True).clamp_min_(_EPS).reciprocal_()
            logits = torch.bmm(x_g, phi_n).mul_(inv_norm)  # g (b m) p
            combine = logits.softmax(-1).view(g * b, m, -1)
            dispatch = logits.view(g * b, m, -1).softmax(1)
            x_l = x.reshape(g * b, m, d)
            slots = _to_experts(torch.bmm(dispatch.transpose(1, 2), x_l), g, e, s)  # raw tokens into slots
            out, pre, hidden, masks = experts_forward(slots, w1, b1, w2, b2, dropout)
            out = _to_batches(out, g, e, s)  # L p d
            y = torch.bmm(combine, out).view(g, b, m, d)
        ctx.save_for_backward(
            x, inv_norm, logits, phi_n, dispatch, combine, slots, pre, hidden, out, w1, w2, *masks or ()
        )
        ctx.num_experts, ctx.num_slots, ctx.grad_storage, ctx.dropout = e, s, grad_storage, dropout
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):  # noqa: D102
        x, inv_norm, logits, phi_n, dispatch, combine, slots, pre, hidden, out, w1, w2, *masks = ctx.saved_tensors
        e, s = ctx.num_experts, ctx.num_slots
        expert_args = (pre, hidden, w1, w2, ctx.grad_storage, masks or None, ctx.dropout)
        if ctx.native_routing:
            grad_out, grad_logits = native_routing.combine_backward(grad_y.contiguous(), combine, out, e, s)
            grad_slots, *grad_experts = experts_backward(grad_out, slots, *expert_args)
            del grad_out
            grad_x, grad_phi_n = native_routing.dispatch_backward(
                x, grad_slots.contiguous(), dispatch, logits, inv_norm, phi_n, grad_logits, e, s, _EPS
            )
            return grad_x, grad_phi_n, *grad_experts, None, None, None, None
        g, b, m, d = x.shape
        x_l, grad_y = x.reshape(g * b, m, d), grad_y.reshape(g * b, m, d)
        grad_combine = torch.bmm(grad_y, out.transpose(1, 2))  # L m d, L d p -> L m p
        grad_out = _to_experts(torch.bmm(combine.transpose(1, 2), grad_y), g, e, s)
        grad_slots, *grad_experts = experts_backward(grad_out, slots, *expert_args)
        del grad_out
        grad_slots = _to_batches(grad_slots, g, e, s)  # L p d
        grad_dispatch = torch.bmm(x_l, grad_slots.transpose(1, 2))  # L m d, L d p -> L m p
        grad_x = torch.bmm(dispatch, grad_slots)  # L m p, L p d -> L m d
        del grad_slots
        grad_logits = torch.ops.aten._softmax_backward_data(grad_dispatch, dispatch, 1, x.dtype)
        grad_logits += torch.ops.aten._softmax_backward_data(grad_combine, combine, 2, x.dtype)
        del grad_dispatch, grad_combine
        # logits = (x . phi_n) * inv_norm with inv_norm = 1 / max(|x|, eps): d inv_norm / dx = -x inv_norm^3
        grad_logits = grad_logits.view(g, b * m, -1)
        x_g, grad_x = x.reshape(g, b * m, d), grad_x.view(g, b * m, d)
        coef = (grad_logits * logits).sum(-1, keepdim=True).mul_(inv_norm).mul_(inv_norm).neg_()
        coef.masked_fill_(inv_norm >= 1.0 / _EPS, 0.0)  # norm clamped at eps: constant, no gradient
        grad_logits.mul_(inv_norm)  # now the gradient of x . phi_n
        grad_phi_n = torch.bmm(grad_logits.transpose(1, 2), x_g).transpose(1, 2)  # (g p (b m), g (b m) d)^T: g d p
        grad_x.baddbmm_(grad_logits, phi_n.transpose(1, 2)).addcmul_(x_g, coef)
        return grad_x.view(g, b, m, d), grad_phi_n, *grad_experts, None, None, None, None


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
    backward (the same values as the plain autograd path, ``_forward_autograd``, up to rounding; with dropout, the
    same masks for the same random state). ``benchmarks/soft_moe.py`` measures it against ``soft-moe-pytorch`` and
    a dense MLP.

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
        if _autocast_enabled(x.device.type) or _functorch_active():
            y = self._forward_autograd(x)
        else:
            ex = self.experts
            phi_n = _slot_weights(self.router.phi, self.router.scale)
            dropout = ex.drop.p if ex.dropout_active else 0.0
            y = _FusedSoftMoE.apply(
                x, phi_n, ex.w1, ex.b1, ex.w2, ex.b2, self.num_experts, self.num_slots, ex.grad_storage, dropout
            )
        return y.squeeze(0) if squeeze else y

    def _forward_autograd(self, x: torch.Tensor) -> torch.Tensor:
        """Plain autograd version of the fused path (used under autocast and ``torch.func``): ``(g, b, m, d)``."""
        g, b, _, d = x.shape
        e, s = self.num_experts, self.num_slots
        dispatch, combine = soft_routing(x, self.router.phi, self.router.scale)
        slots = torch.matmul(dispatch.transpose(2, 3), x)  # g b p d: raw tokens into slots
        outputs = _to_batches(self.experts(_to_experts(slots.view(g * b, e * s, d), g, e, s)), g, e, s)
        return torch.matmul(combine, outputs.view(g, b, e * s, d))  # g b m p, g b p d -> g b m d


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
