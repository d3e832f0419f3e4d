"""Patient-level split shared by the adapters and demo cohorts."""

from __future__ import annotations

import pandas as pd
import pytest

from medmoe.data import split_by_patient


def test_counts_follow_fractions_and_depend_only_on_ids_and_seed():
    ids = [str(p) for p in [1, 2, *range(4, 10)]]
    splits = split_by_patient(ids, seed=1)
    assert pd.Series(splits).value_counts().to_dict() == {"train": 6, "val": 1, "test": 1}
    assert split_by_patient(list(reversed(ids)) + ids[:3], seed=1) == splits  # order and duplicates ignored
    assert split_by_patient(ids, seed=2) != splits
    halves = pd.Series(split_by_patient(ids, fractions=(0.5, 0.5, 0.0))).value_counts().to_dict()
    assert halves == {"train": 4, "val": 4}


def test_bad_fractions_raise():
    with pytest.raises(ValueError, match="fractions"):
        split_by_patient(["a"], fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="fractions"):
        split_by_patient(["a"], fractions=(0.5, 0.5))
