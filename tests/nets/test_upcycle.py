"""Sparse upcycling of M4oE from a dense timm ViT: every checkpoint tensor lands where it should."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from medmoe.nets import M4oE
from medmoe.nets.upcycle import upcycle_from_dense

D, H, HEADS = 32, 64, 4


def _vit(depth: int = 3, **kwargs):
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=D,
        depth=depth,
        num_heads=HEADS,
        mlp_ratio=H / D,
        num_classes=5,
        **kwargs,
    ).eval()


def _m4oe(**kwargs):
    torch.manual_seed(1)
    sizes = dict(image_size=32, patch_size=8, hidden_size=D, mlp_dim=H, num_heads=HEADS, msoe_experts=3)
    return M4oE(["cc", "mlo"], {"density": 4, "risk": 2}, fusion_depth=2, fusion_experts=2, **sizes, **kwargs).eval()


def test_every_checkpoint_tensor_lands_where_it_should(tmp_path):
    vit = _vit(depth=3)
    dense = {k: v.contiguous() for k, v in vit.state_dict().items()}
    path = tmp_path / "vit.safetensors"
    save_file(dense, str(path))
    model = _m4oe()
    built = {k: v.clone() for k, v in model.state_dict().items()}
    report = upcycle_from_dense(model, path)
    assert report.source == str(path)
    # every checkpoint tensor is placed or has a stated reason
    placed = set(report.targets.values())
    assert placed | set(report.unused) == set(dense) and not placed & set(report.unused)
    assert set(report.unused) == {"cls_token", "norm.weight", "norm.bias", "head.weight", "head.bias"}
    state = model.state_dict()
    g, e = 2, 3
    for target, source in report.targets.items():
        value, dense_value = state[target], dense[source]
        if target == "embedder.proj.weight":  # RGB stem summed for 1 channel, one copy per modality
            expected = dense_value.sum(1, keepdim=True).repeat(g, 1, 1, 1)
        elif target == "embedder.proj.bias":
            expected = dense_value.repeat(g)
        elif target == "embedder.position":  # same 4 x 4 grid: the class position dropped
            expected = dense_value[:, 1:].unsqueeze(0).repeat(g, 1, 1, 1)
        elif target.endswith(("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias")):
            expected = dense_value.expand(value.shape[0], -1)
        else:  # linear layers: (out, in) -> (copies, in, out); biases (copies, 1, out)
            expected = (dense_value.t() if dense_value.dim() == 2 else dense_value[None]).expand(value.shape)
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=f"{target} <- {source}")
    expected_blocks = {"msoe.blocks.0": 0, "mtoe": 0, "fusion.0": 1, "fusion.1": 2}
    for target, index in expected_blocks.items():
        moe = "moe" if target == "mtoe" else "mlp"
        assert report.targets[f"{target}.{moe}.experts.w1"] == f"blocks.{index}.mlp.fc1.weight"
        assert report.targets[f"{target}.attn.qkv.weight"] == f"blocks.{index}.attn.qkv.weight"
    assert state["msoe.blocks.0.mlp.experts.w1"].shape[0] == g * e
    # routers, task embeddings and heads keep their init; nothing else is left out
    for key in report.initialised:
        assert torch.equal(state[key], built[key]), key
    assert "msoe.blocks.0.mlp.router.phi" in report.initialised and "mtoe.moe.task_embedding" in report.initialised
    assert not [k for k in report.initialised if ".attn." in k or ".experts." in k or k.startswith("embedder.")]


def test_unmapped_dense_block_is_reported():
    vit = _vit(depth=5)
    report = upcycle_from_dense(_m4oe(), vit.state_dict())
    unmapped = {k for k in vit.state_dict() if k.startswith(("blocks.3.", "blocks.4."))}
    assert {k for k in report.unused if k.startswith("blocks.")} == unmapped
    assert report.unused["blocks.4.mlp.fc1.weight"] == "dense block 4 is not mapped to an M4oE block"


def test_experts_identical_and_block_equals_dense_on_constant_tokens():
    """With every expert = the dense MLP, a Soft MoE is NOT the dense MLP in general (dispatch mixes tokens before
    the GELU MLP). It is exactly when all tokens of a sample are equal: each slot is a convex mix of equal tokens,
    so every slot = the token, and combine weights sum to 1 over slots. Attention keeps equal tokens equal."""
    vit = _vit()
    model = _m4oe()
    upcycle_from_dense(model, vit.state_dict())
    w1 = model.msoe.blocks[0].mlp.experts.w1
    assert all(torch.equal(w1[0], w) for w in w1)
    torch.manual_seed(2)
    constant = torch.randn(2, 2, 1, D).expand(2, 2, 16, D)  # (modalities, batch, tokens, d): one token per sample
    out = model.msoe.blocks[0](constant)
    for g in range(2):
        torch.testing.assert_close(out[g], vit.blocks[0](constant[g]), rtol=1e-4, atol=1e-5)
    varied = torch.randn(2, 2, 16, D)
    assert not torch.allclose(model.msoe.blocks[0](varied)[0], vit.blocks[0](varied[0]), atol=1e-3)
    fused = model.fusion[1](constant[0])
    torch.testing.assert_close(fused, vit.blocks[2](constant[0]), rtol=1e-4, atol=1e-5)


def test_noise_is_seeded_and_small():
    vit = _vit()
    a, b, c = _m4oe(), _m4oe(), _m4oe()
    state = torch.random.get_rng_state()
    upcycle_from_dense(a, vit.state_dict(), noise_std=0.01, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state), "the global random state must be untouched"
    upcycle_from_dense(b, vit.state_dict(), noise_std=0.01, seed=7)
    upcycle_from_dense(c, vit.state_dict(), noise_std=0.01, seed=8)
    w1a, w1b, w1c = (m.msoe.blocks[0].mlp.experts.w1 for m in (a, b, c))
    assert torch.equal(w1a, w1b) and not torch.equal(w1a, w1c)
    assert not torch.equal(w1a[0], w1a[1]), "noise makes the experts differ"
    dense = vit.blocks[0].mlp.fc1.weight.t()
    relative = (w1a - dense).std() / dense.std()
    assert 0.005 < relative < 0.02
    assert torch.equal(a.msoe.blocks[0].mlp.experts.b1[1], vit.blocks[0].mlp.fc1.bias[None])


def test_m4oe_pretrained_weights_option(tmp_path):
    vit = _vit()
    path = tmp_path / "vit.pt"
    torch.save(vit.state_dict(), path)
    model = _m4oe(pretrained_weights=str(path))
    torch.testing.assert_close(model.fusion[0].attn.proj.weight[0], vit.blocks[1].attn.proj.weight.t())
    batch = {"cc": torch.rand(2, 1, 32, 32), "mlo": torch.rand(2, 1, 32, 32)}
    assert model(batch)["density"].shape == (2, 4)


def test_errors_name_the_checkpoint(tmp_path):
    path = tmp_path / "scaled.pt"
    torch.save(_vit(init_values=1e-5).state_dict(), path)  # LayerScale: no place in M4oE's blocks
    with pytest.raises(ValueError, match=r"(?s)scaled\.pt.*ls1\.gamma"):
        upcycle_from_dense(_m4oe(), path)
    with pytest.raises(ValueError, match="has 3 blocks"):
        upcycle_from_dense(_m4oe(), _vit().state_dict(), block_map={"fusion.0": 3})
    with pytest.raises(ValueError, match="not a transformer block"):
        upcycle_from_dense(_m4oe(), _vit().state_dict(), block_map={"head": 0})
    wide = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=4)
    with pytest.raises(ValueError, match=r"shape mismatch"):
        upcycle_from_dense(_m4oe(), wide.state_dict())
    with pytest.raises(ValueError, match="timm embedder"):
        _m4oe(pretrained_weights={"cc": str(path)})
    with pytest.raises(ValueError, match="embedder='patch'"):
        upcycle_from_dense(_m4oe(embedder="timm:test_resnet"), _vit().state_dict())


@pytest.mark.parametrize("bundle", ["embed_m4oe", "gamma_m4oe"])
def test_bundle_option_pretrained_weights(tmp_path, bundle):
    """``--pretrained_weights PATH`` on a bundle's train.json upcycles its M4oE from the file."""
    from pathlib import Path

    from monai.bundle import ConfigParser

    root = Path(__file__).resolve().parents[2] / "bundles" / bundle / "configs" / "train.json"
    parser = ConfigParser()
    parser.read_config(str(root))
    net = parser.get("network_def")
    width, patch = net["hidden_size"], net["patch_size"]
    vit = timm.create_model(
        "vit_tiny_patch16_224",
        img_size=64,
        patch_size=patch,
        embed_dim=width,
        depth=2,
        num_heads=net["num_heads"],
        mlp_ratio=net["mlp_dim"] / width,
    )
    path = tmp_path / "dense.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    parser["pretrained_weights"] = str(path)
    model = parser.get_parsed_content("network_def")
    torch.testing.assert_close(model.msoe.blocks[0].mlp.experts.w2[-1], vit.blocks[0].mlp.fc2.weight.t())
    torch.testing.assert_close(model.fusion[0].norm1.weight[0], vit.blocks[1].norm1.weight)


def test_upcycle_timm_soft_moe_vit(tmp_path):
    """A timm ViT with SoftMoEMlp from the dense timm ViT: every dense tensor placed, experts = dense MLP."""
    from medmoe.layers import SoftMoEMlp
    from medmoe.nets.upcycle import upcycle_timm_vit

    dense = _vit(depth=2)
    path = tmp_path / "dense.pt"
    torch.save(dense.state_dict(), path)
    torch.manual_seed(4)
    kwargs = dict(img_size=32, patch_size=8, embed_dim=D, depth=2, num_heads=HEADS, mlp_ratio=H / D, num_classes=5)
    moe = timm.create_model("vit_tiny_patch16_224", mlp_layer=SoftMoEMlp.partial(num_experts=3), **kwargs).eval()
    phi = moe.blocks[1].mlp.moe.router.phi.detach().clone()
    report = upcycle_timm_vit(moe, path)
    assert report.source == str(path) and not report.adapted
    assert sorted(report.ignored_missing) == sorted(
        f"blocks.{i}.mlp.moe.router.{p}" for i in (0, 1) for p in ("phi", "scale")
    )
    state, source = moe.state_dict(), dense.state_dict()
    for key, value in source.items():
        if ".mlp.fc" in key:
            _, block, _, layer, kind = key.split(".")  # blocks.N.mlp.fcK.kind
            fc = layer[-1]
            target = state[f"blocks.{block}.mlp.moe.experts.{kind[0]}{fc}"]
            expected = value.t() if kind == "weight" else value[None]
            assert all(torch.equal(target[e], expected) for e in range(3)), key
        else:
            assert torch.equal(state[key], value), key
    assert torch.equal(moe.blocks[1].mlp.moe.router.phi, phi)  # router keeps its init
    noisy = timm.create_model("vit_tiny_patch16_224", mlp_layer=SoftMoEMlp.partial(num_experts=3), **kwargs)
    upcycle_timm_vit(noisy, path, noise_std=0.01)
    w1 = noisy.blocks[0].mlp.moe.experts.w1
    assert not torch.equal(w1[0], w1[1]) and torch.allclose(w1[0], w1[1], atol=0.01)
    with pytest.raises(ValueError, match="no SoftMoEMlp"):
        upcycle_timm_vit(dense, path)
    deeper = timm.create_model("vit_tiny_patch16_224", mlp_layer=SoftMoEMlp.partial(3), **{**kwargs, "depth": 3})
    with pytest.raises(ValueError, match=r"(?s)dense\.pt.*missing in the file.*blocks\.2\."):
        upcycle_timm_vit(deeper, path)
