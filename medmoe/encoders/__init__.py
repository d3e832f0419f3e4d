"""Per-modality encoders: token embedders and pooled-feature image encoders."""

from .oct import OCTEmbedding
from .patch import GroupedPatchEmbedding, TimmEmbedding
from .resnet2d import PreActBlock, PreActResNet2d
from .vector import VectorEncoder

__all__ = ["GroupedPatchEmbedding", "OCTEmbedding", "PreActBlock", "PreActResNet2d", "TimmEmbedding", "VectorEncoder"]
