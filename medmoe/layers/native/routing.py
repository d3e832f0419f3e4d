"""Native CPU kernels for Soft MoE routing, dispatch and combine (``soft_routing.c``, via ctypes).

Why: PyTorch runs the routing of the fused Soft MoE as about 25 kernels over the whole batch (norms, logits, two
softmaxes and their backward, seven small matmuls), each passing over the ``(b, m, d)`` tokens in memory. At batch 64
with 16 experts (d = 192, 196 tokens) that was about 40 % of a forward + backward step for 28 % of its FLOPs. These
kernels work one sample at a time, so a sample's tokens, logits and slots are used while they are in cache, with one
register-blocked matmul kernel (``native_gemm.h``) for the small matmuls (one side is ``p`` or ``d`` wide).
Measured (2 threads, d = 192, 196 tokens): the layer's step is 8-13 % faster at batch 64 with 16 experts and
within noise elsewhere (32-128 experts, batch 8), where PyTorch's matmuls are as efficient.

Built into the same library as :mod:`.experts` by :mod:`.build` (same cache and ``MEDMOE_NATIVE_KERNELS`` switch).
Used by ``SoftMoE``'s fused path (:mod:`.fused`) for float32 CPU tensors when the slots ``p`` and the width ``d``
are multiples of the kernels' vector width (16 floats with AVX-512, else 8); otherwise PyTorch's kernels run (same
values up to rounding).

Layouts: ``x``, ``y``, ``grad_y``, ``grad_x`` ``(g, b, m, d)``; ``inv_norm`` ``(g, b, m)``; ``logits``, ``dispatch``,
``combine``, ``grad_logits`` ``(g, b, m, p)``; slot rows (``slots``, ``out``, ``grad_out``, ``grad_slots``) in the
experts' layout ``(g e, b s, d)``; ``phi`` ``(g, d, p)``. All contiguous float32.
"""

from __future__ import annotations

import torch

from .build import available_for, load_library

__all__ = ["use_native_routing", "routing_forward", "combine_forward", "combine_backward", "dispatch_backward"]


def _lib():
    return load_library()  # builds once; declares the argument types


def vector_width() -> int:
    """Floats per vector the kernels were compiled for (16 with AVX-512, else 8)."""
    return _lib().medmoe_routing_vector_width()


def use_native_routing(x: torch.Tensor, num_slots_total: int) -> bool:
    """Whether the fused Soft MoE should route ``x`` ``(g, b, m, d)`` over ``num_slots_total`` slots natively.

    True for float32 CPU tensors whose width and slot count are multiples of :func:`vector_width`, unless
    ``MEDMOE_NATIVE_KERNELS=off`` (or the build failed in ``auto`` mode; ``on`` raises then).
    """
    if not available_for(x):
        return False
    width = vector_width()
    return x.shape[-1] % width == 0 and num_slots_total % width == 0


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _check(tensors: dict[str, tuple[torch.Tensor, tuple[int, ...]]]) -> None:
    for name, (t, shape) in tensors.items():
        if t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous():
            raise ValueError(f"{name} must be a contiguous float32 CPU tensor, got {t.dtype} on {t.device}")
        if t.numel() != torch.Size(shape).numel():
            raise ValueError(f"{name} must hold {shape} values, got shape {tuple(t.shape)}")


def _run(failed: int, what: str) -> None:
    if failed:
        raise MemoryError(f"the native Soft MoE {what} could not allocate its per-thread scratch memory")


def routing_forward(
    x: torch.Tensor, phi: torch.Tensor, num_experts: int, num_slots: int, eps: float
) -> tuple[torch.Tensor, ...]:
    """Logits, both softmaxes and the dispatched slots.

    Returns:
        ``(inv_norm, logits, dispatch, combine, slots)`` in the module's layouts.
    """
    g, b, m, d = x.shape
    e, s = num_experts, num_slots
    p = e * s
    _check({"x": (x, (g, b, m, d)), "phi": (phi, (g, d, p))})
    inv_norm = x.new_empty(g, b, m)
    logits, dispatch, combine = (x.new_empty(g, b, m, p) for _ in range(3))
    slots = x.new_empty(g * e, b * s, d)
    failed = _lib().medmoe_routing_forward(
        g, b, m, d, e, s, eps, *map(_ptr, (x, phi, inv_norm, logits, dispatch, combine, slots))
    )
    _run(failed, "routing forward")
    return inv_norm, logits, dispatch, combine, slots


def combine_forward(combine: torch.Tensor, out: torch.Tensor, num_experts: int, num_slots: int) -> torch.Tensor:
    """``y = combine . out`` per sample: ``(g, b, m, d)``."""
    g, b, m, p = combine.shape
    d = out.shape[-1]
    _check({"combine": (combine, (g, b, m, p)), "out": (out, (g * num_experts, b * num_slots, d))})
    y = out.new_empty(g, b, m, d)
    failed = _lib().medmoe_combine_forward(g, b, m, d, num_experts, num_slots, *map(_ptr, (combine, out, y)))
    _run(failed, "combine forward")
    return y


def combine_backward(
    grad_y: torch.Tensor, combine: torch.Tensor, out: torch.Tensor, num_experts: int, num_slots: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_out, grad_logits)``: the experts' output gradient and the combine softmax's part of the logits'."""
    g, b, m, p = combine.shape
    d = out.shape[-1]
    _check(
        {
            "grad_y": (grad_y, (g, b, m, d)),
            "combine": (combine, (g, b, m, p)),
            "out": (out, (g * num_experts, b * num_slots, d)),
        }
    )
    grad_out, grad_logits = torch.empty_like(out), torch.empty_like(combine)
    failed = _lib().medmoe_combine_backward(
        g, b, m, d, num_experts, num_slots, *map(_ptr, (grad_y, combine, out, grad_out, grad_logits))
    )
    _run(failed, "combine backward")
    return grad_out, grad_logits


def dispatch_backward(
    x: torch.Tensor,
    grad_slots: torch.Tensor,
    dispatch: torch.Tensor,
    logits: torch.Tensor,
    inv_norm: torch.Tensor,
    phi: torch.Tensor,
    grad_logits: torch.Tensor,
    num_experts: int,
    num_slots: int,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_x, grad_phi)``; adds the dispatch softmax's part to ``grad_logits`` (overwritten)."""
    g, b, m, d = x.shape
    p = dispatch.shape[-1]
    _check(
        {
            "x": (x, (g, b, m, d)),
            "grad_slots": (grad_slots, (g * num_experts, b * num_slots, d)),
            "dispatch": (dispatch, (g, b, m, p)),
            "logits": (logits, (g, b, m, p)),
            "inv_norm": (inv_norm, (g, b, m)),
            "phi": (phi, (g, d, p)),
            "grad_logits": (grad_logits, (g, b, m, p)),
        }
    )
    phi_t = phi.transpose(1, 2).contiguous()
    grad_x, grad_phi = torch.empty_like(x), torch.empty_like(phi)
    failed = _lib().medmoe_dispatch_backward(
        g,
        b,
        m,
        d,
        num_experts,
        num_slots,
        eps,
        *map(_ptr, (x, grad_slots, dispatch, logits, inv_norm, phi_t, grad_logits, grad_x, grad_phi)),
    )
    _run(failed, "dispatch backward")
    return grad_x, grad_phi
