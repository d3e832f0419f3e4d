"""medmoe: mixture-of-experts fusion of imaging views and modalities, built on MONAI.

Subpackages load on first attribute access, so ``import medmoe`` is cheap and bundle configs can
write ``medmoe.data.load_cohort`` after a single ``$import medmoe``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.1.0"

_SUBPACKAGES = (
    "apps",
    "blocks",
    "data",
    "encoders",
    "engines",
    "export",
    "heads",
    "interpret",
    "layers",
    "losses",
    "metrics",
    "nets",
    "transforms",
    "utils",
)


def __getattr__(name: str) -> ModuleType:
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'medmoe' has no attribute '{name}'")
