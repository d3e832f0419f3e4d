"""Decision thresholds chosen on validation cases: Youden's J, or a target sensitivity / specificity."""

from __future__ import annotations

import numpy as np

from .classification import roc_curve

__all__ = ["choose_threshold"]


def choose_threshold(scores: np.ndarray, positive: np.ndarray, rule: str = "youden") -> float:
    """Choose a decision threshold (predict positive when ``score >= threshold``) on validation cases.

    Args:
        scores: ``(N,)`` validation scores.
        positive: ``(N,)`` bool validation labels (both classes needed).
        rule: ``"youden"`` (max sensitivity + specificity - 1), ``"sensitivity=0.9"`` (the highest threshold
            with sensitivity >= 0.9) or ``"specificity=0.9"`` (the lowest threshold with specificity >= 0.9).

    Returns:
        The threshold.

    Raises:
        ValueError: unknown rule, or a validation set without both classes.
    """
    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        raise ValueError(f"cannot choose a threshold on validation cases with a single class (n={positive.size})")
    fpr, tpr, thr = roc_curve(scores, positive)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop the +inf start
    name, _, target = rule.partition("=")
    if name == "youden" and not target:
        return float(thr[np.argmax(tpr - fpr)])
    try:
        goal = float(target)
    except ValueError:
        raise ValueError(f"unknown threshold rule {rule!r}: use youden, sensitivity=0.9 or specificity=0.9") from None
    if name == "sensitivity":
        return float(thr[np.flatnonzero(tpr >= goal)[0]])
    if name == "specificity":
        ok = np.flatnonzero(1 - fpr >= goal)
        return float(thr[ok[-1]]) if ok.size else float(thr[0])
    raise ValueError(f"unknown threshold rule {rule!r}: use youden, sensitivity=0.9 or specificity=0.9")
