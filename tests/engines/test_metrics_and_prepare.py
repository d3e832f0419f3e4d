import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from medmoe.engines import MultimodalPrepareBatch, TaskMetric, task_metrics


def test_task_metric_matches_sklearn_and_skips_missing_labels():
    torch.manual_seed(0)
    metric = TaskMetric({"a": 3, "b": 2}, "auroc", task="a")
    metric.reset()
    all_logits, all_labels = [], []
    for _ in range(3):
        logits, labels = torch.randn(10, 3), torch.randint(-1, 3, (10,))
        metric.update(({"a": logits, "b": torch.randn(10, 2)}, {"a": labels, "b": torch.zeros(10)}))
        all_logits.append(logits), all_labels.append(labels)
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    keep = labels >= 0
    expected = roc_auc_score(labels[keep].numpy(), logits[keep].softmax(-1).numpy(), multi_class="ovr")
    assert metric.compute() == pytest.approx(expected, abs=1e-6)


def test_mean_metric_skips_undefined_tasks():
    metric = TaskMetric(["a", "b"], "accuracy")
    metric.reset()
    metric.update(
        (
            {"a": torch.tensor([[2.0, 0.0], [0.0, 2.0]]), "b": torch.zeros(2, 2)},
            {"a": torch.tensor([0, 0]), "b": torch.tensor([-1, -1])},
        )
    )
    assert metric.compute() == pytest.approx(0.5)
    assert set(task_metrics(["a", "b"])) == {"a_auroc", "a_accuracy", "b_auroc", "b_accuracy"}
    single = TaskMetric(["a"], "auroc", task="a")
    single.reset()
    single.update(({"a": torch.randn(3, 2)}, {"a": torch.tensor([1, 1, 1])}))
    assert math.isnan(single.compute())  # one class present: AUROC undefined
    with pytest.raises(ValueError, match="unknown task"):
        TaskMetric(["a"], task="z")


def test_prepare_batch_splits_inputs_and_targets():
    prep = MultimodalPrepareBatch(["cc", "mlo"], {"density": 4, "risk": 2})
    batch = {
        "cc": torch.zeros(2, 1, 4, 4),
        "mlo": torch.zeros(2, 1, 4, 4),
        "modality_mask": torch.ones(2, 2, dtype=torch.bool),
        "density": torch.tensor([1, -1]),
        "exam_id": ["x", "y"],
    }
    inputs, targets = prep(batch, "cpu")
    assert set(inputs) == {"cc", "mlo", "modality_mask"}
    assert targets["density"].tolist() == [1, -1] and targets["risk"].tolist() == [-1, -1]
    with pytest.raises(KeyError, match="'mlo'"):
        prep({k: v for k, v in batch.items() if k != "mlo"}, "cpu")


def test_prepare_batch_passes_ids_when_asked():
    batch = {"cc": torch.zeros(2, 1, 4, 4), "modality_mask": torch.ones(2, 1, dtype=torch.bool), "exam_id": ["x", "y"]}
    inputs, _ = MultimodalPrepareBatch(["cc"], ["density"], id_key="exam_id")(batch, "cpu")
    assert inputs["exam_id"] == ["x", "y"]
    inputs, _ = MultimodalPrepareBatch(["cc"], ["density"], id_key="exam_id")(
        {**batch, "exam_id": torch.tensor([3, 4])}
    )
    assert inputs["exam_id"].tolist() == [3, 4]
    no_ids = {k: v for k, v in batch.items() if k != "exam_id"}
    assert "exam_id" not in MultimodalPrepareBatch(["cc"], ["density"], id_key="exam_id")(no_ids)[0]  # inference
    with pytest.raises(ValueError, match="'exam_id' must hold one id per sample"):
        MultimodalPrepareBatch(["cc"], ["density"], id_key="exam_id")({**batch, "exam_id": ["x"]})
