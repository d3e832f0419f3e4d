"""Shared fixtures of the engine tests."""

import pytest
import torch

from medmoe.nets import create_model


@pytest.fixture
def make_m4oe():
    """``make_m4oe(**options)``: a tiny M4oE (2 views of 16 x 16, hidden 32, 2 experts per layer), seeded."""

    def make(seed: int = 0, **kwargs) -> torch.nn.Module:
        torch.manual_seed(seed)
        base = {"modalities": ["a", "b"], "tasks": {"t": 2}, "image_size": 16, "patch_size": 8, "hidden_size": 32}
        base.update(mlp_dim=64, num_heads=4, msoe_experts=2, mtoe_experts=2, fusion_experts=2)
        return create_model("m4oe", **{**base, **kwargs})

    return make
