"""Full models and the registry (``create_model`` / ``list_models``)."""

from .contract import (
    INTERPRETATIONS,
    ModelOutput,
    MultimodalModel,
    declared_interpretations,
    require_interpretations,
)
from .dense_vit import DenseViT, SingleViewViT
from .fusion import EarlyFusion, LateFusion, TransformerFusion
from .fusion_model import FusionModel
from .i2m2 import I2M2
from .i2moe import I2MoE
from .m4oe import M4oE
from .registry import create_model, list_models, register_model
from .single_modality import SingleModalityClassifier, SingleModalityUNet

__all__ = [
    "INTERPRETATIONS",
    "DenseViT",
    "EarlyFusion",
    "FusionModel",
    "I2M2",
    "I2MoE",
    "LateFusion",
    "M4oE",
    "ModelOutput",
    "MultimodalModel",
    "SingleModalityClassifier",
    "SingleModalityUNet",
    "SingleViewViT",
    "TransformerFusion",
    "create_model",
    "declared_interpretations",
    "list_models",
    "register_model",
    "require_interpretations",
]
