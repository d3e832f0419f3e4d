"""Glue on monai.engines: multimodal prepare_batch, per-task metrics, atomic checkpoints, evaluation writers."""

from .checkpoint import CheckpointHandler, load_weights
from .distributed import finish_distributed
from .expert_scores import ExpertScores
from .expert_weights import ExpertWeightsWriter
from .metrics import SegmentationDice, TaskMetric, accuracy, auroc, mean_of, task_metrics
from .precision import PRECISIONS, AutocastInferer, check_precision, default_precision
from .prepare import MultimodalPrepareBatch
from .retrieval_choices import RetrievalWriter, find_retriever
from .robustness import corruption_sweep
from .writers import EvaluationWriter

__all__ = [
    "AutocastInferer",
    "PRECISIONS",
    "check_precision",
    "default_precision",
    "CheckpointHandler",
    "EvaluationWriter",
    "ExpertScores",
    "ExpertWeightsWriter",
    "MultimodalPrepareBatch",
    "RetrievalWriter",
    "SegmentationDice",
    "TaskMetric",
    "accuracy",
    "auroc",
    "corruption_sweep",
    "find_retriever",
    "finish_distributed",
    "load_weights",
    "mean_of",
    "task_metrics",
]
