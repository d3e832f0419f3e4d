"""Losses: masked multi-task loss, conditional mutual information."""

from .multitask import MultiTaskLoss, masked_cross_entropy
from .mutual_information import conditional_mutual_information, modality_expert_task_joint

__all__ = ["MultiTaskLoss", "conditional_mutual_information", "masked_cross_entropy", "modality_expert_task_joint"]
