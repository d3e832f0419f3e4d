"""Vectorised, stratified bootstrap: resamples as weight matrices, percentile intervals.

A bootstrap resample is represented by a row of counts ``W[r, i]`` = how many times case ``i`` was drawn.
Every weighted metric of :mod:`medmoe.metrics` (:func:`.weighted_auroc`, :func:`.weighted_average_precision`,
:func:`.weighted_ece`, :func:`weighted_mean`) takes a weight matrix ``W`` of shape ``(R, N)`` and returns ``R``
values at once, so the point estimate is the same code with ``W = ones((1, N))`` and ``R`` resamples cost a few
array operations. Resamples are drawn in chunks (``chunk_elements`` bounds ``R_chunk x N``) so memory stays
bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

__all__ = ["bootstrap", "bootstrap_weights", "percentile_ci", "weighted_mean"]


ProgressFn = Callable[[int, int], None]


def bootstrap_weights(
    strata: np.ndarray,
    n_resamples: int,
    rng: np.random.Generator,
    chunk_elements: int = 4_000_000,
) -> Iterator[np.ndarray]:
    """Yield chunks of stratified bootstrap count matrices.

    Within each stratum of size ``m``, ``m`` cases are drawn with replacement, so every resample keeps the
    class counts of the data (the stratified bootstrap; Efron & Tibshirani 1993, ch. 8).

    Args:
        strata: ``(N,)`` stratum code of each case (e.g. the class label); one stratum = plain bootstrap.
        n_resamples: total number of resamples ``R``.
        rng: numpy random generator (seeded by the caller).
        chunk_elements: bound on ``R_chunk * N`` per yielded chunk.

    Yields:
        ``(R_chunk, N)`` float64 arrays of draw counts; the rows of all chunks sum to ``n_resamples`` rows.

    Example:
        >>> w = next(bootstrap_weights(np.array([0, 0, 1]), 4, np.random.default_rng(0)))
        >>> w.shape, w[:, :2].sum(1).tolist(), w[:, 2].tolist()
        ((4, 3), [2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0])
    """
    strata = np.asarray(strata)
    n = strata.shape[0]
    groups = [np.flatnonzero(strata == s) for s in np.unique(strata)]
    chunk = int(max(1, min(n_resamples, chunk_elements // max(n, 1))))
    done = 0
    while done < n_resamples:
        b = min(chunk, n_resamples - done)
        w = np.zeros((b, n), dtype=np.float64)
        for idx in groups:
            m = idx.size
            draws = rng.integers(0, m, size=(b, m))
            draws += (np.arange(b) * m)[:, None]
            w[:, idx] = np.bincount(draws.ravel(), minlength=b * m).reshape(b, m)
        done += b
        yield w


def weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Weighted mean of ``values`` ``(N,)`` under each row of ``weights`` ``(R, N)``; NaN where a row sums to 0."""
    total = weights.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weights @ values.astype(np.float64) / np.where(total > 0, total, 1), np.nan)


def percentile_ci(samples: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval ``(q_{(1-ci)/2}, q_{(1+ci)/2})`` ignoring NaN; ``(nan, nan)`` if none finite."""
    samples = np.asarray(samples, np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(samples, [50 * (1 - ci), 50 * (1 + ci)])
    return float(lo), float(hi)


def bootstrap(
    metric_fn: Callable[[np.ndarray], dict[str, np.ndarray]],
    n_cases: int,
    strata: np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    progress: ProgressFn | None = None,
    chunk_elements: int = 4_000_000,
) -> dict[str, tuple[float, float, float]]:
    """Point estimates and percentile bootstrap CIs of every metric returned by ``metric_fn``.

    Args:
        metric_fn: maps a weight matrix ``(R, N)`` to ``{metric name: (R,) values}``.
        n_cases: ``N``.
        strata: ``(N,)`` stratum codes (class labels) for the stratified bootstrap; ``None`` = one stratum.
        n_resamples: number of bootstrap resamples (0 = no CI).
        seed: seed of the numpy generator, so results are reproducible.
        ci: confidence level of the interval.
        progress: optional callback ``progress(done, total)`` called after each chunk.
        chunk_elements: bound on ``R_chunk * N`` (memory).

    Returns:
        ``{metric: (value, ci_low, ci_high)}``.

    Example:
        >>> fn = lambda w: {"mean": weighted_mean(w, np.arange(10.0))}
        >>> v, lo, hi = bootstrap(fn, 10, n_resamples=200)["mean"]
        >>> v, lo < v < hi
        (4.5, True)
    """
    point = {k: float(v[0]) for k, v in metric_fn(np.ones((1, n_cases))).items()}
    if n_resamples <= 0 or n_cases == 0:
        return {k: (v, float("nan"), float("nan")) for k, v in point.items()}
    strata = np.zeros(n_cases, np.int64) if strata is None else np.asarray(strata)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {k: [] for k in point}
    done = 0
    for w in bootstrap_weights(strata, n_resamples, rng, chunk_elements):
        for k, v in metric_fn(w).items():
            samples[k].append(v)
        done += w.shape[0]
        if progress is not None:
            progress(done, n_resamples)
    out = {}
    for k, v in point.items():
        lo, hi = percentile_ci(np.concatenate(samples[k]), ci) if np.isfinite(v) else (float("nan"), float("nan"))
        out[k] = (v, lo, hi)
    return out
