import json

import pytest
import torch
from ignite.engine import Engine

from medmoe.engines import EvaluationWriter


def test_threshold_chosen_on_val_and_scored_on_test_only(tmp_path):
    # val: score 0.3 separates the classes (threshold lands there); test: scores on both sides of it
    val_scores, val_labels = [0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]
    test_scores, test_labels = [0.25, 0.35, 0.05, 0.9], [0, 1, 1, 0]
    scores = torch.tensor(val_scores + test_scores)
    batch = {
        "id": [f"s{i}" for i in range(8)],
        "split": ["val"] * 4 + ["test"] * 4,
    }
    logits = torch.stack([torch.zeros(8), torch.log(scores / (1 - scores))], dim=1)  # softmax -> p(1) = score

    def step(engine, _):
        return {"pred": {"t": logits}, "label": {"t": torch.tensor(val_labels + test_labels)}}

    engine = Engine(step)
    writer = EvaluationWriter(tmp_path, {"t": 2}, id_key="id", n_bootstrap=0, split_key="split", threshold_split="val")
    writer.attach(engine)
    engine.run([batch])  # ignite puts the batch in engine.state.batch
    metrics = json.loads((tmp_path / "metrics.json").read_text())["tasks"]["t"]
    assert metrics["n"] == 4  # only the test rows are scored
    assert metrics["threshold"] == pytest.approx(0.3, abs=1e-6)  # the lowest val score of class 1
    # test predictions at that threshold: [0, 1, 0, 1] vs labels [0, 1, 1, 0] -> sensitivity 1/2, specificity 1/2
    assert metrics["balanced_accuracy"] == pytest.approx(0.5)
    assert metrics["auroc"] == pytest.approx(0.25)  # 1 of 4 (positive, negative) pairs ranked right


def test_threshold_split_needs_the_split_key(tmp_path):
    with pytest.raises(ValueError, match="threshold_split needs split_key"):
        EvaluationWriter(tmp_path, {"t": 2}, threshold_split="val")
