"""TimmEmbedding / M4oE with one timm backbone shared across views (views folded into the batch); no download."""

import pytest
import timm
import torch

from medmoe.encoders import TimmEmbedding
from medmoe.nets import M4oE, create_model

NAME = "test_resnet"  # a tiny timm CNN with BatchNorm


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _pair(g: int = 3):
    """A shared embedder and a per-view one whose every backbone holds the shared one's weights."""
    torch.manual_seed(0)
    shared = TimmEmbedding(NAME, g, 1, 32, 16, shared_backbone=True)
    for bn in (m for m in shared.modules() if isinstance(m, torch.nn.BatchNorm2d)):  # timm zero-inits the last
        bn.weight.data.uniform_(0.5, 1.5)  # BN of each residual branch: no gradient reaches the branch before a step
        bn.running_var.uniform_(0.5, 2.0)
    torch.manual_seed(1)
    per_view = TimmEmbedding(NAME, g, 1, 32, 16)
    for backbone in per_view.backbones:
        backbone.load_state_dict(shared.backbones[0].state_dict())
    per_view.proj.load_state_dict(shared.proj.state_dict())
    per_view.position.data.copy_(shared.position)
    return shared, per_view


def test_shared_backbone_has_one_backbone_of_parameters():
    shared, per_view = _pair(g=3)
    assert len(shared.backbones) == 1 and len(per_view.backbones) == 3
    backbone = _count(shared.backbones[0])
    assert backbone > 0 and _count(per_view) - _count(shared) == 2 * backbone
    assert shared.grid_size == per_view.grid_size and shared.num_tokens == per_view.num_tokens


def test_shared_equals_per_view_backbones_with_the_same_weights():
    shared, per_view = _pair(g=3)
    shared.eval(), per_view.eval()  # BatchNorm on running statistics: train mode pools the views' batch statistics
    x = torch.randn(2, 3, 1, 32, 32)
    out = shared(x)
    assert out.shape == (3, 2, shared.num_tokens, 16)
    torch.testing.assert_close(out, per_view(x), rtol=1e-5, atol=1e-5)
    y = shared(x[:, [1, 0, 2]])  # each view keeps its own projection and position: the order matters
    assert not torch.allclose(y[0], out[0])


def test_shared_backbone_gradient_is_the_sum_over_views():
    shared, per_view = _pair(g=3)
    shared.eval(), per_view.eval()
    x = torch.randn(2, 3, 1, 32, 32)
    weight = torch.randn(3, 2, shared.num_tokens, 16)
    (shared(x) * weight).sum().backward()
    (per_view(x) * weight).sum().backward()
    dead = [n for n, p in shared.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient for {dead}"
    views = [dict(b.named_parameters()) for b in per_view.backbones]
    for name, param in shared.backbones[0].named_parameters():
        expected = sum(v[name].grad for v in views)
        torch.testing.assert_close(param.grad, expected, rtol=1e-4, atol=1e-5, msg=name)


def test_shared_backbone_loads_one_local_state_dict(tmp_path):
    torch.manual_seed(0)
    full = timm.create_model(NAME, pretrained=False).eval()
    path = tmp_path / "cnn.pt"
    torch.save(full.state_dict(), path)
    with pytest.warns(UserWarning, match="unused from the file"):  # the classifier has no place in features_only
        embed = TimmEmbedding(NAME, 2, 1, 32, 16, pretrained_weights=path, shared_backbone=True).eval()
    x = torch.randn(2, 1, 32, 32)
    expected = full.forward_features(x.expand(-1, 3, -1, -1))  # grey = RGB (x, x, x) for the summed stem
    torch.testing.assert_close(embed.backbones[0](x)[-1], expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"one entry per modality \(2\) but shared_backbone=True"):
        TimmEmbedding(NAME, 2, 1, 32, 16, pretrained_weights=[path, None], shared_backbone=True)


def test_m4oe_shares_a_pretrained_backbone_by_default(tmp_path):
    torch.manual_seed(0)
    torch.save(timm.create_model(NAME, pretrained=False).state_dict(), tmp_path / "cnn.pt")
    file = str(tmp_path / "cnn.pt")
    sizes = dict(image_size=32, patch_size=8, hidden_size=16, mlp_dim=32, embedder=f"timm:{NAME}")
    views, tasks = ["cc", "mlo", "s2d_cc"], {"density": 4}
    with pytest.warns(UserWarning, match="unused from the file"):
        default = M4oE(views, tasks, pretrained_weights=file, **sizes)
        per_file = M4oE(views, tasks, pretrained_weights={"cc": file}, **sizes)
        forced = M4oE(views, tasks, pretrained_weights=file, shared_backbone=False, **sizes)
    assert default.embedder.shared_backbone and len(default.embedder.backbones) == 1
    assert not per_file.embedder.shared_backbone and len(per_file.embedder.backbones) == 3
    assert len(forced.embedder.backbones) == 3
    scratch = create_model("m4oe", modalities=views, tasks=tasks, **sizes)  # no weights: per view, as before
    assert len(scratch.embedder.backbones) == 3
    shared = create_model("m4oe", modalities=views, tasks=tasks, shared_backbone=True, **sizes)
    assert len(shared.embedder.backbones) == 1
    assert _count(scratch) - _count(shared) == 2 * _count(shared.embedder.backbones[0])
    batch = {k: torch.rand(2, 1, 32, 32) for k in views}
    assert shared(batch)["density"].shape == (2, 4)


def test_m4oe_shared_backbone_rejects_what_it_cannot_share(tmp_path):
    torch.save(timm.create_model(NAME, pretrained=False).state_dict(), tmp_path / "cnn.pt")
    sizes = dict(image_size=32, patch_size=8, hidden_size=16, mlp_dim=32)
    with pytest.raises(ValueError, match="shared_backbone=True"):
        M4oE(["cc", "mlo"], {"density": 4}, embedder=f"timm:{NAME}", shared_backbone=True,
             pretrained_weights={"cc": str(tmp_path / "cnn.pt")}, **sizes)  # fmt: skip
    with pytest.raises(ValueError, match="shared_backbone=True needs a timm embedder"):
        M4oE(["cc", "mlo"], {"density": 4}, shared_backbone=True, **sizes)


def test_checkpoint_options_carry_the_backbone_choice_to_inference(tmp_path):
    """Training chose a shared backbone from its weights file; inference (no weights file) rebuilds it from
    model_options.json, so the checkpoint loads (bundles' inference.json: shared_backbone = saved_option(...))."""
    from medmoe.engines.model_options import saved_option, write_model_options

    torch.save(timm.create_model(NAME, pretrained=False).state_dict(), tmp_path / "cnn.pt")
    sizes = dict(image_size=32, patch_size=8, hidden_size=16, mlp_dim=32, embedder=f"timm:{NAME}")
    views, tasks = ["cc", "mlo"], {"density": 4}
    with pytest.warns(UserWarning, match="unused from the file"):
        trained = M4oE(views, tasks, pretrained_weights=str(tmp_path / "cnn.pt"), **sizes)
    ckpt = tmp_path / "model.pt"
    torch.save(trained.state_dict(), ckpt)
    write_model_options(ckpt, trained)
    assert saved_option(ckpt, "shared_backbone") is True
    assert saved_option(tmp_path / "other.pt", "shared_backbone") is None  # no options file: the model's default
    rebuilt = create_model("m4oe", modalities=views, tasks=tasks, shared_backbone=saved_option(ckpt, "shared_backbone"),
                           **sizes)  # fmt: skip
    rebuilt.load_state_dict(torch.load(ckpt, weights_only=True))  # strict: every key matches
    with pytest.raises(RuntimeError, match="backbones.1"):  # without it: one backbone per view, keys missing
        create_model("m4oe", modalities=views, tasks=tasks, **sizes).load_state_dict(
            torch.load(ckpt, weights_only=True)
        )
