"""Every bundle's metadata.json: the keys MONAI's bundle specification requires, and tensor formats that match
what the network built from train.json really takes and returns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
NAMES = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file())
TOP_KEYS = [
    "version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
    "optional_packages_version", "task", "description", "authors", "copyright", "data_source", "data_type",
    "image_classes", "label_classes", "pred_classes", "eval_metrics", "intended_use", "references",
    "network_data_format",
]  # fmt: skip
TENSOR_KEYS = ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data"]
TENSOR_KEYS += ["channel_def"]


def _metadata(name: str) -> dict:
    return json.loads((BUNDLES / name / "configs" / "metadata.json").read_text())


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


@pytest.mark.parametrize("name", NAMES)
def test_required_keys_and_changelog(name):
    meta = _metadata(name)
    assert [k for k in TOP_KEYS if k not in meta] == []
    assert max(meta["changelog"], key=_version) == meta["version"]  # the newest changelog entry is this version
    for section, tensors in meta["network_data_format"].items():
        for key, spec in tensors.items():
            assert [k for k in TENSOR_KEYS if k not in spec] == [], (section, key)
            assert len(spec["channel_def"]) == spec["num_channels"], (section, key)


@pytest.mark.parametrize("name", NAMES)
def test_declared_inputs_and_outputs_match_the_network(name):
    torch.manual_seed(0)
    meta = _metadata(name)["network_data_format"]
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / name / "configs" / "train.json"))
    parser["device"] = "cpu"
    network = parser.get_parsed_content("network_def").eval()
    batch_size, batch = 2, {}
    for key, spec in meta["inputs"].items():
        channels = [spec["num_channels"]] if spec["type"] == "image" or spec["format"] in ("bool", "tabular") else []
        shape = [batch_size, *channels, *spec["spatial_shape"]]
        batch[key] = torch.ones(shape, dtype=torch.bool) if spec["dtype"] == "bool" else torch.rand(shape)
    with torch.no_grad():
        out = network(batch)
    assert set(meta["outputs"]) <= set(out)
    for key, spec in meta["outputs"].items():
        assert tuple(out[key].shape) == (batch_size, spec["num_channels"], *spec["spatial_shape"]), key
        assert str(out[key].dtype) == f"torch.{spec['dtype']}", key
