"""Each bundle's configs/full_resolution.json, layered on train.json, parses and builds its network.

Nothing trains at full size here (a CPU cannot); the network is built at the full input size (the timm backbone's
probe runs at 1024 x 1024) and the convolutional bundles run one forward at a reduced size.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from medmoe.nets import ModelOutput

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def _parser(bundle: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / bundle / "configs" / f) for f in ("train.json", "full_resolution.json")])
    parser["device"] = "cpu"
    for key, value in overrides.items():
        parser[key] = value
    return parser


@pytest.mark.parametrize("bundle", ["gamma_m4oe", "adni_i2moe", "fastmri_i2m2"])
def test_full_resolution_uses_the_disk_cache_and_workers(bundle):
    parser = _parser(bundle)
    assert parser.get_parsed_content("cache") == "disk" and parser.get_parsed_content("num_workers") >= 4
    assert parser.get_parsed_content("precision") == "fp32"  # on the CPU; bf16 / fp16 on a GPU (default_precision)
    assert parser.get_parsed_content("train#dataset#cache") == "disk"


def test_gamma_full_resolution_builds_with_a_pretrained_resnet50(tmp_path):
    import timm
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    weights = tmp_path / "resnet50.safetensors"
    save_file(timm.create_model("resnet50", pretrained=False).state_dict(), str(weights))
    parser = _parser("gamma_m4oe", pretrained_weights=str(weights))
    assert parser.get_parsed_content("image_size") == [1024, 1024]
    network = parser.get_parsed_content("network_def")
    backbone = network.embedder.backbones[0]
    torch.testing.assert_close(backbone.conv1.weight, load_file(str(weights))["conv1.weight"])  # loaded
    assert network.embedder.grid_size == (32, 32)  # 1024 / stride 32: 1024 fundus tokens ...
    assert network.volume_embedders["oct"].num_tokens == 1024  # ... and 1024 OCT tokens (512 / 16 squared)
    assert network.segmentation_tasks["cup"]["classes"] == 2
    assert 250e6 < sum(p.numel() for p in network.parameters()) < 300e6  # 32 MSoE / 128 MToE experts of width 384


def test_adni_full_resolution_builds_and_runs_a_reduced_volume():
    parser = _parser("adni_i2moe")
    assert parser.get_parsed_content("image_size") == [160, 192, 160]
    assert parser.get_parsed_content("pixdim") == [1.0, 1.0, 1.0]
    network = parser.get_parsed_content("network_def").eval()
    features = parser.get_parsed_content("tabular").num_features
    batch = {
        "mri": torch.randn(2, 1, 32, 64, 32),  # the encoder is convolutional: a reduced volume is enough here
        **{k: torch.randn(2, n) for k, n in features.items()},
        "modality_mask": torch.ones(2, 3, dtype=torch.bool),
    }
    with torch.no_grad():
        out = network(batch)
    assert isinstance(out, ModelOutput) and out["diagnosis"].shape == (2, 3) and torch.isfinite(out["diagnosis"]).all()


def test_fastmri_full_resolution_builds_a_preact_resnet18_and_runs():
    parser = _parser("fastmri_i2m2")
    assert parser.get_parsed_content("image_size") == [320, 320]
    network = parser.get_parsed_content("network_def").eval()
    assert 30e6 < sum(p.numel() for p in network.parameters()) < 40e6  # three PreAct ResNet-18 (11 M each) + heads
    batch = {"magnitude": torch.randn(2, 1, 64, 64), "phase": torch.randn(2, 1, 64, 64)}
    batch["modality_mask"] = torch.ones(2, 2, dtype=torch.bool)
    with torch.no_grad():
        out = network(batch)
    assert set(out) == {"acl", "meniscus", "cartilage", "other"} and all(v.shape == (2, 2) for v in out.values())
