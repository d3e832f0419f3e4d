"""SoftMoEMlp: Soft MoE as timm's mlp_layer (tiny ViT, forward / backward, options it cannot honour)."""

from functools import partial

import pytest
import timm
import torch
from torch import nn

from medmoe.layers import SoftMoE, SoftMoEMlp


def _vit(mlp_layer, **kwargs):
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2, num_classes=3, mlp_layer=mlp_layer, **kwargs
    )


@pytest.mark.parametrize(
    "make", [lambda: SoftMoEMlp.partial(num_experts=4, num_slots=2), lambda: partial(SoftMoEMlp, num_experts=3)]
)
def test_timm_vit_with_soft_moe_trains(make):
    torch.manual_seed(0)
    vit = _vit(make(), proj_drop_rate=0.1)
    mlps = [block.mlp for block in vit.blocks]
    assert all(isinstance(m, SoftMoEMlp) for m in mlps)
    moe = mlps[0].moe
    assert moe.experts.w1.shape == (moe.num_experts, 192, 768) and moe.experts.drop.p == 0.1
    x = torch.randn(2, 3, 32, 32)
    logits = vit(x)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    dead = [n for n, p in vit.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient for {dead}"
    router = [n for n, _ in vit.named_parameters() if "router.phi" in n]
    assert len(router) == 2


def test_adapter_is_the_soft_moe_layer():
    torch.manual_seed(0)
    adapter = SoftMoEMlp(in_features=16, hidden_features=32, num_experts=4, num_slots=2).eval()
    reference = SoftMoE(16, 32, num_experts=4, num_slots=2).eval()
    reference.load_state_dict(adapter.moe.state_dict())
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(adapter(x), reference(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="tokens"):
        adapter(torch.randn(2, 16))


def test_dtype_and_timm_defaults():
    layer = SoftMoEMlp(8, 16, act_layer=timm.layers.GELU, bias=(True, True), drop=(0.1, 0.1), dtype=torch.float64)
    assert layer.moe.experts.w1.dtype == torch.float64 and layer.moe.experts.drop.p == 0.1
    assert SoftMoEMlp(8).moe.experts.w1.shape == (4, 8, 8)  # hidden_features defaults to in_features, as timm's Mlp


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"out_features": 4}, "out_features"),
        ({"act_layer": nn.ReLU}, "exact GELU"),
        ({"act_layer": partial(nn.GELU, approximate="tanh")}, "exact GELU"),
        ({"norm_layer": nn.LayerNorm}, "norm"),
        ({"bias": False}, "biases"),
        ({"drop": (0.0, 0.1)}, "dropout rate"),
        ({"use_conv": True}, "use_conv"),
    ],
)
def test_options_it_cannot_honour(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SoftMoEMlp(8, 16, **kwargs)


@pytest.mark.parametrize(
    "vit_kwargs, match",
    [({"proj_bias": False}, "biases"), ({"scale_mlp_norm": True}, "norm"), ({"act_layer": "relu"}, "exact GELU")],
)
def test_timm_options_it_cannot_honour(vit_kwargs, match):
    with pytest.raises(ValueError, match=match):
        _vit(SoftMoEMlp.partial(), **vit_kwargs)
