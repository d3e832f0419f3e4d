"""Per-modality encoders: token embedders and pooled-feature image encoders."""

from .oct import OCTEmbedding
from .patch import GroupedPatchEmbedding, TimmEmbedding, timm_patch_key_map
from .pretrained import (
    LoadReport,
    adapt_rgb_stem,
    load_pretrained,
    prefix_key_map,
    read_state_dict,
    timm_state_dict,
)
from .resnet2d import PreActBlock, PreActResNet2d
from .tabular import FeatureTokenizer
from .vector import VectorEncoder
from .volume import VolumeEncoder

__all__ = [
    "FeatureTokenizer",
    "GroupedPatchEmbedding",
    "LoadReport",
    "OCTEmbedding",
    "PreActBlock",
    "PreActResNet2d",
    "TimmEmbedding",
    "VectorEncoder",
    "VolumeEncoder",
    "adapt_rgb_stem",
    "load_pretrained",
    "prefix_key_map",
    "read_state_dict",
    "timm_patch_key_map",
    "timm_state_dict",
]
