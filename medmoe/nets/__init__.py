"""Full models and the registry (``create_model`` / ``list_models``)."""

from .fusion import EarlyFusion, LateFusion, TransformerFusion
from .fusion_model import FusionModel
from .i2m2 import I2M2
from .i2moe import I2MoE
from .m4oe import M4oE
from .registry import create_model, list_models, register_model

__all__ = [
    "EarlyFusion",
    "FusionModel",
    "I2M2",
    "I2MoE",
    "LateFusion",
    "M4oE",
    "TransformerFusion",
    "create_model",
    "list_models",
    "register_model",
]
