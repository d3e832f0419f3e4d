"""DeLong's test against its direct O(mn) definition; identical models; midranks."""

import numpy as np
import pytest
from scipy.stats import norm, rankdata
from sklearn.metrics import roc_auc_score

from medmoe.metrics import delong_test, midrank


def _delong_naive(y, scores):
    """DeLong et al. (1988) structural components written directly with the O(mn) kernel psi."""
    x, z = scores[:, y], scores[:, ~y]
    psi = (x[:, :, None] > z[:, None, :]) + 0.5 * (x[:, :, None] == z[:, None, :])  # (k, m, n)
    v10, v01 = psi.mean(2), psi.mean(1)
    m, n = x.shape[1], z.shape[1]
    return psi.mean((1, 2)), np.cov(v10) / m + np.cov(v01) / n


@pytest.mark.parametrize("seed", range(5))
def test_delong_matches_direct_definition(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 200))
    y = rng.integers(0, 2, n).astype(bool)
    a = np.round(rng.normal(size=n) + 1.2 * y, 1)
    b = np.round(0.5 * a + rng.normal(size=n) + 0.5 * y, 1)
    res = delong_test(y, a, b)
    aucs, cov = _delong_naive(y, np.stack([a, b]))
    assert res["auroc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert res["auroc_b"] == pytest.approx(aucs[1], abs=1e-12)
    se = np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert res["se"] == pytest.approx(se, rel=1e-9)
    assert res["z"] == pytest.approx((aucs[0] - aucs[1]) / se, rel=1e-9)
    assert res["p_value"] == pytest.approx(2 * norm.sf(abs(res["z"])), rel=1e-9)
    assert res["ci_low"] < res["difference"] < res["ci_high"]


def test_delong_identical_models_and_midrank():
    y = np.array([0, 1, 0, 1, 1, 0], bool)
    s = np.array([0.2, 0.7, 0.4, 0.4, 0.9, 0.1])
    res = delong_test(y, s, s.copy())
    assert res["p_value"] == 1.0 and res["difference"] == 0.0
    x = np.random.default_rng(0).integers(0, 5, (3, 40)).astype(float)
    np.testing.assert_array_equal(midrank(x), np.stack([rankdata(r) for r in x]))
    with pytest.raises(ValueError, match="both classes"):
        delong_test(np.ones(4), s[:4], s[:4])
