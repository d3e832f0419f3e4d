import json

import numpy as np
import pandas as pd
import pytest
import torch
from ignite.engine import Engine
from sklearn.metrics import roc_auc_score

from medmoe.engines import ExpertScores
from medmoe.nets import ModelOutput, MultimodalModel


class TwoExperts(MultimodalModel):
    """Stand-in with I2M2's interpretation: expert 'mag' sees only samples whose 'seen' flag is set."""

    interpretations = frozenset({"expert_logits", "expert_presence"})

    def forward(self, batch):
        interpret = {
            "expert_logits": {"mag": {"t": batch["mag"]}, "joint": {"t": batch["joint"]}},
            "expert_presence": {"mag": batch["seen"], "joint": torch.ones_like(batch["seen"])},
        }
        return ModelOutput({"t": batch["joint"]}, interpret=interpret)


def run(tmp_path, batches):
    net = TwoExperts()

    def step(engine, batch):
        return {"label": {"t": batch["t"]}, "pred": net(batch)}

    engine = Engine(step)
    ExpertScores(tmp_path, {"t": 2}, net, id_key="id").attach(engine)
    engine.run(batches)
    return json.loads((tmp_path / "expert_metrics.json").read_text()), pd.read_csv(tmp_path / "expert_predictions.csv")


def test_each_expert_is_scored_on_the_labelled_samples_it_saw(tmp_path):
    rng = np.random.default_rng(0)
    n = 24
    labels = torch.tensor(rng.integers(0, 2, n))
    labels[:3] = -1  # missing labels
    seen = torch.tensor(rng.random(n) > 0.3)
    mag, joint = torch.tensor(rng.normal(size=(n, 2))), torch.tensor(rng.normal(size=(n, 2)))
    batches = [
        {
            "id": [f"s{i}" for i in range(j, j + 8)],
            "t": labels[j : j + 8],
            "seen": seen[j : j + 8],
            "mag": mag[j : j + 8],
            "joint": joint[j : j + 8],
        }
        for j in range(0, n, 8)
    ]
    metrics, table = run(tmp_path, batches)
    use_mag, use_joint = (seen & (labels >= 0)).numpy(), (labels >= 0).numpy()
    p_mag, p_joint = mag.softmax(-1)[:, 1].numpy(), joint.softmax(-1)[:, 1].numpy()
    assert metrics["mag"]["t"]["n"] == use_mag.sum() and metrics["joint"]["t"]["n"] == use_joint.sum()
    assert metrics["mag"]["t"]["auroc"] == pytest.approx(roc_auc_score(labels[use_mag], p_mag[use_mag]), abs=1e-6)
    assert metrics["joint"]["t"]["auroc"] == pytest.approx(
        roc_auc_score(labels[use_joint], p_joint[use_joint]), abs=1e-6
    )
    assert table["mag_t_prob_1"].isna().to_numpy().tolist() == (~seen).tolist()  # unseen samples left empty
    assert list(table["id"]) == [f"s{i}" for i in range(n)]


def test_single_class_gives_null_and_bad_network_is_rejected(tmp_path):
    batch = {
        "id": ["a", "b"],
        "t": torch.tensor([1, 1]),
        "seen": torch.tensor([True, True]),
        "mag": torch.zeros(2, 2),
        "joint": torch.zeros(2, 2),
    }
    metrics, _ = run(tmp_path, [batch])
    assert metrics["mag"]["t"] == {"auroc": None, "n": 2}
    with pytest.raises(ValueError, match="expert_logits.*Linear is no MultimodalModel"):
        ExpertScores(tmp_path, {"t": 2}, torch.nn.Linear(2, 2))


def test_balanced_accuracy_at_a_threshold_chosen_on_validation(tmp_path):
    scores = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.25, 0.35, 0.05, 0.9])
    logits = torch.stack([torch.zeros(8), torch.log(scores / (1 - scores))], 1)  # softmax -> p(1) = score
    batch = {
        "id": [f"s{i}" for i in range(8)],
        "split": ["val"] * 4 + ["test"] * 4,
        "t": torch.tensor([0, 0, 1, 1, 0, 1, 1, 0]),
        "seen": torch.ones(8, dtype=torch.bool),
        "mag": logits,
        "joint": logits,
    }
    net = TwoExperts()

    def step(engine, b):
        return {"label": {"t": b["t"]}, "pred": net(b)}

    engine = Engine(step)
    scores_handler = ExpertScores(tmp_path, {"t": 2}, net, id_key="id", split_key="split", threshold_split="val")
    scores_handler.attach(engine)
    engine.run([batch])
    metrics = json.loads((tmp_path / "expert_metrics.json").read_text())["mag"]["t"]
    assert metrics["n"] == 4 and metrics["threshold"] == pytest.approx(0.3, abs=1e-6)
    assert metrics["balanced_accuracy"] == pytest.approx(0.5)  # test: predicted [0, 1, 0, 1] vs [0, 1, 1, 0]
    assert metrics["auroc"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="threshold_split needs split_key"):
        ExpertScores(tmp_path, {"t": 2}, net, threshold_split="val")
