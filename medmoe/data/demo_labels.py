"""Label draws with exact class proportions, shared by the demo cohorts (EMBED-style and GAMMA-style)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["balanced_labels"]


def balanced_labels(rng: np.random.Generator, n: int, proportions: Sequence[float]) -> np.ndarray:
    """``n`` class labels with the given proportions (largest-remainder rounding), shuffled.

    Args:
        rng: shuffling generator.
        n: number of labels.
        proportions: one non-negative share per class, summing to 1.

    Returns:
        int array of shape ``(n,)`` with class ``c`` exactly ``round(n * proportions[c])`` times (remainders go to
        the largest fractional parts).

    Example:
        >>> sorted(balanced_labels(np.random.default_rng(0), 5, (0.6, 0.4)).tolist())
        [0, 0, 0, 1, 1]
    """
    raw = np.asarray(proportions, dtype=np.float64) * n
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]] += 1
    return rng.permutation(np.repeat(np.arange(len(proportions)), counts))
