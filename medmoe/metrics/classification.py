"""Classification metrics: weighted AUROC and average precision, ROC / PR curves, per-task metric functions.

Every ``weighted_*`` metric takes a weight matrix ``W`` ``(R, N)`` (bootstrap counts, see :mod:`.bootstrap`)
and returns ``R`` values at once:

- AUROC is the Mann-Whitney statistic with ties counted one half, computed from ranks: sort the negatives
  once, take cumulative negative weights ``C`` (``R x N_neg``); a positive with score ``s`` beats
  ``C[searchsorted(s, "left")]`` negatives and ties with the difference to ``C[searchsorted(s, "right")]``.
- Average precision is the step-wise sum ``sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds (as in
  scikit-learn), with weighted cumulative true / false positives.

:func:`task_metric_fn` combines them (plus accuracy, sensitivity, specificity, balanced accuracy and ECE) into
the function of one task that :func:`.bootstrap` resamples.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from .bootstrap import weighted_mean
from .calibration import weighted_ece
from .tables import TaskSpec

__all__ = [
    "CASE_MIX_METRICS",
    "precision_recall_curve",
    "roc_curve",
    "task_metric_fn",
    "weighted_auroc",
    "weighted_average_precision",
]

CASE_MIX_METRICS = frozenset({"accuracy", "auprc", "ece"})
"""Metrics whose value depends on the class proportions: their CIs resample cases without stratification."""

MetricFn = Callable[[np.ndarray], dict[Any, np.ndarray]]


def weighted_auroc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Area under the ROC curve (Mann-Whitney U / (n_pos n_neg), ties = 1/2) for each weight row.

    Args:
        scores: ``(N,)`` real scores, larger = more likely positive.
        positive: ``(N,)`` bool, the true class.
        weights: ``(R, N)`` case weights (bootstrap counts, or ones for the point estimate).

    Returns:
        ``(R,)`` AUROC values; NaN where a row has no positive or no negative weight.

    Example:
        >>> float(weighted_auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool), np.ones((1, 4)))[0])
        0.75
    """
    positive = np.asarray(positive, bool)
    s_pos, s_neg = scores[positive], scores[~positive]
    order = np.argsort(s_neg, kind="stable")
    s_neg = s_neg[order]
    w_pos, w_neg = weights[:, positive], weights[:, ~positive][:, order]
    cum = np.zeros((weights.shape[0], s_neg.size + 1))
    np.cumsum(w_neg, axis=1, out=cum[:, 1:])
    below = np.searchsorted(s_neg, s_pos, side="left")
    below_or_tied = np.searchsorted(s_neg, s_pos, side="right")
    wins = (cum[:, below] + cum[:, below_or_tied]) * 0.5  # (R, N_pos): beaten negatives + half the ties
    num = np.einsum("rp,rp->r", w_pos, wins)
    den = w_pos.sum(1) * cum[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def weighted_average_precision(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (area under the precision-recall step curve, as scikit-learn) for each weight row.

    Args:
        scores: ``(N,)`` real scores.
        positive: ``(N,)`` bool, the true class.
        weights: ``(R, N)`` case weights.

    Returns:
        ``(R,)`` AP values; NaN where a row has no positive weight.
    """
    positive = np.asarray(positive, bool)
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    y = positive[order].astype(np.float64)
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # last index of each distinct threshold
    w = weights[:, order]
    tp = np.cumsum(w * y, axis=1)[:, ends]
    allp = np.cumsum(w, axis=1)[:, ends]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(allp > 0, tp / np.where(allp > 0, allp, 1), 0.0)
        recall = tp / tp[:, -1:]
    d_recall = np.diff(recall, axis=1, prepend=0.0)
    ap = np.einsum("rk,rk->r", d_recall, precision)
    return np.where(tp[:, -1] > 0, ap, np.nan)


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve at every distinct threshold: ``(fpr, tpr, thresholds)``, starting at ``(0, 0)`` (threshold +inf)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], np.asarray(positive, bool)[order]
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tps, fps = np.cumsum(y)[ends], np.cumsum(~y)[ends]
    tpr = np.r_[0.0, tps / max(tps[-1], 1)] if s.size else np.zeros(1)
    fpr = np.r_[0.0, fps / max(fps[-1], 1)] if s.size else np.zeros(1)
    return fpr, tpr, np.r_[np.inf, s[ends]]


def precision_recall_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision-recall step curve at every distinct threshold: ``(recall, precision)``, starting at ``(0, 1)``.

    Args:
        scores: ``(N,)`` real scores, larger = more likely positive.
        positive: ``(N,)`` bool, the true class (at least one positive).

    Returns:
        ``recall`` and ``precision``, each ``(T + 1,)`` for ``T`` distinct scores.

    Example:
        >>> r, p = precision_recall_curve(np.array([0.9, 0.8, 0.3]), np.array([1, 0, 1], bool))
        >>> r.tolist(), p.round(3).tolist()
        ([0.0, 0.5, 0.5, 1.0], [1.0, 1.0, 0.5, 0.667])
    """
    positive = np.asarray(positive, bool)
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(positive[order])
    ends = np.r_[np.flatnonzero(np.diff(scores[order]) != 0), scores.size - 1]
    return np.r_[0.0, tp[ends] / tp[-1]], np.r_[1.0, tp[ends] / (ends + 1)]


def _binary_fn(
    scores: np.ndarray, y: np.ndarray, threshold: float | None, n_bins: int, cls: str | None, want: Callable
) -> MetricFn:
    """Metrics of one binary column; without a threshold (none could be chosen) only the threshold-free ones."""
    pos = y.astype(bool)
    pred = None if threshold is None else scores >= threshold
    calibrate = bool(np.all((scores >= 0) & (scores <= 1)))

    def fn(w: np.ndarray) -> dict[Any, np.ndarray]:
        out = {}
        if want("auroc"):
            out[("auroc", cls)] = weighted_auroc(scores, pos, w)
        if want("auprc"):
            out[("auprc", cls)] = weighted_average_precision(scores, pos, w)
        if pred is not None:
            sens, spec = weighted_mean(w[:, pos], pred[pos]), weighted_mean(w[:, ~pos], ~pred[~pos])
            out[("accuracy", cls)] = weighted_mean(w, pred == pos)
            out[("balanced_accuracy", cls)] = 0.5 * (sens + spec)
            out[("sensitivity", cls)] = sens
            out[("specificity", cls)] = spec
        if calibrate and want("ece"):
            out[("ece", cls)] = weighted_ece(scores, pos, w, n_bins)
        return out

    return fn


def _multiclass_fn(probs: np.ndarray, y: np.ndarray, classes: list[str], n_bins: int, want: Callable) -> MetricFn:
    pred = probs.argmax(1)
    conf = probs.max(1)
    calibrate = bool(np.all((probs >= 0) & (probs <= 1)))
    present = [k for k in range(len(classes)) if (y == k).any()]

    def fn(w: np.ndarray) -> dict[Any, np.ndarray]:
        out: dict[Any, np.ndarray] = {}
        recalls = []
        for k, c in enumerate(classes):
            pos = y == k
            if want("auroc"):
                out[("auroc", c)] = weighted_auroc(probs[:, k], pos, w)
            if want("auprc"):
                out[("auprc", c)] = weighted_average_precision(probs[:, k], pos, w)
            out[("sensitivity", c)] = weighted_mean(w[:, pos], pred[pos] == k)
            out[("specificity", c)] = weighted_mean(w[:, ~pos], pred[~pos] != k)
            if k in present:
                recalls.append(out[("sensitivity", c)])
        nan = np.full(w.shape[0], np.nan)
        for metric in ("auroc", "auprc"):
            if want(metric):
                macro = [out[(metric, classes[k])] for k in present]
                out[(metric, None)] = np.mean(macro, axis=0) if len(present) > 1 else nan
        out[("accuracy", None)] = weighted_mean(w, pred == y)
        out[("balanced_accuracy", None)] = np.mean(recalls, axis=0) if recalls else nan
        if calibrate and want("ece"):
            out[("ece", None)] = weighted_ece(conf, pred == y, w, n_bins)
        return out

    return fn


def task_metric_fn(
    spec: TaskSpec,
    scores: np.ndarray,
    labels: np.ndarray,
    thresholds: dict[str, float],
    n_bins: int = 10,
    metrics: Collection[str] | None = None,
) -> MetricFn:
    """Build the weighted metric function of one task (see :mod:`.bootstrap`).

    Args:
        spec: the task.
        scores: ``(N, C)`` prediction columns of the task (``C = 1`` for binary).
        labels: ``(N, L)`` labels (``L = 1`` unless multi-label; NaN = missing, multi-label only here).
        thresholds: decision threshold per class name (binary: ``"1"``; multi-label: each label name).
        n_bins: calibration bins.
        metrics: compute only the rank and calibration metrics named here (``auroc``, ``auprc``, ``ece``; the
            cheap threshold metrics always come along); None = all.

    Returns:
        ``fn(W) -> {(metric, class or None): (R,) values}``.
    """

    def want(metric: str) -> bool:
        return metrics is None or metric in metrics

    if spec.kind == "binary":
        return _binary_fn(scores[:, 0], labels[:, 0], thresholds["1"], n_bins, None, want)
    if spec.kind == "multiclass":
        return _multiclass_fn(scores, labels[:, 0].astype(np.int64), spec.classes, n_bins, want)
    parts = []
    for j, name in enumerate(spec.classes):
        valid = np.isfinite(labels[:, j])
        parts.append((valid, _binary_fn(scores[valid, j], labels[valid, j], thresholds[name], n_bins, name, want)))

    def fn(w: np.ndarray) -> dict[Any, np.ndarray]:
        out: dict[Any, np.ndarray] = {}
        for valid, f in parts:
            out.update(f(w[:, valid]))
        for metric in ("auroc", "auprc"):
            if not want(metric):
                continue
            vals = np.array([out[(metric, c)] for c in spec.classes])
            ok = np.isfinite(vals).any(axis=1) if vals.size else np.zeros(0, bool)
            out[(metric, None)] = vals[ok].mean(0) if ok.any() else np.full(w.shape[0], np.nan)
        return out

    return fn
