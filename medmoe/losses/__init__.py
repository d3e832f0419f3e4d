"""Losses: masked multi-task loss (classification, segmentation), conditional mutual information."""

from .experts import PerExpertLoss
from .multitask import MultiTaskLoss, masked_cross_entropy, masked_dice_ce, present_key
from .mutual_information import conditional_mutual_information, modality_expert_task_joint

__all__ = [
    "MultiTaskLoss",
    "PerExpertLoss",
    "conditional_mutual_information",
    "masked_cross_entropy",
    "masked_dice_ce",
    "modality_expert_task_joint",
    "present_key",
]
