"""ExpertWeightsWriter: per-sample weights CSV, summary over the scored split, plots; bad networks rejected."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from ignite.engine import Engine

from medmoe.engines import ExpertWeightsWriter
from medmoe.nets import create_model


def test_writes_weights_summary_and_plots(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(
        "i2moe", modalities=["a", "b"], tasks={"dx": 3}, in_features=4, hidden_size=8, backbone_kwargs={"num_heads": 2}
    ).eval()
    batches = [
        {"a": torch.randn(3, 4), "b": torch.randn(3, 4), "id": ["s1", "s2", "s3"], "split": ["val", "test", "test"]},
        {"a": torch.randn(2, 4), "b": torch.randn(2, 4), "id": ["s4", "s5"], "split": ["test", "val"]},
    ]
    batches[1]["modality_mask"] = torch.tensor([[True, False], [True, True]])  # s4 lacks modality b
    batches[0]["modality_mask"] = torch.ones(3, 2, dtype=torch.bool)
    weights = []

    def step(engine: Engine, batch: dict) -> dict:
        with torch.no_grad():
            out = model(batch)
        weights.append(out.interpret["expert_weights"].clone())
        return {"pred": out}

    engine = Engine(step)
    ExpertWeightsWriter(tmp_path, model, id_key="id", tasks={"dx": 3}, split_key="split").attach(engine)
    engine.run(batches)
    table = pd.read_csv(tmp_path / "expert_weights.csv")
    names = ["unique_a", "unique_b", "synergy", "redundancy"]
    assert list(table["id"]) == ["s1", "s2", "s3", "s4", "s5"] and list(table["split"])[:2] == ["val", "test"]
    expected = torch.cat(weights).numpy()
    assert table[[f"weight_{n}" for n in names]].to_numpy() == pytest.approx(expected, abs=1e-6)
    assert {f"{n}_dx_prob_{k}" for n in names for k in range(3)} <= set(table.columns)
    assert table["present_a"].tolist() == [True] * 5 and table["present_b"].tolist() == [True, True, True, False, True]
    summary = pd.read_csv(tmp_path / "expert_weight_summary.csv", index_col="expert")
    test_rows = [1, 2, 3]  # only the eval split is summarised
    assert summary.loc[names, "mean"].to_numpy() == pytest.approx(expected[test_rows].mean(0), abs=1e-6)
    assert summary.loc[names, "n"].tolist() == [len(test_rows)] * len(names)
    assert (tmp_path / "expert_weights.png").stat().st_size > 1000
    assert (tmp_path / "sample_weights.png").stat().st_size > 1000


def test_rejects_a_network_without_expert_weights(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expert_weights.*Linear is no MultimodalModel"):
        ExpertWeightsWriter(tmp_path, torch.nn.Linear(2, 2))
    i2m2 = create_model("i2m2", modalities=["a"], tasks={"dx": 2}, base_channels=4, blocks=(1,), norm_groups=2)
    with pytest.raises(ValueError, match="expert_weights.*I2M2 declares"):  # experts, but no mixture weights
        ExpertWeightsWriter(tmp_path, i2m2)
