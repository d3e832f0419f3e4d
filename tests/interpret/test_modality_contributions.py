"""Modality contributions P(M|T): per-sample table, presence-aware dataset pooling, summary, plot, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from medmoe.interpret import (
    contributions_summary,
    contributions_table,
    dataset_contributions,
    modality_presence,
    plot_contributions,
)


def _joints(preference: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per-sample P(M, T) ``(n, M, T)`` of a model whose P(M|T) is ``preference`` ``(M, T)`` restricted to the
    present views (the way ``M4oE.modality_task_joint()`` drops an absent view), with uniform P(T)."""
    joints = []
    for mask in present:
        cond = preference * mask[:, None]
        joints.append(cond / cond.sum(0, keepdims=True) / preference.shape[1])
    return np.array(joints)


def test_hand_computed_table_and_nan_for_no_modality() -> None:
    joints = np.array(
        [
            [[0.3, 0.2], [0.2, 0.3]],  # P(M|T): t1 0.6 / 0.4, t2 0.4 / 0.6
            [[0.5, 0.5], [0.0, 0.0]],  # only m1: 1 / 0
            [[0.0, 0.0], [0.0, 0.0]],  # nothing present: NaN
        ]
    )
    table = contributions_table(["a", "b", "c"], joints, ["m1", "m2"], ["t1", "t2"])
    assert list(table.columns) == ["id", "task", "m1", "m2"]
    expected = np.array([[0.6, 0.4], [0.4, 0.6], [1.0, 0.0], [1.0, 0.0]])
    assert table[["m1", "m2"]].to_numpy()[:4] == pytest.approx(expected)
    assert table[table["id"] == "c"][["m1", "m2"]].isna().all().all()
    assert modality_presence(joints).tolist() == [[True, True], [True, False], [False, False]]


def test_dataset_level_is_not_confounded_by_missingness() -> None:
    # the reviewer's GAMMA case: both tasks mildly prefer m2 but m2 (OCT) is absent in 10 % of the samples
    preference = np.array([[0.497, 0.49], [0.503, 0.51]])  # M T
    present = np.ones((120, 2), bool)
    present[:12, 1] = False
    joints = _joints(preference, present)
    old_pooled = joints.sum(0) / joints.sum((0, 1))  # the former estimate: pool joints over all samples
    assert old_pooled[0, 0] > 0.5  # ... flipped the preference
    assert dataset_contributions(joints) == pytest.approx(preference.T, abs=1e-9)
    # with every view present it is the plain mean of the per-sample P(M|T)
    full = joints[12:]
    assert dataset_contributions(full) == pytest.approx((full / full.sum(1, keepdims=True)).mean(0).T)


def test_dataset_level_recovers_preference_under_random_subsets() -> None:
    rng = np.random.default_rng(0)
    preference = np.array([[0.5, 0.2], [0.3, 0.3], [0.2, 0.5]])
    present = rng.random((300, 3)) < 0.6
    present[present.sum(1) == 0, 0] = True
    present[:, 2] &= rng.random(300) < 0.5  # m3 is missing much more often
    present[present.sum(1) == 0, 1] = True
    result = dataset_contributions(_joints(preference, present))
    assert result == pytest.approx(preference.T, abs=1e-8)
    assert result.sum(1) == pytest.approx([1.0, 1.0])


def test_summary_has_presence_counts_and_nan_for_a_modality_never_compared() -> None:
    preference = np.array([[0.6], [0.4], [0.5]])
    present = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1]], bool)  # m3 only ever alone
    joints = _joints(preference, present)
    summary = contributions_summary(joints, ["m1", "m2", "m3"], ["t"])
    assert list(summary.columns) == ["task", "modality", "contribution", "n_present", "n_compared"]
    assert summary["n_present"].tolist() == [3, 2, 1] and summary["n_compared"].tolist() == [2, 2, 0]
    assert summary["contribution"].tolist()[:2] == pytest.approx([0.6, 0.4])
    assert np.isnan(summary["contribution"].iloc[2])
    assert np.isnan(dataset_contributions(np.zeros((2, 2, 1)))).all()
    assert dataset_contributions(np.full((2, 1, 2), 0.5)).tolist() == [[1.0], [1.0]]


@pytest.mark.parametrize(
    ("ids", "modalities", "tasks"),
    [(list("abc"), [], ["t1", "t2"]), (list("abc"), ["m1", "m2"], ["t1", "t2"]), (list("ab"), ["m1"] * 3, ["t"] * 2)],
)
def test_table_rejects_mismatched_names(ids, modalities, tasks) -> None:
    joints = np.full((3, 3, 2), 1 / 6)
    with pytest.raises(ValueError, match="joints must be"):
        contributions_table(ids, joints, modalities, tasks)
    with pytest.raises(ValueError, match="joints must be"):
        contributions_summary(joints, modalities, tasks[:1])


def test_rejects_negative_or_non_finite_joints() -> None:
    joints = np.full((1, 2, 1), 0.5)
    joints[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        dataset_contributions(joints)


def test_plot_checks_shapes_and_writes(tmp_path) -> None:
    contrib = np.array([[0.501, 0.499], [0.498, 0.502]])
    path = plot_contributions(contrib, ["fundus", "oct"], ["glaucoma", "cup"], tmp_path / "c.png", counts=[120, 108])
    assert path.stat().st_size > 1000
    assert plot_contributions(np.array([[0.5, 0.5]]), ["a", "b"], ["t"], tmp_path / "one.png").exists()
    with pytest.raises(ValueError, match="contrib must be"):
        plot_contributions(contrib, [], ["glaucoma", "cup"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="counts needs"):
        plot_contributions(contrib, ["fundus", "oct"], ["glaucoma", "cup"], tmp_path / "x.png", counts=[1])
