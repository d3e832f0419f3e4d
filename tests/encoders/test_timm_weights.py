"""Pretrained timm weights into TimmEmbedding, GroupedPatchEmbedding and TransformerBlock (tiny, no download)."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from medmoe.blocks import TransformerBlock
from medmoe.blocks.transformer import timm_block_key_map
from medmoe.encoders import GroupedPatchEmbedding, TimmEmbedding, load_pretrained, timm_patch_key_map


def _save(model: torch.nn.Module, path) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


@pytest.mark.parametrize("name", ["test_resnet", "test_convnext"])
def test_timm_embedding_loads_full_model_file(tmp_path, name):
    torch.manual_seed(0)
    full = timm.create_model(name, pretrained=False).eval()  # an RGB ImageNet-style checkpoint
    path = tmp_path / f"{name}.safetensors"
    _save(full, path)
    with pytest.warns(UserWarning, match="unused from the file"):  # the classifier has no place in features_only
        embed = TimmEmbedding(name, 2, 1, 32, 16, pretrained_weights=str(path)).eval()
    x = torch.randn(2, 1, 32, 32)
    expected = full.forward_features(x.expand(-1, 3, -1, -1))  # grey = RGB (x, x, x) for the summed stem
    for backbone in embed.backbones:
        torch.testing.assert_close(backbone(x)[-1], expected, rtol=1e-4, atol=1e-4)


def test_timm_embedding_per_modality_and_errors(tmp_path):
    torch.manual_seed(0)
    full = timm.create_model("test_resnet", pretrained=False)
    path = tmp_path / "w.pt"
    torch.save(full.state_dict(), path)
    torch.manual_seed(1)
    with pytest.warns(UserWarning):
        embed = TimmEmbedding("test_resnet", 2, 3, 32, 16, pretrained_weights=[path, None])
    loaded, random = (dict(b.named_parameters())["conv1.0.weight"] for b in embed.backbones)
    assert torch.equal(loaded, full.conv1[0].weight) and not torch.equal(random, full.conv1[0].weight)
    with pytest.raises(ValueError, match="3 entries for 2 modalities"):
        TimmEmbedding("test_resnet", 2, 1, 32, 16, pretrained_weights=[path, path, path])
    other = timm.create_model("resnet10t", pretrained=False)  # another architecture: one error naming the file
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(
        ValueError,
        match=r"(?s)other\.pt.*missing in the file.*shape mismatch.*conv1.0.weight \(24, 3, 3, 3\) -> \(16, 1, 3, 3\)",
    ):
        TimmEmbedding("test_resnet", 1, 1, 32, 16, pretrained_weights=tmp_path / "other.pt")


def _tiny_vit(**kwargs):
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, **kwargs)


def test_patch_embedding_from_timm_vit():
    torch.manual_seed(0)
    vit = _tiny_vit().eval()
    state = vit.state_dict()
    embed = GroupedPatchEmbedding(2, 1, 32, 8, 192)
    load_pretrained(embed, state, key_map=timm_patch_key_map(embed), ignore_unexpected=["*"])
    x = torch.randn(2, 2, 1, 32, 32)
    tokens = embed(x)
    for g in range(2):
        expected = vit.patch_embed(x[:, g].expand(-1, 3, -1, -1)) + vit.pos_embed[:, 1:]
        torch.testing.assert_close(tokens[g], expected, rtol=1e-5, atol=1e-5)
    bigger = GroupedPatchEmbedding(1, 3, 48, 8, 192)  # a 6 x 6 grid from the 4 x 4 checkpoint: resampled
    load_pretrained(bigger, state, key_map=timm_patch_key_map(bigger), ignore_unexpected=["*"])
    from timm.layers import resample_abs_pos_embed

    torch.testing.assert_close(bigger.position[0], resample_abs_pos_embed(vit.pos_embed, [6, 6])[:, 1:])


@pytest.mark.parametrize("groups", [1, 2])
def test_dense_block_from_timm_equals_timm(groups):
    torch.manual_seed(0)
    vit = _tiny_vit(num_heads=4).eval()
    block = TransformerBlock(192, 768, 4, num_groups=groups).eval()
    report = load_pretrained(block, vit.state_dict(), key_map=timm_block_key_map(block, "blocks.1."))
    assert len(report.loaded) == len(block.state_dict())
    x = torch.randn(groups, 2, 17, 192)
    y = block(x)
    for g in range(groups):
        torch.testing.assert_close(y[g], vit.blocks[1](x[g]), rtol=1e-4, atol=1e-5)


def test_block_reports_layer_scale_it_cannot_hold():
    vit = _tiny_vit(num_heads=4, init_values=1e-5)
    block = TransformerBlock(192, 768, 4)
    with pytest.raises(ValueError, match=r"(?s)unexpected.*ls1\.gamma"):
        load_pretrained(block, vit.state_dict(), key_map=timm_block_key_map(block, "blocks.0."))


def test_m4oe_timm_embedder_per_view_weights(tmp_path):
    from medmoe.nets import M4oE

    torch.manual_seed(0)
    full = timm.create_model("test_resnet", pretrained=False)
    torch.save(full.state_dict(), tmp_path / "cnn.pt")
    sizes = dict(image_size=32, patch_size=8, hidden_size=16, mlp_dim=32, embedder="timm:test_resnet")
    with pytest.warns(UserWarning, match="unused from the file"):
        model = M4oE(["cc", "mlo"], {"density": 4}, pretrained_weights={"mlo": str(tmp_path / "cnn.pt")}, **sizes)
    stem = full.conv1[0].weight.sum(1, keepdim=True)
    cc, mlo = (dict(b.named_parameters())["conv1.0.weight"] for b in model.embedder.backbones)
    torch.testing.assert_close(mlo, stem)
    assert not torch.allclose(cc, stem)
    with pytest.raises(ValueError, match=r"names \['xx'\], not image modalities"):
        M4oE(["cc", "mlo"], {"density": 4}, pretrained_weights={"xx": str(tmp_path / "cnn.pt")}, **sizes)
