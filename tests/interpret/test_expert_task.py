"""Expert-task assignment P(E|T): hand-computed joint, table, dataset mean, summary, plot, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmoe.interpret import (
    dataset_expert_task,
    expert_task_joint,
    expert_task_summary,
    expert_task_table,
    plot_expert_task,
)
from medmoe.losses import modality_expert_task_joint


def test_hand_computed_example_from_combine_weights() -> None:
    # 1 sample, 2 modalities x 1 token, 2 experts, 2 tasks; each token's combine sums to 1 over (E, T)
    combine = torch.tensor([[[[0.4, 0.1], [0.2, 0.3]], [[0.1, 0.1], [0.2, 0.6]]]])  # b m E T
    pi = modality_expert_task_joint(combine, 2).numpy()  # b M E T: combine / 2 tokens
    both = expert_task_joint(pi)
    # P(E,T) = ([[0.4, 0.1], [0.2, 0.3]] + [[0.1, 0.1], [0.2, 0.6]]) / 2 = [[0.25, 0.1], [0.2, 0.45]]
    assert both[0] == pytest.approx(np.array([[0.25, 0.1], [0.2, 0.45]]))
    first_only = expert_task_joint(pi, np.array([[True, False]]))
    assert first_only[0] == pytest.approx(np.array([[0.4, 0.1], [0.2, 0.3]]))
    assert np.isnan(expert_task_joint(pi, np.array([[False, False]]))).all()

    table = expert_task_table(["s"], both, ["t1", "t2"])
    assert list(table.columns) == ["id", "task", "expert_0", "expert_1"]
    # P(E|t1) = [0.25, 0.2] / 0.45; P(E|t2) = [0.1, 0.45] / 0.55
    assert table[["expert_0", "expert_1"]].to_numpy() == pytest.approx(np.array([[5 / 9, 4 / 9], [2 / 11, 9 / 11]]))


def test_dataset_level_is_the_mean_over_samples_and_skips_nan_samples() -> None:
    joints = np.array(
        [
            [[0.25, 0.1], [0.2, 0.45]],
            [[0.3, 0.3], [0.2, 0.2]],  # P(E|t1) = [0.6, 0.4], P(E|t2) = [0.6, 0.4]
            [[np.nan, np.nan], [np.nan, np.nan]],  # no modality present
        ]
    )
    expected = np.array([[(5 / 9 + 0.6) / 2, (4 / 9 + 0.4) / 2], [(2 / 11 + 0.6) / 2, (9 / 11 + 0.4) / 2]])
    assert dataset_expert_task(joints) == pytest.approx(expected)
    summary = expert_task_summary(joints, ["t1", "t2"], ["a", "b"])
    assert list(summary.columns) == ["task", "expert", "probability", "n"]
    assert summary["probability"].to_numpy() == pytest.approx(expected.ravel())
    assert set(summary["n"]) == {2}
    assert expert_task_table(["x", "y", "z"], joints, ["t1", "t2"]).iloc[4:, 2:].isna().all().all()
    assert np.isnan(dataset_expert_task(joints[2:])).all()


def test_rejects_mismatched_or_bad_inputs(tmp_path) -> None:
    joints = np.full((2, 3, 2), 1 / 6)
    with pytest.raises(ValueError, match="joints must be"):
        expert_task_table(["a"], joints, ["t1", "t2"])
    with pytest.raises(ValueError, match="joints must be"):
        expert_task_table(["a", "b"], joints, ["t1"])
    with pytest.raises(ValueError, match="joints must be"):
        expert_task_table(["a", "b"], joints, ["t1", "t2"], experts=["e0", "e1"])
    with pytest.raises(ValueError, match="present must be"):
        expert_task_joint(np.full((2, 2, 3, 1), 1 / 6), np.ones((2, 3), bool))
    with pytest.raises(ValueError, match="finite"):
        expert_task_joint(-np.ones((1, 1, 1, 1)))
    with pytest.raises(ValueError, match="values must be"):
        plot_expert_task(np.full((2, 3), 1 / 3), ["t1"], tmp_path / "x.png")


def test_plot(tmp_path) -> None:
    values = np.random.default_rng(0).dirichlet(np.ones(16), size=2)
    assert plot_expert_task(values, ["risk", "density"], tmp_path / "e.png", n=40).stat().st_size > 1000
