"""Per-modality encoders: token embedders and pooled-feature image encoders."""

from .oct import OCTEmbedding
from .patch import GroupedPatchEmbedding, TimmEmbedding
from .resnet2d import PreActBlock, PreActResNet2d
from .tabular import FeatureTokenizer
from .vector import VectorEncoder
from .volume import VolumeEncoder

__all__ = [
    "FeatureTokenizer",
    "GroupedPatchEmbedding",
    "OCTEmbedding",
    "PreActBlock",
    "PreActResNet2d",
    "TimmEmbedding",
    "VectorEncoder",
    "VolumeEncoder",
]
