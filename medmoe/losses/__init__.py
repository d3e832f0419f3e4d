"""Losses: masked multi-task loss, conditional mutual information, I2MoE interaction losses."""

from .experts import PerExpertLoss
from .interaction import INTERACTION_KINDS, interaction_losses
from .masked import masked_cross_entropy, masked_dice_ce, present_key
from .multitask import MultiTaskLoss
from .mutual_information import conditional_mutual_information, modality_expert_task_joint

__all__ = [
    "INTERACTION_KINDS",
    "MultiTaskLoss",
    "PerExpertLoss",
    "conditional_mutual_information",
    "interaction_losses",
    "masked_cross_entropy",
    "masked_dice_ce",
    "modality_expert_task_joint",
    "present_key",
]
