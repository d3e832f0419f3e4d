"""Evaluation statistics: bootstrap CIs, DeLong's test, calibration, classification and segmentation metrics.

Layered like MONAI's metrics: plain functions on arrays (``weighted_auroc``, ``case_metrics``, ``delong_test``,
...), cohort-level evaluations that combine them with bootstrap intervals (``evaluate_classification``,
``evaluate_segmentation``) and report writing (``write_report``). The ignite handlers that use them live in
:mod:`medmoe.engines`; the command line is ``python -m medmoe.apps.evaluate``. Plots (:mod:`.plots`) use
detached matplotlib figures: importing this package never switches the matplotlib backend.

Example:
    >>> from medmoe.metrics import evaluate_classification, write_report
    >>> res = evaluate_classification(df_pred, df_true, ["density"], group_by="site")  # doctest: +SKIP
    >>> write_report(res, "eval/")  # doctest: +SKIP
"""

from .agreement import quadratic_kappa, weighted_quadratic_kappa
from .bootstrap import bootstrap, bootstrap_weights, percentile_ci, weighted_mean
from .calibration import reliability_curve, weighted_ece
from .classification import (
    precision_recall_curve,
    roc_curve,
    task_metric_fn,
    weighted_auroc,
    weighted_average_precision,
)
from .classification_eval import evaluate_classification
from .compare import compare_classification, compare_segmentation, comparison_report
from .delong import delong_covariance, delong_test, midrank
from .masks import load_mask, load_pair, pairs_from_csv, pairs_from_folders
from .paired import paired_auroc_difference, paired_mean_difference, verdict
from .report import metrics_table, write_report
from .seed_table import average_over_seeds, seed_comparison, seed_table_markdown
from .segmentation import SEG_METRICS, case_metrics, surface_distances
from .segmentation_eval import evaluate_segmentation
from .tables import TaskSpec, discover_tasks, format_ids, join_predictions
from .thresholds import choose_threshold

__all__ = [
    "average_over_seeds",
    "seed_comparison",
    "seed_table_markdown",
    "verdict",
    "paired_mean_difference",
    "paired_auroc_difference",
    "comparison_report",
    "compare_segmentation",
    "compare_classification",
    "SEG_METRICS",
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
    "format_ids",
    "join_predictions",
    "load_mask",
    "load_pair",
    "metrics_table",
    "midrank",
    "pairs_from_csv",
    "pairs_from_folders",
    "percentile_ci",
    "precision_recall_curve",
    "quadratic_kappa",
    "reliability_curve",
    "roc_curve",
    "surface_distances",
    "task_metric_fn",
    "weighted_auroc",
    "weighted_average_precision",
    "weighted_ece",
    "weighted_mean",
    "weighted_quadratic_kappa",
    "write_report",
]
