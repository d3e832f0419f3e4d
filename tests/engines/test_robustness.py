import json
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from torch.utils.data import Dataset

from medmoe.engines import MultimodalPrepareBatch, corruption_sweep, task_metrics


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


class MeanScore(torch.nn.Module):
    def forward(self, batch):
        score = batch["m"].flatten(1).mean(1)
        return {"t": torch.stack([-score, score], 1)}


def _cases(n):
    g = torch.Generator().manual_seed(0)
    return [
        {"m": torch.randn(1, 2, generator=g) + i % 2, "modality_mask": torch.ones(1, dtype=torch.bool), "t": i % 2}
        for i in range(n)
    ]


@pytest.mark.parametrize("num_cases", [80, 20])
def test_sweep_scores_every_case_whatever_the_size_of_the_loader_the_evaluator_was_built_with(tmp_path, num_cases):
    evaluator = SupervisedEvaluator(
        "cpu",
        DataLoader(_cases(32), batch_size=16),  # the validation loader: 2 iterations
        MeanScore(),
        prepare_batch=MultimodalPrepareBatch(["m"], {"t": 2}),
        decollate=False,
        key_val_metric=task_metrics({"t": 2}, ("auroc",)),
    )
    seen = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(len(e.state.batch["t"])))
    corruption_sweep(evaluator, lambda level: _cases(num_cases), [0, 10], {"t": 2}, tmp_path, batch_size=16)
    assert sum(seen) == 2 * num_cases  # every case at both levels
