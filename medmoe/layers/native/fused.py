"""Soft MoE as one autograd function with a hand-written backward (same values as the plain autograd path).

:func:`fused_soft_moe` computes what ``SoftMoE._forward_autograd`` (``medmoe/layers/soft_moe.py``) computes, with
fewer token-sized buffers, the expert weight gradients in warm memory and, on a CPU, the native kernels where they
take the sizes (:mod:`.routing`, :mod:`.experts`). :func:`fused_applies` says when it may run.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ..experts import BatchedExperts, to_batches, to_experts
from . import routing
from .experts import experts_backward, experts_forward

__all__ = ["FusedSoftMoE", "fused_applies", "fused_soft_moe"]


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _functorch_active() -> bool:
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active and active())


def fused_applies(x: torch.Tensor) -> bool:
    """Whether :func:`fused_soft_moe` may compute the layer for ``x``: not under autocast (the hand-written backward
    keeps one dtype) and not inside a ``torch.func`` transform (vmap, grad, ...), which a custom
    ``autograd.Function`` without ``vmap`` support cannot take; and not while TorchScript / ONNX export traces the
    model (``medmoe.export``), so an exported graph holds plain PyTorch operators only."""
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    return not (_autocast_enabled(x.device.type) or _functorch_active())


def fused_soft_moe(
    x: torch.Tensor, phi_n: torch.Tensor, experts: BatchedExperts, num_experts: int, num_slots: int, eps: float
) -> torch.Tensor:
    """Soft MoE on tokens ``x`` ``(g, b, m, d)`` with slot weights ``phi_n`` ``(g, d, e s)`` (normalised and scaled):
    ``(g, b, m, d)``. ``eps`` clamps the token norms as ``F.normalize`` does. Dropout as ``experts`` is set."""
    dropout = experts.drop.p if experts.dropout_active else 0.0
    args = (experts.w1, experts.b1, experts.w2, experts.b2, num_experts, num_slots, eps, experts.grad_storage)
    return FusedSoftMoE.apply(x, phi_n, *args, dropout)


class FusedSoftMoE(torch.autograd.Function):
    """Soft MoE forward with a hand-written backward (same values as the autograd path up to rounding).

    Forward, with ``L = g b`` (one matrix per group and sample), ``P = g e`` (one per expert)::

        logits   = (x . phi_n) / |x|                         g (b m) d, g d p -> g (b m) p
        dispatch = softmax over m, combine = softmax over p   L m p
        slots    = dispatch^T . x                            L p m, L m d -> L p d -> P (b s) d
        outputs  = experts(slots)                            P (b s) d -> L p d
        y        = combine . outputs                         L m p, L p d -> L m d

    The backward accumulates the three contributions to ``grad_x`` (dispatch, logits, norm) in one buffer
    (``baddbmm_``, ``addcmul_``) instead of autograd's separate token-sized tensors, and the slot layout changes are
    strided views when ``g == s == 1``. The expert weight gradients go into warm reusable memory
    (:class:`~medmoe.layers.grad_storage.GradientStorage`).

    On a CPU, when :func:`~medmoe.layers.native.routing.use_native_routing` says so, everything but the experts
    (logits, both softmaxes, dispatch, combine and their gradients) runs in the native kernels instead, one sample
    at a time (same values up to rounding); slots and expert outputs are then contiguous in the experts' layout.
    """

    @staticmethod
    def forward(ctx, x, phi_n, w1, b1, w2, b2, num_experts, num_slots, eps, grad_storage=None, dropout=0.0):  # noqa: D102
        g, b, m, d = x.shape
        e, s = num_experts, num_slots
        ctx.native_routing = routing.use_native_routing(x, e * s)
        if ctx.native_routing:  # one sample at a time in cache; slots and outputs in the experts' layout
            x, phi_n = x.contiguous(), phi_n.contiguous()
            inv_norm, logits, dispatch, combine, slots = routing.routing_forward(x, phi_n, e, s, eps)
            out, pre, hidden, masks = experts_forward(slots, w1, b1, w2, b2, dropout)
            y = routing.combine_forward(combine, out, e, s)
        else:
            x_g = x.reshape(g, b * m, d)
            inv_norm = torch.linalg.vector_norm(x_g, dim=-1, keepdim=True).clamp_min_(eps).reciprocal_()
            logits = torch.bmm(x_g, phi_n).mul_(inv_norm)  # g (b m) p
            combine = logits.softmax(-1).view(g * b, m, -1)
            dispatch = logits.view(g * b, m, -1).softmax(1)
            x_l = x.reshape(g * b, m, d)
            slots = to_experts(torch.bmm(dispatch.transpose(1, 2), x_l), g, e, s)  # raw tokens into slots
            out, pre, hidden, masks = experts_forward(slots, w1, b1, w2, b2, dropout)
            out = to_batches(out, g, e, s)  # L p d
            y = torch.bmm(combine, out).view(g, b, m, d)
        ctx.save_for_backward(
            x, inv_norm, logits, phi_n, dispatch, combine, slots, pre, hidden, out, w1, w2, *masks or ()
        )
        ctx.num_experts, ctx.num_slots, ctx.eps, ctx.grad_storage, ctx.dropout = e, s, eps, grad_storage, dropout
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):  # noqa: D102
        x, inv_norm, logits, phi_n, dispatch, combine, slots, pre, hidden, out, w1, w2, *masks = ctx.saved_tensors
        e, s, eps = ctx.num_experts, ctx.num_slots, ctx.eps
        expert_args = (pre, hidden, w1, w2, ctx.grad_storage, masks or None, ctx.dropout)
        no_grad = (None,) * 5  # num_experts, num_slots, eps, grad_storage, dropout
        if ctx.native_routing:
            grad_out, grad_logits = routing.combine_backward(grad_y.contiguous(), combine, out, e, s)
            grad_slots, *grad_experts = experts_backward(grad_out, slots, *expert_args)
            del grad_out
            grad_x, grad_phi_n = routing.dispatch_backward(
                x, grad_slots.contiguous(), dispatch, logits, inv_norm, phi_n, grad_logits, e, s, eps
            )
            return grad_x, grad_phi_n, *grad_experts, *no_grad
        g, b, m, d = x.shape
        x_l, grad_y = x.reshape(g * b, m, d), grad_y.reshape(g * b, m, d)
        grad_combine = torch.bmm(grad_y, out.transpose(1, 2))  # L m d, L d p -> L m p
        grad_out = to_experts(torch.bmm(combine.transpose(1, 2), grad_y), g, e, s)
        grad_slots, *grad_experts = experts_backward(grad_out, slots, *expert_args)
        del grad_out
        grad_slots = to_batches(grad_slots, g, e, s)  # L p d
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
        coef.masked_fill_(inv_norm >= 1.0 / eps, 0.0)  # norm clamped at eps: constant, no gradient
        grad_logits.mul_(inv_norm)  # now the gradient of x . phi_n
        grad_phi_n = torch.bmm(grad_logits.transpose(1, 2), x_g).transpose(1, 2)  # (g p (b m), g (b m) d)^T: g d p
        grad_x.baddbmm_(grad_logits, phi_n.transpose(1, 2)).addcmul_(x_g, coef)
        return grad_x.view(g, b, m, d), grad_phi_n, *grad_experts, *no_grad
