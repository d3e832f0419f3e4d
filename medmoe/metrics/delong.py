"""DeLong's test for correlated AUROCs with the fast midrank algorithm.

DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated receiver operating
characteristic curves: a nonparametric approach", Biometrics 44:837-845; computed with the O(N log N)
midrank algorithm of Sun & Xu (2014), "Fast implementation of DeLong's algorithm for comparing the areas
under correlated receiver operating characteristic curves", IEEE Signal Processing Letters 21(11):1389-1393.

With ``m`` positives and ``n`` negatives, ``T_Z`` the midranks of all ``m + n`` scores, ``T_X`` those of the
positives among the positives and ``T_Y`` those of the negatives among the negatives (Sun & Xu, eqs. 11-14):

    AUC   = (sum_i T_Z(X_i) - m (m + 1) / 2) / (m n)
    V10_i = (T_Z(X_i) - T_X(X_i)) / n          structural components of the positives
    V01_j = 1 - (T_Z(Y_j) - T_Y(Y_j)) / m      structural components of the negatives
    S     = cov(V10) / m + cov(V01) / n        covariance of the AUCs of the k models
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

__all__ = ["delong_covariance", "delong_test", "midrank"]


def midrank(x: np.ndarray) -> np.ndarray:
    """Midranks (1-based, ties share the average rank) along the last axis.

    Args:
        x: ``(..., N)`` values.

    Returns:
        ``(..., N)`` float64 midranks.

    Example:
        >>> midrank(np.array([3.0, 1.0, 3.0, 2.0])).tolist()
        [3.5, 1.0, 3.5, 2.0]
    """
    x = np.asarray(x, np.float64)
    flat = x.reshape(-1, x.shape[-1])
    out = np.empty_like(flat)
    for row, vals in enumerate(flat):  # one sort per model (k is 1 or 2); the work inside is vectorised
        order = np.argsort(vals, kind="mergesort")
        sorted_vals = vals[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_vals) != 0) + 1]
        ends = np.r_[starts[1:], sorted_vals.size]  # exclusive
        avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
        out[row, order] = np.repeat(avg, ends - starts)
    return out.reshape(x.shape)


def delong_covariance(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROCs of ``k`` models on the same cases and DeLong's covariance matrix.

    Args:
        scores: ``(k, N)`` or ``(N,)`` scores of ``k`` models, larger = more likely positive.
        positive: ``(N,)`` bool, the true class (both classes must be present).

    Returns:
        ``aucs`` ``(k,)`` and ``cov`` ``(k, k)``.

    Raises:
        ValueError: if only one class is present.
    """
    scores = np.atleast_2d(np.asarray(scores, np.float64))
    positive = np.asarray(positive, bool)
    m, n = int(positive.sum()), int((~positive).sum())
    if m == 0 or n == 0:
        raise ValueError("DeLong's test needs both classes; only one class is present")
    x, y = scores[:, positive], scores[:, ~positive]
    tx, ty = midrank(x), midrank(y)
    tz = midrank(np.concatenate([x, y], axis=1))
    aucs = (tz[:, :m].sum(1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    sx = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(scores), len(scores)))
    sy = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(scores), len(scores)))
    return aucs, sx / m + sy / n


def delong_test(positive: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, ci: float = 0.95) -> dict[str, float]:
    """Two-sided DeLong test of ``AUROC_a == AUROC_b`` for two models scored on the same cases.

    Args:
        positive: ``(N,)`` bool (or 0/1), the true class.
        scores_a: ``(N,)`` scores of model A.
        scores_b: ``(N,)`` scores of model B.
        ci: level of the normal-approximation interval of the difference.

    Returns:
        ``{"auroc_a", "auroc_b", "difference", "ci_low", "ci_high", "se", "z", "p_value", "n", "n_positive"}``;
        ``difference = auroc_a - auroc_b``. When the difference has zero variance (identical rankings),
        ``z = 0`` and ``p_value = 1``.

    Example:
        >>> y = np.array([0, 0, 1, 1, 0, 1])
        >>> r = delong_test(y, np.array([.1, .2, .8, .9, .3, .7]), np.array([.5, .2, .4, .9, .6, .1]))
        >>> r["auroc_a"], round(r["auroc_b"], 3)
        (1.0, 0.444)
    """
    positive = np.asarray(positive).astype(bool)
    aucs, cov = delong_covariance(np.stack([scores_a, scores_b]), positive)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    if se > 1e-12:
        z = diff / se
        p = float(2 * norm.sf(abs(z)))
    else:
        z, p = 0.0, 1.0
    half = float(norm.ppf(0.5 + ci / 2)) * se
    return {
        "auroc_a": float(aucs[0]),
        "auroc_b": float(aucs[1]),
        "difference": diff,
        "ci_low": diff - half,
        "ci_high": diff + half,
        "se": se,
        "z": float(z),
        "p_value": p,
        "n": int(positive.size),
        "n_positive": int(positive.sum()),
    }
