"""The fused and native Soft MoE paths, behind one door: ``SoftMoE`` calls :func:`fused_soft_moe` when
:func:`fused_applies`, and its plain PyTorch algorithm otherwise.

* :mod:`.fused`: the layer as one autograd function with a hand-written backward (CPU and GPU);
* :mod:`.routing`, :mod:`.experts`: ctypes wrappers of the C kernels (``soft_routing.c``, ``expert_mlp.c``, sharing
  ``native_gemm.h``) for routing / dispatch / combine and for the expert layers with few rows, and the rules for when
  each is used;
* :mod:`.build`: compiler, CPU-feature cache key, build, cache and loading of the C kernels, and the
  ``MEDMOE_NATIVE_KERNELS`` switch (``auto`` / ``on`` / ``off``).

Every path computes the same values as the plain algorithm up to rounding (``tests/layers``).
"""

from .build import NativeKernelError, available_for, load_library, unavailable_reason
from .fused import FusedSoftMoE, fused_applies, fused_soft_moe

__all__ = [
    "FusedSoftMoE",
    "NativeKernelError",
    "available_for",
    "fused_applies",
    "fused_soft_moe",
    "load_library",
    "unavailable_reason",
]
