"""Quadratic-weighted kappa against scikit-learn; its weighted form equals the kappa of the resampled cases."""

import numpy as np
import pytest

from medmoe.metrics import bootstrap_weights, quadratic_kappa, weighted_quadratic_kappa


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quadratic_kappa_matches_sklearn(seed: int) -> None:
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    expected = cohen_kappa_score(y, p, weights="quadratic", labels=[0, 1, 2, 3])
    assert quadratic_kappa(y, p, 4) == pytest.approx(expected, abs=1e-12)


def test_weighted_kappa_equals_kappa_of_the_drawn_cases() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 40), np.clip(rng.integers(0, 4, 40) + rng.integers(-1, 2, 40), 0, 3)
    w = next(bootstrap_weights(np.zeros(40), 5, rng))
    for row, values in zip(w, weighted_quadratic_kappa(y, p, 4, w)):
        drawn = np.repeat(np.arange(40), row.astype(int))
        assert values == pytest.approx(quadratic_kappa(y[drawn], p[drawn], 4), abs=1e-12)


def test_kappa_is_nan_when_undefined() -> None:
    assert np.isnan(quadratic_kappa(np.array([1, 1]), np.array([1, 1]), 3))  # one class: no chance disagreement
    assert np.isnan(quadratic_kappa(np.array([], int), np.array([], int), 3))
    assert np.isnan(weighted_quadratic_kappa(np.array([0, 1]), np.array([0, 1]), 3, np.zeros((1, 2)))[0])
