"""Interpretation: modality contributions, expert-task assignment, expert weights, MoE-Retriever choices, plots."""

from .expert_task import (
    dataset_expert_task,
    expert_task_joint,
    expert_task_summary,
    expert_task_table,
    plot_expert_task,
)
from .expert_weights import collect_expert_weights, expert_weight_summary, plot_expert_weights, plot_sample_weights
from .modality_contributions import (
    contributions_summary,
    contributions_table,
    dataset_contributions,
    modality_presence,
    plot_contributions,
)
from .retrieval import plot_retrieval_experts, retrieval_rows, retrieval_summary

__all__ = [
    "collect_expert_weights",
    "contributions_summary",
    "contributions_table",
    "dataset_contributions",
    "dataset_expert_task",
    "expert_task_joint",
    "expert_task_summary",
    "expert_task_table",
    "expert_weight_summary",
    "modality_presence",
    "plot_contributions",
    "plot_expert_task",
    "plot_expert_weights",
    "plot_retrieval_experts",
    "plot_sample_weights",
    "retrieval_rows",
    "retrieval_summary",
]
