"""Exact-proportion label draws shared by the demo cohorts."""

from __future__ import annotations

import numpy as np

from medmoe.data.demo_labels import balanced_labels


def test_exact_counts_with_largest_remainders_and_seeded_order():
    labels = balanced_labels(np.random.default_rng(0), 10, (1 / 3, 1 / 3, 1 / 3))
    assert np.bincount(labels).tolist() == [4, 3, 3]  # 3.33 each: the one left over goes to the first (stable)
    assert np.bincount(balanced_labels(np.random.default_rng(0), 7, (0.5, 0.3, 0.2))).tolist() == [4, 2, 1]
    again = balanced_labels(np.random.default_rng(0), 10, (1 / 3, 1 / 3, 1 / 3))
    assert np.array_equal(labels, again)
    assert not np.array_equal(labels, np.sort(labels))  # shuffled
