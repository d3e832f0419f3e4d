"""Patient-level train / val / test split shared by every cohort adapter and demo cohort.

All rows of one patient (exams, eyes, volumes, slices) land in one split, so no patient is seen in training and
evaluation alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["split_by_patient"]


def split_by_patient(
    patient_ids: Iterable[str], seed: int = 0, fractions: Sequence[float] = (0.7, 0.15, 0.15)
) -> dict[str, str]:
    """Assign each patient to "train", "val" or "test" so that all exams of a patient share one split.

    Patients are sorted, shuffled with ``numpy.random.default_rng(seed)`` and cut at the cumulative fractions
    (rounded), so the result depends only on the set of ids and the seed.

    Args:
        patient_ids: patient identifiers (duplicates are ignored).
        seed: shuffle seed.
        fractions: train/val/test fractions; must be three non-negative numbers summing to 1.

    Returns:
        dict patient id -> split name.

    Raises:
        ValueError: if ``fractions`` is not three non-negative numbers summing to 1.

    Example:
        >>> sorted(split_by_patient(["a", "b", "c", "d"], seed=0).values())
        ['test', 'train', 'train', 'train']
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1 (train/val/test), got {fractions}")
    unique = sorted({str(p) for p in patient_ids})
    order = np.random.default_rng(seed).permutation(len(unique))
    n_train = int(round(fractions[0] * len(unique)))
    n_val = int(round((fractions[0] + fractions[1]) * len(unique))) - n_train
    names = ["train"] * n_train + ["val"] * n_val + ["test"] * (len(unique) - n_train - n_val)
    return {unique[i]: names[rank] for rank, i in enumerate(order)}
