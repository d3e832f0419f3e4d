"""Evaluation apps: ``python -m medmoe.apps.evaluate {auroc,dice}`` and their Python API.

Example:
    >>> from medmoe.apps.evaluate import evaluate_classification, write_report
    >>> res = evaluate_classification(df_pred, df_true, ["density"], group_by="site")  # doctest: +SKIP
    >>> write_report(res, "eval/")  # doctest: +SKIP
"""

from .bootstrap import bootstrap, bootstrap_weights, percentile_ci, weighted_auroc, weighted_average_precision
from .classification import choose_threshold, evaluate_classification, roc_curve
from .delong import delong_covariance, delong_test, midrank
from .io import TaskSpec, discover_tasks, join_predictions
from .report import metrics_table, write_report
from .segmentation import (
    case_metrics,
    evaluate_segmentation,
    load_mask,
    load_pair,
    pairs_from_csv,
    pairs_from_folders,
    surface_distances,
)

__all__ = [
    "TaskSpec",
    "bootstrap",
    "bootstrap_weights",
    "case_metrics",
    "choose_threshold",
    "delong_covariance",
    "delong_test",
    "discover_tasks",
    "evaluate_classification",
    "evaluate_segmentation",
    "join_predictions",
    "load_mask",
    "load_pair",
    "metrics_table",
    "midrank",
    "pairs_from_csv",
    "pairs_from_folders",
    "percentile_ci",
    "roc_curve",
    "surface_distances",
    "weighted_auroc",
    "weighted_average_precision",
    "write_report",
]
