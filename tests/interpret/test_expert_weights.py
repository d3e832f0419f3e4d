"""I2MoE expert-weight helpers: clear ValueErrors on bad input, NaN rows never win top-1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmoe.interpret import collect_expert_weights, expert_weight_summary, plot_expert_weights, plot_sample_weights

NAMES = ["unique_a", "unique_b", "synergy", "redundancy"]


def test_nan_rows_are_left_out_of_every_statistic_and_top1() -> None:
    weights = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1], [np.nan, 0.2, 0.2, 0.2]])
    summary = expert_weight_summary(weights, NAMES)
    assert summary["top1"].tolist() == [0.5, 0.0, 0.5, 0.0]
    assert summary["mean"].to_numpy() == pytest.approx([0.4, 0.1, 0.4, 0.1])
    assert summary["n"].tolist() == [2] * 4


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (np.zeros((0, 4)), "no samples"),
        (np.full((2, 4), np.nan), "no sample with finite weights"),
        (np.full((2, 3), 0.25), "one column per expert name"),
    ],
)
def test_bad_weights_raise_value_error(weights, message, tmp_path) -> None:
    with pytest.raises(ValueError, match=message):
        expert_weight_summary(weights, NAMES)
    with pytest.raises(ValueError, match=message):
        plot_expert_weights(weights, NAMES, tmp_path / "v.png")
    with pytest.raises(ValueError, match=message):
        plot_sample_weights(weights, NAMES, tmp_path / "s.png")


def test_sample_plot_checks_ids_and_tolerates_a_nan_row(tmp_path) -> None:
    weights = np.random.default_rng(0).dirichlet(np.ones(4), size=10)
    with pytest.raises(ValueError, match="ids has 2 entries for 10 samples"):
        plot_sample_weights(weights, NAMES, tmp_path / "s.png", ids=["a", "b"])
    weights[3] = np.nan
    assert plot_sample_weights(weights, NAMES, tmp_path / "s.png", ids=[f"s{i}" for i in range(10)]).exists()
    assert plot_expert_weights(weights, NAMES, tmp_path / "v.png").exists()


def test_collect_needs_batches() -> None:
    with pytest.raises(ValueError, match="no batches"):
        collect_expert_weights(torch.nn.Identity(), [])
