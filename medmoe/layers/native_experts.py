"""Native CPU kernels for per-expert linear layers with few rows per expert (``expert_mlp.c``, via ctypes).

Why: with one slot per expert and a small batch every expert matmul has a handful of rows, and its backward is
limited by memory traffic over the weights. PyTorch computes it as two ``bmm`` calls: one reads the weights for
the input gradient, the other writes the weight gradient, reading every destination line before writing it. The
kernel reads each weight row once, computes that row's input gradients and weight-gradient row while it is in
cache, and writes the weight gradient with streaming stores: about two thirds of the traffic (measured in
``benchmarks/soft_moe.py``). The forward kernel reads each weight matrix once as one stream (panels of 32 rows, the
same strip of the next panel prefetched); it beats ``baddbmm`` only when the weights come from memory rather than
cache (:data:`NATIVE_FORWARD_MIN_BYTES`).

The C source is compiled on first use with the system C compiler (``$CC`` or ``cc``; ``-O3 -march=native
-fopenmp``) into ``<cache root>/kernels/`` (``$MEDMOE_CACHE`` or ``~/.cache/medmoe``), keyed by the source, the
flags, the compiler and the CPU, and loaded with ctypes. It runs on the OpenMP threads PyTorch already uses.

``MEDMOE_NATIVE_KERNELS`` chooses: ``auto`` (default: used where :func:`use_native` says so; if the build fails,
one warning says why and PyTorch's kernels are used), ``off`` (never), ``on`` (a failed build is an error).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import warnings
from pathlib import Path

import torch

from medmoe.utils import atomic_write, default_cache_root

__all__ = [
    "NativeKernelError",
    "available_for",
    "linear_backward",
    "linear_forward",
    "load_library",
    "use_native",
    "use_native_forward",
]

SOURCES = tuple(Path(__file__).with_name(name) for name in ("expert_mlp.c", "soft_routing.c"))
"""Compiled together into one library: the expert layers here, Soft MoE routing in :mod:`.native_routing`."""
HEADERS = (Path(__file__).with_name("native_gemm.h"),)
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC", "-std=c99")
MAX_NATIVE_ROWS = 8
"""Rows per expert up to which the native backward is used (beyond, PyTorch's ``bmm`` is compute-efficient)."""

NATIVE_FORWARD_MIN_BYTES = 8 * 2**20
"""Weight bytes per layer from which the forward uses the native kernel too. Below, the weights stay in cache
between steps and ``baddbmm`` is faster (2 threads, d = 192, ``mlp_dim`` = 768, called back to back: 4-8 experts
(2-4.5 MB) 5-60 % slower natively, 16 experts (9 MB) a tie; d = 64-128 at 0.5-2 MB 15-80 % slower). Inside a
Soft MoE step the weights come from memory, where the native kernel streams them at 22-24 GB/s and ``baddbmm`` at
12-16: in ``benchmarks/soft_moe.py`` at batch 8 this threshold (8 MiB instead of 32) took 16 experts from 3.3 to
3.2 ms and 32 experts from 6.8 to 5.5 ms per step."""

_state: dict[str, object] = {}


class NativeKernelError(RuntimeError):
    """The native kernels could not be built or loaded."""


def _mode() -> str:
    mode = os.environ.get("MEDMOE_NATIVE_KERNELS", "auto").strip().lower()
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"MEDMOE_NATIVE_KERNELS must be auto, on or off, got {mode!r}")
    return mode


def _cpu_signature() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        return next((line for line in text.splitlines() if line.startswith("flags")), platform.processor())
    except OSError:
        return platform.processor()


def _build(compiler: str) -> Path:
    source = b"\0".join(path.read_bytes() for path in SOURCES + HEADERS)
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256(
        b"\0".join(
            x.encode() if isinstance(x, str) else x
            for x in (source, " ".join(FLAGS), version, _cpu_signature(), platform.machine())
        )
    ).hexdigest()[:16]
    target = default_cache_root() / "kernels" / f"expert_mlp-{key}.so"
    if target.is_file():
        return target

    def compile_to(path: str) -> None:
        files = [str(path) for path in SOURCES]
        result = subprocess.run([compiler, *FLAGS, *files, "-o", path], capture_output=True, text=True)
        if result.returncode != 0:
            raise NativeKernelError(f"{compiler} failed on {' '.join(files)}:\n{result.stderr.strip()}")

    atomic_write(target, compile_to)  # concurrent builders (DDP ranks) end with one complete file
    return target


def load_library() -> ctypes.CDLL:
    """Build (once per machine) and load the kernels.

    Raises:
        NativeKernelError: no C compiler, a failed compile or a library that does not load; the message says which.
    """
    if "lib" in _state:
        return _state["lib"]
    if "error" in _state:
        raise _state["error"]
    try:
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        if not compiler:
            raise NativeKernelError("no C compiler found (set CC or install gcc)")
        lib = ctypes.CDLL(str(_build(compiler)))
    except (OSError, NativeKernelError) as exc:
        error = exc if isinstance(exc, NativeKernelError) else NativeKernelError(f"building or loading failed: {exc}")
        _state["error"] = error
        raise error from None
    c_int, c_long, ptr = ctypes.c_int, ctypes.c_long, ctypes.c_void_p
    strided = [ptr, c_long, c_long]  # data, expert stride, row stride
    lib.medmoe_linear_backward.argtypes = [c_int] * 4 + strided * 2 + [ptr] + strided + [ptr, ptr]
    lib.medmoe_linear_backward.restype = c_int
    lib.medmoe_linear_forward.argtypes = [c_int] * 4 + strided + [ptr, ptr] + [ptr, c_long, c_long]
    lib.medmoe_linear_forward.restype = None
    c_float, sizes = ctypes.c_float, [c_int] * 6  # Soft MoE routing (native_routing.py): g, b, m, d, e, s
    lib.medmoe_routing_vector_width.restype = c_int
    lib.medmoe_routing_forward.argtypes = sizes + [c_float] + [ptr] * 7
    lib.medmoe_combine_forward.argtypes = sizes + [ptr] * 3
    lib.medmoe_combine_backward.argtypes = sizes + [ptr] * 5
    lib.medmoe_dispatch_backward.argtypes = sizes + [c_float] + [ptr] * 9
    for name in ("routing_forward", "combine_forward", "combine_backward", "dispatch_backward"):
        getattr(lib, f"medmoe_{name}").restype = c_int
    _state["lib"] = lib
    return lib


def use_native(x: torch.Tensor, rows: int) -> bool:
    """Whether the fused Soft MoE should run its expert backward (and, see :func:`use_native_forward`, its
    forward) with these kernels for input ``x``.

    True for float32 CPU tensors with at most :data:`MAX_NATIVE_ROWS` rows per expert, unless
    ``MEDMOE_NATIVE_KERNELS=off``; with ``on`` a failed build raises, with ``auto`` it warns once.
    """
    return rows <= MAX_NATIVE_ROWS and available_for(x)


def available_for(x: torch.Tensor) -> bool:
    """Whether the native kernels can take ``x``: a float32 CPU tensor, ``MEDMOE_NATIVE_KERNELS`` not ``off``, and
    the library built (in ``auto`` a failed build warns once and gives False; in ``on`` it raises)."""
    mode = _mode()
    if mode == "off" or x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    try:
        load_library()
    except NativeKernelError as exc:
        if mode == "on":
            raise
        if not _state.get("warned"):
            _state["warned"] = True
            warnings.warn(f"medmoe native expert kernels unavailable, using PyTorch's: {exc}", stacklevel=2)
        return False
    return True


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
