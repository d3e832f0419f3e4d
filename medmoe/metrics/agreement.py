"""Agreement of ordinal predictions with labels: Cohen's kappa with quadratic weights (weighted, for the bootstrap).

Cohen (1968), "Weighted kappa", Psychological Bulletin 70(4):213-220:
``kappa = 1 - sum(V O) / sum(V E)`` with disagreement weights ``V_ij = (i - j)^2 / (K - 1)^2``, ``O`` the
confusion matrix and ``E = outer(row sums, column sums) / total`` its chance counterpart.
"""

from __future__ import annotations

import numpy as np

__all__ = ["quadratic_kappa", "weighted_quadratic_kappa"]


def weighted_quadratic_kappa(labels: np.ndarray, preds: np.ndarray, classes: int, weights: np.ndarray) -> np.ndarray:
    """Quadratic-weighted kappa of classes ``0..classes-1`` for each row of case weights.

    Args:
        labels: ``(N,)`` integer labels.
        preds: ``(N,)`` integer predictions.
        classes: number of ordinal classes ``K``.
        weights: ``(R, N)`` case weights (bootstrap counts, or ones for the point estimate).

    Returns:
        ``(R,)`` kappa values; NaN where undefined (no weight, ``K < 2``, or a single class in labels and
        predictions alike).

    Example:
        >>> y = np.array([0, 1, 2, 2])
        >>> weighted_quadratic_kappa(y, y, 3, np.ones((2, 4))).tolist()
        [1.0, 1.0]
    """
    labels, preds = np.asarray(labels, np.int64), np.asarray(preds, np.int64)
    weights = np.atleast_2d(np.asarray(weights, np.float64))
    if labels.size == 0 or classes < 2:
        return np.full(weights.shape[0], np.nan)
    cell = np.zeros((labels.size, classes * classes))
    cell[np.arange(labels.size), labels * classes + preds] = 1.0
    observed = (weights @ cell).reshape(-1, classes, classes)  # R K K confusion matrices
    total = observed.sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = observed.sum(2)[:, :, None] * observed.sum(1)[:, None, :] / total[:, None, None]
        i, j = np.indices((classes, classes))
        disagreement = (i - j) ** 2 / (classes - 1) ** 2
        numerator = (disagreement * observed).sum((1, 2))
        denominator = (disagreement * expected).sum((1, 2))
        return np.where(denominator > 0, 1.0 - numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def quadratic_kappa(labels: np.ndarray, preds: np.ndarray, classes: int) -> float:
    """Cohen's kappa with quadratic weights for ordinal classes ``0..classes-1``; NaN if undefined.

    Example:
        >>> quadratic_kappa(np.array([0, 1, 2]), np.array([0, 1, 2]), 3)
        1.0
    """
    labels = np.asarray(labels)
    return float(weighted_quadratic_kappa(labels, preds, classes, np.ones((1, labels.size)))[0])
