"""Building blocks: Soft MoE, batched experts, grouped (per-modality) layers, attention."""

from .attention import SelfAttention
from .experts import BatchedExperts
from .grouped import GroupedLayerNorm, GroupedLinear, with_group_axis
from .mlp import MLP
from .soft_moe import SoftMoE, TaskSoftMoE, soft_routing
from .timm_mlp import SoftMoEMlp

__all__ = [
    "BatchedExperts",
    "GroupedLayerNorm",
    "GroupedLinear",
    "MLP",
    "SelfAttention",
    "SoftMoE",
    "SoftMoEMlp",
    "TaskSoftMoE",
    "soft_routing",
    "with_group_axis",
]
