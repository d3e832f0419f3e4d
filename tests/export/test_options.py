"""``model_options.json`` beside a checkpoint: written from the network, and a config that differs is named."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from medmoe.data import TabularPreprocessor
from medmoe.engines.model_options import options_path
from medmoe.export import check_model_options, check_tabular, model_options, write_model_options
from medmoe.nets import create_model


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    network = create_model(
        "m4oe",
        modalities=["fundus", "oct"],
        tasks={"grade": 3},
        segmentation_tasks={"cup": {"modality": "fundus", "classes": 2}},
        in_channels=3,
        image_size=(16, 16),
        patch_size=8,
        hidden_size=16,
        mlp_dim=32,
        num_heads=2,
        msoe_experts=2,
        mtoe_experts=2,
        fusion_experts=2,
        seg_feature_size=8,
    )
    ckpt = tmp_path / "model.pt"
    torch.save(network.state_dict(), ckpt)
    assert write_model_options(ckpt, network) == tmp_path / "model_options.json"
    return ckpt


def test_the_options_are_the_networks(saved: Path) -> None:
    options = json.loads(options_path(saved).read_text())
    assert options == {
        "network": "M4oE",
        "modalities": ["fundus", "oct"],
        "tasks": {"grade": 3},
        "segmentation_tasks": {"cup": {"modality": "fundus", "classes": 2}},
    }
    same = check_model_options(
        saved,
        modalities=["fundus", "oct"],
        tasks={"grade": 3},
        segmentation_tasks={"cup": {"modality": "fundus", "classes": 2}},
    )
    assert same == options


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"modalities": ["oct", "fundus"]}, "modalities: ['fundus', 'oct'] in the checkpoint, ['oct', 'fundus'] here"),
        ({"tasks": {"grade": 2}}, "tasks: {'grade': 3} in the checkpoint, {'grade': 2} here"),
        (
            {"segmentation_tasks": {"cup": {"modality": "fundus", "classes": 3}}},
            "mask_classes (cup): 2 in the checkpoint, 3 here",
        ),
    ],
)
def test_an_option_that_differs_is_named(saved: Path, given: dict, named: str) -> None:
    with pytest.raises(ValueError, match="differs from the training run") as err:
        check_model_options(saved, **given)
    assert named in str(err.value) and str(options_path(saved)) in str(err.value)


def test_a_checkpoint_without_options_warns(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert check_model_options(tmp_path / "model.pt", modalities=["a"]) == {}
    assert "model_options.json not found" in caplog.text


def test_a_module_without_modalities_gets_no_file(tmp_path: Path) -> None:
    assert write_model_options(tmp_path / "model.pt", torch.nn.Linear(2, 2)) is None
    assert model_options(torch.nn.Module.__new__(type("M", (torch.nn.Module,), {"modalities": ["a"]}))) == {
        "network": "M",
        "modalities": ["a"],
        "tasks": {},
    }


def test_tabular_blocks_that_differ_are_named(tmp_path: Path) -> None:
    blocks = {"clinical": {"numeric": ["age"], "categorical": ["sex"]}}
    fitted = TabularPreprocessor(blocks).fit(
        [{"id": "a", "age": "70", "sex": "F"}, {"id": "b", "age": "60", "sex": "M"}], "id"
    )
    assert check_tabular(fitted, blocks, "t.json") is fitted
    with pytest.raises(ValueError, match=r"tabular_blocks: .* in t.json"):
        check_tabular(fitted, {"clinical": {"numeric": ["age", "mmse"], "categorical": ["sex"]}}, "t.json")
