"""Stratified bootstrap: class counts kept per resample, CI coverage at the nominal rate (simulation)."""

import numpy as np
from scipy.stats import norm

from medmoe.metrics import bootstrap, bootstrap_weights, weighted_auroc


def test_stratified_weights_keep_class_counts():
    strata = np.array([0] * 7 + [1] * 3 + [2] * 5)
    chunks = list(bootstrap_weights(strata, 50, np.random.default_rng(0), chunk_elements=15 * 8))
    assert sum(c.shape[0] for c in chunks) == 50 and len(chunks) > 1
    w = np.concatenate(chunks)
    for s, size in ((0, 7), (1, 3), (2, 5)):
        np.testing.assert_array_equal(w[:, strata == s].sum(1), size)
    assert w.std() > 0


def test_bootstrap_ci_covers_true_auroc_at_nominal_rate():
    """200 simulated datasets x 200 stratified resamples: the 95% CI covers the true AUROC ~95% of the time."""
    rng = np.random.default_rng(12345)
    d, n_pos, n_neg = 1.0, 60, 90
    true_auc = norm.cdf(d / np.sqrt(2))  # X ~ N(d, 1), Y ~ N(0, 1): P(X > Y)
    y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    covered = 0
    for i in range(200):
        s = np.r_[rng.normal(d, 1, n_pos), rng.normal(0, 1, n_neg)]
        _, lo, hi = bootstrap(lambda w, s=s: {"auroc": weighted_auroc(s, y, w)}, y.size, y, 200, seed=i)["auroc"]
        covered += lo <= true_auc <= hi
    coverage = covered / 200
    assert 0.88 <= coverage <= 0.99, coverage
