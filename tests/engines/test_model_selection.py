"""A validation task with one class is named, at set-up, as left out of model selection (issue 22)."""

import logging

import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator

from medmoe.engines import TaskMetric
from medmoe.engines.metrics import auroc


def _evaluator(records, tasks):
    class Net(torch.nn.Module):
        def forward(self, x):
            return {t: torch.zeros(x.shape[0], 2) for t in tasks}

    loader = DataLoader(Dataset(records), batch_size=2)
    return SupervisedEvaluator(
        device="cpu",
        val_data_loader=loader,
        network=Net(),
        prepare_batch=lambda batch, device, non_blocking, **kw: (batch["x"], {t: batch[t] for t in tasks}),
        key_val_metric={"val_mean_auroc": TaskMetric(tasks, "auroc")},
        decollate=False,
    )


def test_a_single_class_task_is_named_when_the_evaluator_is_set_up(caplog):
    records = [{"x": torch.zeros(1), "density": i % 2, "risk": 1 if i < 3 else -1} for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="medmoe.engines.metrics"):
        evaluator = _evaluator(records, ["density", "risk"])  # no run yet: the warning comes at set-up
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert message.startswith("validation task 'risk' has only class 1 in its labelled samples")
    assert "left out of model selection ('val_mean_auroc' averages ['density'])" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medmoe.engines.metrics"):
        evaluator.run()  # the same task is not reported again at validation
    assert caplog.records == []
    assert evaluator.state.metrics["val_mean_auroc"] == 0.5  # density's AUROC alone (constant scores)


def test_two_classes_in_every_task_give_no_warning_and_a_task_without_labels_does(caplog):
    records = [{"x": torch.zeros(1), "a": i % 2, "b": -1} for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="medmoe.engines.metrics"):
        _evaluator(records, ["a"])
    assert caplog.records == []
    with caplog.at_level(logging.WARNING, logger="medmoe.engines.metrics"):
        _evaluator(records, ["a", "b"])
    assert "task 'b' has no labels" in caplog.text


def test_without_records_the_first_validation_warns(caplog):
    metric = TaskMetric(["a", "b"], "auroc")
    metric.reset()
    logits, labels = torch.randn(4, 2), torch.tensor([0, 1, 0, 1])
    metric.update(({"a": logits, "b": torch.randn(4, 2)}, {"a": labels, "b": torch.zeros(4)}))
    with caplog.at_level(logging.WARNING, logger="medmoe.engines.metrics"):
        value = metric.compute()
        metric.compute()
    assert value == pytest.approx(auroc(logits.softmax(-1), labels))  # the mean is a's AUROC alone
    assert caplog.text.count("validation task 'b' has only class 0") == 1
