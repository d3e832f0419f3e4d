import json
from types import SimpleNamespace

import pytest
from torch.utils.data import Dataset

from medmoe.engines import corruption_sweep


class LevelData(Dataset):
    def __init__(self, level):
        self.level = level

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return i


class StubEvaluator:
    """Reports AUROC 1 - level / 100 for task a, undefined (NaN) for task b, like a degrading model."""

    def __init__(self):
        self.state, self.data_loader, self.runs = SimpleNamespace(metrics={}), None, 0

    def run(self):
        self.runs += 1
        level = self.data_loader.dataset.level
        self.state.metrics = {"a_auroc": 1 - level / 100, "b_auroc": float("nan")}


def test_sweep_records_each_level_and_writes_json_and_plot(tmp_path):
    evaluator = StubEvaluator()
    result = corruption_sweep(evaluator, LevelData, [0, 20, 50], ["a", "b"], tmp_path)
    assert evaluator.runs == 3
    assert result["auroc"] == {"a": [1.0, 0.8, 0.5], "b": [None, None, None]}
    assert result["mean_auroc"] == [1.0, 0.8, 0.5]
    assert json.loads((tmp_path / "robustness.json").read_text()) == result
    assert (tmp_path / "robustness.png").stat().st_size > 1000


def test_sweep_needs_the_auroc_metrics(tmp_path):
    with pytest.raises(KeyError, match="computes no 'c_auroc'"):
        corruption_sweep(StubEvaluator(), LevelData, [0], ["c"], tmp_path)
