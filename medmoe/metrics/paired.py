"""Paired comparison of two models scored on the same cases: "does A beat B beyond noise?".

Both models are resampled together: every bootstrap resample draws the same cases for A and B, so the interval of
the difference keeps the correlation between the two models' errors (the paired bootstrap; Efron & Tibshirani
1993, ch. 16). Beside it, the matching test on the original cases:

* AUROC: DeLong's test for correlated ROC curves (:func:`medmoe.metrics.delong_test`);
* a per-case metric (Dice, IoU, ...): the Wilcoxon signed-rank test of the per-case differences (scipy).

A difference is reported as "no evidence of a difference" when its interval covers 0; otherwise as "A higher" /
"B higher". That is the honest reading for a hospital researcher comparing a mixture of experts with a baseline.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import wilcoxon

from .bootstrap import bootstrap, weighted_mean
from .classification import weighted_auroc
from .delong import delong_test

__all__ = ["paired_auroc_difference", "paired_mean_difference", "verdict"]


def verdict(ci_low: float, ci_high: float, names: tuple[str, str] = ("A", "B")) -> str:
    """Plain-words reading of an interval of ``A - B``.

    Example:
        >>> verdict(-0.02, 0.05), verdict(0.01, 0.04, ("moe", "baseline"))
        ('no evidence of a difference', 'moe higher')
    """
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return "undefined"
    if ci_low <= 0.0 <= ci_high:
        return "no evidence of a difference"
    return f"{names[0] if ci_low > 0 else names[1]} higher"


def paired_auroc_difference(
    positive: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
    names: tuple[str, str] = ("A", "B"),
) -> dict:
    """``AUROC_a - AUROC_b`` on the same cases: paired stratified bootstrap interval and DeLong's p-value.

    Args:
        positive: ``(N,)`` bool (or 0/1), the true class; both classes must be present.
        scores_a: ``(N,)`` scores of model A, larger = more likely positive.
        scores_b: ``(N,)`` scores of model B.
        n_resamples: bootstrap resamples (stratified by class, the same draw for both models).
        seed: seed of the resampling.
        ci: confidence level.
        names: the two models' names, for the verdict.

    Returns:
        ``{"auroc_a", "auroc_b", "difference", "ci_low", "ci_high", "p_value", "delong_ci_low", "delong_ci_high",
        "n", "n_positive", "verdict"}``; the interval is the bootstrap's, ``p_value`` DeLong's.

    Raises:
        ValueError: if only one class is present, or the arrays differ in length.

    Example:
        >>> y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
        >>> r = paired_auroc_difference(y, np.arange(8.0), np.arange(8.0), n_resamples=50)
        >>> r["difference"], r["p_value"], r["verdict"]
        (0.0, 1.0, 'no evidence of a difference')
    """
    positive = np.asarray(positive).astype(bool)
    a, b = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
    if not (a.shape == b.shape == positive.shape) or a.ndim != 1:
        raise ValueError(f"positive, scores_a and scores_b must be 1-D of one length, got {positive.shape}, "
                         f"{a.shape}, {b.shape}")  # fmt: skip
    delong = delong_test(positive, a, b, ci)  # raises for a single class

    def fn(w: np.ndarray) -> dict[str, np.ndarray]:
        return {"difference": weighted_auroc(a, positive, w) - weighted_auroc(b, positive, w)}

    diff, lo, hi = bootstrap(fn, positive.size, positive.astype(np.int64), n_resamples, seed, ci)["difference"]
    return {
        "auroc_a": delong["auroc_a"],
        "auroc_b": delong["auroc_b"],
        "difference": diff,
        "ci_low": lo,
        "ci_high": hi,
        "p_value": delong["p_value"],
        "delong_ci_low": delong["ci_low"],
        "delong_ci_high": delong["ci_high"],
        "n": delong["n"],
        "n_positive": delong["n_positive"],
        "verdict": verdict(lo, hi, names),
    }


def paired_mean_difference(
    values_a: np.ndarray,
    values_b: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
    names: tuple[str, str] = ("A", "B"),
) -> dict:
    """Mean of the per-case differences ``a_i - b_i`` (e.g. Dice): paired bootstrap interval, Wilcoxon p-value.

    Cases where either value is NaN (e.g. Dice of an empty truth and prediction, if so defined) are left out and
    counted in ``n_dropped``.

    Args:
        values_a: ``(N,)`` per-case metric of model A.
        values_b: ``(N,)`` per-case metric of model B, same cases in the same order.
        n_resamples: bootstrap resamples of the cases.
        seed: seed of the resampling.
        ci: confidence level.
        names: the two models' names, for the verdict.

    Returns:
        ``{"mean_a", "mean_b", "difference", "ci_low", "ci_high", "p_value", "n", "n_dropped", "verdict"}``;
        ``p_value`` is the two-sided Wilcoxon signed-rank test (1.0 when every difference is 0).

    Raises:
        ValueError: if the arrays differ in length or no case has both values.
    """
    a, b = np.asarray(values_a, np.float64), np.asarray(values_b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"values_a and values_b must be 1-D of one length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    if not keep.any():
        raise ValueError("no case has a finite value for both models")
    a, b = a[keep], b[keep]
    d = a - b
    diff, lo, hi = bootstrap(lambda w: {"d": weighted_mean(w, d)}, d.size, None, n_resamples, seed, ci)["d"]
    p = float(wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    return {
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "difference": diff,
        "ci_low": lo,
        "ci_high": hi,
        "p_value": p,
        "n": int(d.size),
        "n_dropped": int((~keep).sum()),
        "verdict": verdict(lo, hi, names),
    }
