"""Helper tensors (quantile levels, lookup tables, label maps) are created on the input's device.

No GPU is needed: a torch function mode records every tensor factory call made from ``transforms/`` and the test
checks that each one names a ``device``, so a CUDA input never meets a CPU-only helper tensor.
"""

from __future__ import annotations

import sys
from pathlib import Path

import medmoe.transforms
import pytest
import torch
from medmoe.transforms import CupDiscToLabel, LabelToCupDisc, NormalizeForeground, OCTNormalizeIntensity
from torch.overrides import TorchFunctionMode

TRANSFORMS_DIR = str(Path(medmoe.transforms.__file__).resolve().parent)
FACTORIES = {torch.tensor, torch.full, torch.zeros, torch.ones, torch.empty, torch.arange, torch.linspace, torch.eye}


class FactoryCalls(TorchFunctionMode):
    """Record ``(function, file:line, device given)`` for tensor factories called directly from ``transforms/``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, bool]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES:
            caller = sys._getframe(1)
            if str(Path(caller.f_code.co_filename).resolve()).startswith(TRANSFORMS_DIR):
                where = f"{Path(caller.f_code.co_filename).name}:{caller.f_lineno}"
                self.calls.append((func.__name__, where, kwargs.get("device") is not None))
        return func(*args, **kwargs)


@pytest.mark.parametrize(
    "transform, image",
    [
        (CupDiscToLabel(strict=True), torch.tensor([[[0.0, 128.0, 255.0]]])),
        (CupDiscToLabel(output="disc_cup"), torch.tensor([[[0.0, 128.0, 255.0]]])),
        (LabelToCupDisc(), torch.tensor([[[0, 1, 2]]])),
        (OCTNormalizeIntensity(), torch.rand(1, 2, 8, 8)),
        (NormalizeForeground(), torch.rand(1, 6, 6, 6) + 1),
    ],
    ids=["cup_disc_strict", "cup_disc_nested", "label_to_cup_disc", "oct_normalize", "normalize_foreground"],
)
def test_helper_tensors_follow_the_input_device(transform, image):
    with FactoryCalls() as mode:
        transform(image)
    assert mode.calls, "the transform created no helper tensor: update this test"
    assert all(has_device for _, _, has_device in mode.calls), f"created without a device: {mode.calls}"
