"""Calibration: expected calibration error (weighted, for the bootstrap) and the reliability-diagram data.

Guo, Pleiss, Sun & Weinberger (2017), "On calibration of modern neural networks", ICML, eq. 3: with
equal-width confidence bins ``B_b``, ``ECE = sum_b (|B_b| / N) |acc(B_b) - conf(B_b)|``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["reliability_curve", "weighted_ece"]


def weighted_ece(confidence: np.ndarray, correct: np.ndarray, weights: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Expected calibration error with equal-width bins (Guo et al. 2017, eq. 3) for each weight row.

    ``ECE = sum_b (|B_b| / N) |acc(B_b) - conf(B_b)|`` with bins ``[0, 1/n_bins), ..., [1 - 1/n_bins, 1]``.

    Args:
        confidence: ``(N,)`` predicted probability in ``[0, 1]``.
        correct: ``(N,)`` outcome in ``{0, 1}`` (true class for binary calibration, hit for top-label).
        weights: ``(R, N)`` case weights.
        n_bins: number of equal-width bins.

    Returns:
        ``(R,)`` ECE values.
    """
    bins = np.clip((confidence * n_bins).astype(np.int64), 0, n_bins - 1)
    onehot = np.zeros((confidence.size, n_bins))
    onehot[np.arange(confidence.size), bins] = 1.0
    gap = weights @ (onehot * (correct.astype(np.float64) - confidence)[:, None])  # (R, B): sum of acc - conf
    total = weights.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(gap).sum(1) / total


def reliability_curve(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> dict[str, np.ndarray]:
    """Data of a reliability diagram: mean confidence, observed frequency and count per equal-width bin.

    Args:
        confidence: ``(N,)`` predicted probability in ``[0, 1]``.
        correct: ``(N,)`` outcome in ``{0, 1}`` (true class for binary calibration, hit for top-label).
        n_bins: number of bins ``[0, 1/n_bins), ..., [1 - 1/n_bins, 1]``.

    Returns:
        ``{"confidence", "observed", "count"}``, each ``(n_bins,)``; NaN confidence / frequency in empty bins.

    Example:
        >>> r = reliability_curve(np.array([0.1, 0.15, 0.9]), np.array([0, 1, 1]), n_bins=2)
        >>> r["count"].tolist(), r["observed"].tolist()
        ([2, 1], [0.5, 1.0])
    """
    confidence = np.asarray(confidence, np.float64)
    bins = np.clip((confidence * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "confidence": np.bincount(bins, confidence, n_bins) / count,
            "observed": np.bincount(bins, np.asarray(correct, np.float64), n_bins) / count,
            "count": count,
        }
