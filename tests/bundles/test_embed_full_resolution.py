"""embed_m4oe's configs/full_resolution.json: parses layered on train.json and builds M4oE at full size, upcycled
from a ViT-S checkpoint (random weights in timm's layout here: tests never download). No training at this size."""

from __future__ import annotations

import timm
import torch
from bundle_runner import REPO
from monai.bundle import ConfigParser

CONFIGS = REPO / "bundles" / "embed_m4oe" / "configs"


def layered() -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "full_resolution.json")])
    parser["device"] = "cpu"
    return parser


def test_full_resolution_overrides_by_id():
    parser = layered()
    assert parser.get_parsed_content("image_size") == [1024, 832]
    net = parser.get("network_def")
    assert net["name"] == "m4oe" and net["modalities"] == "@modalities"  # train.json's model, resized by id
    assert (net["patch_size"], net["hidden_size"], net["num_heads"], net["mlp_dim"]) == (16, 384, 6, 1536)
    options = {k: parser.get_parsed_content(k) for k in ("cache", "num_workers", "precision")}
    assert options == {"cache": "disk", "num_workers": 8, "precision": "bf16"}
    assert parser.get_parsed_content("activation_checkpointing") is True
    assert parser.get_parsed_content("pretrained_weights").endswith("pretrained/vit_small_patch16_224.pt")
    assert parser.get_parsed_content("loss").aux_weights == {"mutual_information": -0.05}  # no retriever losses


def test_full_resolution_network_builds_upcycled_from_a_vit_s_file(tmp_path):
    vit_s = timm.create_model("vit_small_patch16_224", pretrained=False).state_dict()
    torch.save(vit_s, tmp_path / "vit_s.pt")
    parser = layered()
    parser["pretrained_weights"] = str(tmp_path / "vit_s.pt")
    model = parser.get_parsed_content("network_def")
    assert model.embedder.grid_size == (64, 52) and model.embedder.num_tokens == 3328  # 4 views x 3328 tokens
    assert 150e6 < sum(p.numel() for p in model.parameters()) < 250e6
    experts = model.msoe.blocks[3].mlp.experts.w1  # dense block 3's MLP in every view's every expert
    torch.testing.assert_close(experts, vit_s["blocks.3.mlp.fc1.weight"].t().expand_as(experts))
    assert all(block.activation_checkpointing for block in model.msoe.blocks)
