"""Training and evaluation precision: fp32, bf16 autocast, or fp16 autocast with a gradient scaler.

MONAI's engines autocast with ``torch.autocast("cuda")`` only (``amp=True``; on a CPU that does nothing) and always
build a ``GradScaler`` with it. So the autocast is done here, around the network call, by
:class:`AutocastInferer` (the bundles' ``train#inferer`` and ``validate#inferer``), on the device the engine runs
on, CPU included; MONAI's ``amp`` flag is only set for fp16, whose small range needs the loss scaling of its
``GradScaler`` (bf16 has fp32's range and needs none). The network's outputs leave the inferer in fp32, so the
losses and metrics are computed in full precision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import Inferer, SimpleInferer
from torch.utils import _pytree as pytree

__all__ = ["PRECISIONS", "AutocastInferer", "autocast_dtype", "check_precision", "default_precision"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _device_type(device: str | torch.device) -> str:
    return torch.device(device).type


def default_precision(device: str | torch.device) -> str:
    """``"fp32"`` off CUDA; on CUDA ``"bf16"`` where the GPU supports it, else ``"fp16"``.

    Example:
        >>> default_precision("cpu")
        'fp32'
    """
    if _device_type(device) != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def check_precision(precision: str, device: str | torch.device) -> str:
    """``precision`` if ``device`` can run it.

    Raises:
        ValueError: an unknown name; fp16 off CUDA (no loss scaling there: use bf16 or fp32); bf16 on a GPU
            without bfloat16 support (compute capability below 8.0: use fp16).
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {', '.join(PRECISIONS)} (bundle option --precision), got {precision!r}"
        )
    kind = _device_type(device)
    if precision == "fp16" and kind != "cuda":
        raise ValueError(f"precision 'fp16' needs a CUDA device (device is {device!r}); use --precision bf16 or fp32")
    if precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(torch.device(device))
        raise ValueError(f"precision 'bf16': the GPU {name} has no bfloat16 support; use --precision fp16 or fp32")
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (None for fp32)."""
    return PRECISIONS[precision]


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dtype in (torch.bfloat16, torch.float16):
        return value.float()
    return value


class AutocastInferer(Inferer):
    """Runs an inferer (default ``SimpleInferer``) under ``torch.autocast`` at the chosen precision.

    Every bf16 / fp16 tensor of the result (a ``ModelOutput``'s predictions, auxiliary losses and interpretation
    values included) is cast back to fp32.

    Args:
        precision: ``"fp32"`` (no autocast), ``"bf16"`` or ``"fp16"``.
        device: the device the network runs on (its type is the autocast device).
        inferer: the inferer to wrap.

    Raises:
        ValueError: see :func:`check_precision`.

    Example:
        >>> inferer = AutocastInferer("bf16", "cpu")
        >>> inferer(torch.ones(2, 4), torch.nn.Linear(4, 3)).dtype
        torch.float32
    """

    def __init__(self, precision: str = "fp32", device: str | torch.device = "cpu", inferer: Inferer | None = None):
        super().__init__()
        self.precision = check_precision(precision, device)
        self.device_type = _device_type(device)
        self.inferer = inferer if inferer is not None else SimpleInferer()

    def __call__(self, inputs: Any, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        dtype = autocast_dtype(self.precision)
        if dtype is None:
            return self.inferer(inputs, network, *args, **kwargs)
        with torch.autocast(self.device_type, dtype=dtype):
            outputs = self.inferer(inputs, network, *args, **kwargs)
        return pytree.tree_map(_to_float32, outputs)
