"""Native CPU kernels for per-expert linear layers with few rows per expert (``expert_mlp.c``, via ctypes).

Why: with one slot per expert and a small batch every expert matmul has a handful of rows, and its backward is
limited by memory traffic over the weights. PyTorch computes it as two ``bmm`` calls: one reads the weights for
the input gradient, the other writes the weight gradient, reading every destination line before writing it. The
kernel reads each weight row once, computes that row's input gradients and weight-gradient row while it is in
cache, and writes the weight gradient with streaming stores: about two thirds of the traffic (measured in
``benchmarks/soft_moe.py``). The forward kernel reads each weight matrix once as one stream (panels of 32 rows, the
same strip of the next panel prefetched); it beats ``baddbmm`` only when the weights come from memory rather than
cache (:data:`NATIVE_FORWARD_MIN_BYTES`).

Built and loaded by :mod:`.build` (one library with :mod:`.routing`); ``MEDMOE_NATIVE_KERNELS`` switches them
(see there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..grad_storage import GradientStorage
from .build import available_for, load_library

__all__ = [
    "experts_backward",
    "experts_forward",
    "linear_backward",
    "linear_forward",
    "use_native",
    "use_native_forward",
]

MAX_NATIVE_ROWS = 8
"""Rows per expert up to which the native backward is used (beyond, PyTorch's ``bmm`` is compute-efficient)."""

NATIVE_FORWARD_MIN_BYTES = 8 * 2**20
"""Weight bytes per layer from which the forward uses the native kernel too. Below, the weights stay in cache
between steps and ``baddbmm`` is faster (2 threads, d = 192, ``mlp_dim`` = 768, called back to back: 4-8 experts
(2-4.5 MB) 5-60 % slower natively, 16 experts (9 MB) a tie; d = 64-128 at 0.5-2 MB 15-80 % slower). Inside a
Soft MoE step the weights come from memory, where the native kernel streams them at 22-24 GB/s and ``baddbmm`` at
12-16: in ``benchmarks/soft_moe.py`` at batch 8 this threshold (8 MiB instead of 32) took 16 experts from 3.3 to
3.2 ms and 32 experts from 6.8 to 5.5 ms per step."""


def use_native(x: torch.Tensor, rows: int) -> bool:
    """Whether the fused Soft MoE should run its expert backward (and, see :func:`use_native_forward`, its
    forward) with these kernels for input ``x``.

    True for float32 CPU tensors with at most :data:`MAX_NATIVE_ROWS` rows per expert, unless
    ``MEDMOE_NATIVE_KERNELS=off``; with ``on`` a failed build raises, with ``auto`` it warns once.
    """
    return rows <= MAX_NATIVE_ROWS and available_for(x)


def use_native_forward(x: torch.Tensor, rows: int, weight: torch.Tensor) -> bool:
    """:func:`use_native` for the forward: also needs ``weight`` of at least :data:`NATIVE_FORWARD_MIN_BYTES`."""
    return weight.numel() * weight.element_size() >= NATIVE_FORWARD_MIN_BYTES and use_native(x, rows)


def _strides(t: torch.Tensor, name: str) -> tuple[int, int]:
    if t.dim() != 3 or t.stride(2) != 1:
        raise ValueError(
            f"{name} must be (experts, rows, features) with contiguous features, got {t.shape} {t.stride()}"
        )
    return t.stride(0), t.stride(1)


def _rows(t: torch.Tensor, name: str) -> tuple[int, int, int]:
    if t.dim() != 3:
        raise ValueError(f"{name} must be (experts, rows, features), got shape {tuple(t.shape)}")
    return t.shape[0], t.shape[1], t.shape[2]


def _check(tensors: dict[str, torch.Tensor]) -> None:
    for name, t in tensors.items():
        if t.device.type != "cpu" or t.dtype != torch.float32:
            raise ValueError(f"{name} must be a float32 CPU tensor, got {t.dtype} on {t.device}")


def linear_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    grad_x: torch.Tensor,
    grad_w: torch.Tensor,
    grad_b: torch.Tensor,
) -> None:
    """Gradients of ``out[e] = x[e] . w[e] + b[e]`` given ``grad`` (of ``out``), written into the last three tensors.

    ``grad_x[e] = grad[e] . w[e]^T``, ``grad_w[e] = x[e]^T . grad[e]``, ``grad_b[e] = sum_rows grad[e]``, with one
    pass over ``w`` and ``grad_w``. ``grad_x`` may be strided like ``x``; ``grad_w`` and ``grad_b`` are contiguous.
    ``grad_x`` must not overlap the inputs.
    """
    _check({"grad": grad, "x": x, "w": w, "grad_x": grad_x, "grad_w": grad_w, "grad_b": grad_b})
    n, r, k = _rows(x, "x")
    big_n = w.shape[2] if w.dim() == 3 else -1
    if grad.shape != (n, r, big_n) or grad_x.shape != x.shape or grad_w.shape != w.shape:
        raise ValueError(f"shapes do not fit: grad {grad.shape}, x {x.shape}, w {w.shape}, grad_x {grad_x.shape}")
    if not (w.is_contiguous() and grad_w.is_contiguous() and grad_b.is_contiguous()) or grad_b.numel() != n * big_n:
        raise ValueError("w, grad_w and grad_b must be contiguous, grad_b with experts x outputs values")
    failed = load_library().medmoe_linear_backward(
        n,
        r,
        k,
        big_n,
        grad.data_ptr(),
        *_strides(grad, "grad"),
        x.data_ptr(),
        *_strides(x, "x"),
        w.data_ptr(),
        grad_x.data_ptr(),
        *_strides(grad_x, "grad_x"),
        grad_w.data_ptr(),
        grad_b.data_ptr(),
    )
    if failed:
        raise MemoryError(f"the native expert backward could not allocate {r} x ({k} + {big_n}) floats per thread")


def linear_forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out[e] = x[e] . w[e] + b[e]`` for every expert ``e``, written into ``out`` (returned).

    ``x`` and ``out`` may be strided over experts and rows (contiguous last axis); ``w`` ``(n, K, N)`` and ``b``
    (``n * N`` values) are contiguous.
    """
    _check({"x": x, "w": w, "b": b, "out": out})
    n, r, k = _rows(x, "x")
    big_n = w.shape[2] if w.dim() == 3 else -1
    if w.shape != (n, k, big_n) or out.shape != (n, r, big_n) or b.numel() != n * big_n:
        raise ValueError(f"shapes do not fit: x {x.shape}, w {w.shape}, b {b.shape}, out {out.shape}")
    if not (w.is_contiguous() and b.is_contiguous()):
        raise ValueError("w and b must be contiguous")
    load_library().medmoe_linear_forward(
        n,
        r,
        k,
        big_n,
        x.data_ptr(),
        *_strides(x, "x"),
        w.data_ptr(),
        b.data_ptr(),
        out.data_ptr(),
        *_strides(out, "out"),
    )
    return out


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
    (:func:`use_native_forward`) both layers run the native kernel, which
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
    native = use_native_forward(slots, r, w1)  # few rows, weights beyond cache, CPU
    if native:
        pre = linear_forward(slots, w1, b1, slots.new_empty(n, r, w1.shape[2]))
    else:
        pre = torch.baddbmm(b1, slots, w1)  # n r d, n d h -> n r h
    hidden, masks = F.gelu(pre), None
    if dropout > 0:
        hidden, keep_hidden = torch.ops.aten.native_dropout(hidden, dropout, True)  # what nn.Dropout runs
    if native:
        out = linear_forward(hidden, w2, b2, hidden.new_empty(n, r, w2.shape[2]))
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
    per expert (:func:`use_native`) the two layers' gradients come from
    the native kernel instead, one pass over each weight matrix (same values up to rounding).

    With dropout, ``masks`` and ``dropout`` are :func:`experts_forward`'s (``hidden`` is the dropped activation).

    Returns:
        ``(grad_slots, grad_w1, grad_b1, grad_w2, grad_b2)``.
    """
    if masks is not None:
        grad_out = torch.ops.aten.native_dropout_backward(grad_out, masks[1], _keep_scale(dropout))
    native = use_native(grad_out, grad_out.shape[1])
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
        linear_backward(grad, inputs, weight, grad_inputs, grad_weight, grad_bias)
        return grad_inputs, grad_weight, grad_bias
    grad_weight = torch.bmm(inputs.transpose(1, 2), grad, out=grad_weight)  # n K r, n r N -> n K N
    return torch.bmm(grad, weight.transpose(1, 2)), grad_weight, grad.sum(1, keepdim=True)
