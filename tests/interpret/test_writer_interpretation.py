"""EvaluationWriter with an M4oE network: modality contributions and expert-task files, single-task warning."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from ignite.engine import Engine

from medmoe.engines import EvaluationWriter
from medmoe.interpret import dataset_contributions, expert_task_joint
from medmoe.losses import modality_expert_task_joint
from medmoe.nets import create_model

MODALITIES = ["cc", "mlo", "s2d"]


def _model(tasks: dict[str, int]) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(
        "m4oe",
        modalities=MODALITIES,
        tasks=tasks,
        image_size=16,
        patch_size=4,
        hidden_size=32,
        mlp_dim=32,
        num_heads=4,
        msoe_experts=2,
        mtoe_experts=3,
        fusion_experts=2,
    ).eval()


def _batches() -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for start, mask in ((0, [[1, 1, 1], [1, 0, 1]]), (2, [[1, 1, 0], [0, 1, 1]])):
        batch = {m: torch.rand(2, 1, 16, 16, generator=generator) for m in MODALITIES}
        batch["modality_mask"] = torch.tensor(mask, dtype=torch.bool)
        batch["id"] = [f"s{start}", f"s{start + 1}"]
        batches.append(batch)
    return batches


def _run(model: torch.nn.Module, tasks: dict[str, int], out: Path, **kwargs) -> list[dict]:
    seen, combine = [], []
    model.mtoe.moe.register_forward_hook(lambda module, args, out: combine.append(out[1]))  # MToE combine weights

    def step(engine: Engine, batch: dict) -> dict:
        with torch.no_grad():
            pred = model(batch)
        pi = modality_expert_task_joint(combine[-1], len(MODALITIES)).numpy()
        mask = batch["modality_mask"].numpy()
        joint = pi.sum(2) * mask[:, :, None]  # P(M, T) over the present modalities, by hand
        seen.append({"joint": joint / joint.sum((1, 2), keepdims=True), "pi": pi, "mask": mask})
        return {"pred": pred, "label": {t: torch.zeros(2, dtype=torch.long) for t in tasks}}

    engine = Engine(step)
    EvaluationWriter(out, tasks, id_key="id", network=model, with_metrics=False, **kwargs).attach(engine)
    engine.run(_batches())
    return seen


def test_writes_contributions_and_expert_task_files(tmp_path: Path) -> None:
    tasks = {"risk": 2, "density": 3}
    seen = _run(_model(tasks), tasks, tmp_path, modalities=MODALITIES)
    joints = np.concatenate([s["joint"] for s in seen])
    mask = np.concatenate([s["mask"] for s in seen])

    per_sample = pd.read_csv(tmp_path / "modality_contributions.csv")
    assert list(per_sample.columns) == ["id", "task", *MODALITIES] and len(per_sample) == 8
    assert per_sample[MODALITIES].sum(1).to_numpy() == pytest.approx(np.ones(8))
    summary = pd.read_csv(tmp_path / "modality_contributions_dataset.csv")
    assert summary["n_present"].tolist() == mask.sum(0).tolist() * 2
    assert summary["contribution"].to_numpy() == pytest.approx(dataset_contributions(joints).ravel())
    assert (tmp_path / "modality_contributions.png").stat().st_size > 1000

    experts = pd.read_csv(tmp_path / "expert_task.csv")
    columns = ["expert_0", "expert_1", "expert_2"]
    assert list(experts.columns) == ["id", "task", *columns]
    expected = np.concatenate([expert_task_joint(s["pi"], s["mask"]) for s in seen])  # n E T
    expected = (expected / expected.sum(1, keepdims=True)).transpose(0, 2, 1).reshape(8, 3)  # (id, task) rows
    assert experts[columns].to_numpy() == pytest.approx(expected, abs=1e-6)
    dataset = pd.read_csv(tmp_path / "expert_task_dataset.csv")
    assert set(dataset["n"]) == {4}
    means = experts.groupby("task", sort=False)[columns].mean().loc[list(tasks)].to_numpy().ravel()
    assert dataset["probability"].to_numpy() == pytest.approx(means, abs=1e-6)
    assert (tmp_path / "expert_task.png").stat().st_size > 1000


def test_modalities_default_to_the_network_and_are_checked(tmp_path: Path) -> None:
    tasks = {"risk": 2, "density": 3}
    _run(_model(tasks), tasks, tmp_path)  # no modalities given: the network's
    assert list(pd.read_csv(tmp_path / "modality_contributions.csv").columns)[2:] == MODALITIES
    with pytest.raises(ValueError, match="modalities must name"):
        EvaluationWriter(tmp_path, tasks, network=_model(tasks), modalities=["cc", "mlo"])


def test_single_task_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tasks = {"risk": 2}
    with caplog.at_level(logging.WARNING, logger="medmoe.engines.writers"):
        _run(_model(tasks), tasks, tmp_path, modalities=MODALITIES)
    assert "uniform over the present modalities by construction" in caplog.text
    summary = pd.read_csv(tmp_path / "modality_contributions_dataset.csv")
    assert summary["contribution"].to_numpy() == pytest.approx(np.full(3, 1 / 3))
    assert (tmp_path / "expert_task.csv").exists()
