"""RetrievalWriter and the retrieval interpretation: supports and expert gates per retrieved embedding."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from ignite.engine import Engine

from medmoe.blocks import MoERetriever
from medmoe.engines import RetrievalWriter, find_retriever
from medmoe.interpret import retrieval_rows, retrieval_summary
from medmoe.nets import create_model

VIEWS = ["cc", "mlo", "s2d"]
T, F = True, False


def retriever(**kwargs) -> MoERetriever:
    torch.manual_seed(0)
    cfg = dict(num_heads=2, num_supports=2, num_candidates=2, num_shared=1, top_k=2, capacity=8)
    return MoERetriever(3, 2, 8, **{**cfg, **kwargs})


def test_expert_names_follow_the_index_layout() -> None:
    model = retriever()
    assert model.expert_names(VIEWS) == ["cc_0", "cc_1", "mlo_0", "mlo_1", "s2d_0", "s2d_1", "shared_0"]
    assert model.expert_names()[:2] == ["m0_0", "m0_1"]
    with pytest.raises(ValueError, match="expected 3 modality names"):
        model.expert_names(["cc"])
    with pytest.raises(ValueError, match="no candidate experts"):
        retriever(mode="mean").expert_names(VIEWS)


def test_rows_average_each_experts_gate_over_tokens_by_hand() -> None:
    choices = {
        "sample": torch.tensor([1, 0]),
        "modality": torch.tensor([2, 0]),
        "support_index": torch.tensor([[1, 2], [3, 0]]),
        "support_valid": torch.tensor([[True, True], [True, False]]),
        "bank_ids": ["t0", "t1", "t2", "t3"],
        "fallback": torch.tensor([False, True]),
        "expert_index": torch.tensor([[[4, 6], [6, 5]], [[0, 1], [0, 6]]]),  # P=2, n=2 tokens, top-2
        "expert_gate": torch.tensor([[[0.75, 0.25], [0.5, 0.5]], [[1.0, 0.0], [0.5, 0.5]]]),
    }
    names = retriever().expert_names(VIEWS)
    table = retrieval_rows(choices, ["a", "b"], VIEWS, names)
    assert table[["id", "modality", "support_ids", "fallback"]].values.tolist() == [
        ["b", "s2d", "t1;t2", False],
        ["a", "cc", "t3", True],
    ]
    gates = table[[f"gate_{n}" for n in names]].to_numpy()
    assert gates[0] == pytest.approx([0, 0, 0, 0, 0.375, 0.25, 0.375])  # s2d_0 .75/2, s2d_1 .5/2, shared .75/2
    assert gates[1] == pytest.approx([0.75, 0, 0, 0, 0, 0, 0.25])
    assert gates.sum(1) == pytest.approx([1.0, 1.0])
    summary = retrieval_summary(table)
    assert summary.loc["cc", "retrieved"] == 1 and summary.loc["cc", "fallback_rate"] == 1.0
    with pytest.raises(ValueError, match="expert_names are needed"):
        retrieval_rows(choices, ["a", "b"], VIEWS)


def test_writer_records_every_absent_view_of_an_m4oe_evaluation(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(
        "m4oe",
        modalities=VIEWS,
        tasks={"t": 2},
        in_channels=1,
        image_size=[16, 16],
        patch_size=8,
        hidden_size=16,
        mlp_dim=32,
        num_heads=2,
        msoe_experts=2,
        mtoe_experts=4,
        fusion_experts=2,
        missing_modality="retriever",
        retriever_kwargs={"num_supports": 2, "num_candidates": 2, "num_shared": 1, "num_heads": 2, "id_key": "id"},
    )

    def batch(mask: list[list[bool]], prefix: str) -> dict:
        b = len(mask)
        out = {v: torch.randn(b, 1, 16, 16) for v in VIEWS}
        out["modality_mask"] = torch.tensor(mask)
        out["id"] = [f"{prefix}{i}" for i in range(b)]
        return out

    model.train()
    with torch.no_grad():
        model(batch([[T, T, T]] * 4, "train"))  # fills the bank with training exams
    model.eval()
    batches = [batch([[T, F, T], [T, T, T]], "x"), batch([[F, T, F]], "y"), batch([[T, T, T]], "z")]

    def step(engine: Engine, data: dict) -> dict:
        with torch.no_grad():
            return {"pred": model(data)}

    engine = Engine(step)
    RetrievalWriter(tmp_path, model, VIEWS, id_key="id").attach(engine)
    engine.run(batches)
    table = pd.read_csv(tmp_path / "retrieval.csv")
    assert table[["id", "modality"]].values.tolist() == [["x0", "mlo"], ["y0", "cc"], ["y0", "s2d"]]
    training = {f"train{i}" for i in range(4)}
    assert all(set(s.split(";")) <= training for s in table["support_ids"])
    gate_columns = [c for c in table.columns if c.startswith("gate_")]
    assert table[gate_columns].sum(1).to_numpy() == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    assert (table.loc[0, ["gate_cc_0", "gate_cc_1", "gate_s2d_0", "gate_s2d_1"]] == 0).all()  # mlo's block only
    summary = pd.read_csv(tmp_path / "retrieval_summary.csv", index_col="modality")
    assert summary["retrieved"].to_dict() == {"cc": 1, "mlo": 1, "s2d": 1}
    assert (tmp_path / "retrieval_experts.png").stat().st_size > 1000


def test_no_absent_view_writes_a_header_only_csv(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("fusion", modalities=VIEWS, tasks={"t": 2}, in_features=4, hidden_size=8,
                         backbone_kwargs={"num_heads": 2}, missing_modality="retriever").eval()  # fmt: skip
    batch = {**{v: torch.randn(2, 4) for v in VIEWS}, "modality_mask": torch.ones(2, 3, dtype=torch.bool)}
    engine = Engine(lambda e, b: {"pred": model(batch)})
    RetrievalWriter(tmp_path, model, VIEWS).attach(engine)
    engine.run([{"id": ["a", "b"]}])
    assert pd.read_csv(tmp_path / "retrieval.csv").empty
    assert not (tmp_path / "retrieval_experts.png").exists()


def test_networks_without_one_retriever_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has 0 MoERetriever modules"):
        find_retriever(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="fills 3 modalities"):
        RetrievalWriter(tmp_path, retriever(), ["cc"])
    with pytest.raises(ValueError, match="retrieval.*MoERetriever is no MultimodalModel"):
        RetrievalWriter(tmp_path, retriever(), VIEWS)  # the bare block gives no model output
