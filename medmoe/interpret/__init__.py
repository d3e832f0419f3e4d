"""Interpretation: modality contributions, expert weights, MoE-Retriever choices, plots."""

from .expert_weights import collect_expert_weights, expert_weight_summary, plot_expert_weights, plot_sample_weights
from .modality_contributions import contributions_table, dataset_contributions, plot_contributions
from .retrieval import plot_retrieval_experts, retrieval_rows, retrieval_summary

__all__ = [
    "collect_expert_weights",
    "contributions_table",
    "dataset_contributions",
    "expert_weight_summary",
    "plot_contributions",
    "plot_expert_weights",
    "plot_retrieval_experts",
    "plot_sample_weights",
    "retrieval_rows",
    "retrieval_summary",
]
