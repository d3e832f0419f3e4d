"""M4oE with mixed task types: one classification and one segmentation task."""

import pytest
import timm
import torch

from medmoe.losses import MultiTaskLoss
from medmoe.nets import create_model

MODALITIES = ["fundus", "oct"]
SEG = {"cup": {"modality": "fundus", "classes": 2}}
TINY = dict(
    modalities=MODALITIES,
    tasks={"grade": 3},
    segmentation_tasks=SEG,
    image_size=16,
    patch_size=4,
    hidden_size=32,
    mlp_dim=32,
    num_heads=4,
    msoe_experts=4,
    mtoe_experts=4,
    fusion_experts=2,
    seg_feature_size=8,
)


def batch_of(b=4, size=(16, 16), seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = {k: torch.rand(b, 1, *size, generator=g) for k in MODALITIES}
    batch["modality_mask"] = torch.ones(b, len(MODALITIES), dtype=torch.bool)
    return batch


def targets_of(b=4, size=(16, 16), seed=1):
    g = torch.Generator().manual_seed(seed)
    return {
        "grade": torch.tensor([0, 2, -1, 1])[:b],
        "cup": (torch.rand(b, 1, *size, generator=g) > 0.7).long(),
        "cup_present": torch.tensor([True, False, True, True])[:b],
    }


@pytest.mark.parametrize("size, patch", [((16, 16), 4), ((16, 32), 8), ((32, 16), (8, 4))])
def test_output_shapes(size, patch):
    model = create_model("m4oe", **{**TINY, "image_size": size, "patch_size": patch}).eval()
    out = model(batch_of(size=size))
    assert set(out) == {"grade", "cup"}
    assert out["grade"].shape == (4, 3)
    assert out["cup"].shape == (4, 2, *size)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert model.task_names == ["grade", "cup"] and out.interpret["modality_expert_task_joint"].shape[-1] == 2


def test_every_parameter_receives_a_gradient_with_the_mixed_loss():
    torch.manual_seed(0)
    model = create_model("m4oe", **TINY)
    loss_fn = MultiTaskLoss(
        model.tasks, aux_weights={"mutual_information": -0.05}, segmentation_tasks=model.segmentation_tasks
    )
    batch = batch_of()
    batch["modality_mask"][0, 1] = False  # exercise the missing-modality path too
    loss = loss_fn(model(batch), targets_of())
    assert set(loss_fn.last_terms) == {"grade", "cup", "mutual_information"}
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"No gradient for {dead}"


def test_missing_masks_are_ignored():
    model = create_model("m4oe", **TINY).eval()
    loss_fn = MultiTaskLoss(model.tasks, segmentation_tasks=model.segmentation_tasks)
    preds = model(batch_of())
    targets = targets_of()  # sample 1's mask is flagged absent
    zeros = {**targets, "cup": targets["cup"].clone()}
    zeros["cup"][1] = 0
    noise = {**targets, "cup": targets["cup"].clone()}
    noise["cup"][1] = torch.randint(0, 2, noise["cup"][1].shape)
    torch.testing.assert_close(loss_fn(preds, zeros), loss_fn(preds, noise))
    # ... but a present sample's mask matters
    flipped = {**zeros, "cup": zeros["cup"].clone()}
    flipped["cup"][0] = 1 - flipped["cup"][0]
    assert not torch.allclose(loss_fn(preds, zeros), loss_fn(preds, flipped))
    # no mask present at all: the term is 0 and still differentiable
    none = {**targets, "cup_present": torch.zeros(4, dtype=torch.bool)}
    loss_fn(preds, none)
    assert loss_fn.last_terms["cup"].item() == 0.0


def test_modality_contributions_cover_all_tasks():
    model = create_model("m4oe", **TINY).eval()
    batch = batch_of()
    batch["modality_mask"][2, 1] = False
    batch["oct"][2] = float("nan")
    out = model(batch)
    assert all(torch.isfinite(v).all() for v in out.values())
    contrib = out.interpret["modality_contributions"]
    assert contrib.shape == (4, 2, 2)
    torch.testing.assert_close(contrib.sum(-1), torch.ones(4, 2))
    assert torch.all(contrib[2, :, 1] == 0)
    assert out.aux_losses["mutual_information"].item() >= -1e-6


def test_segmentation_only_model():
    torch.manual_seed(0)
    model = create_model("m4oe", **{**TINY, "tasks": {}})
    out = model(batch_of())
    assert set(out) == {"cup"} and out["cup"].shape == (4, 2, 16, 16)
    (out["cup"].logsumexp(1).sum() + out.aux_losses["mutual_information"]).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_timm_embedder_shape_probe_leaves_the_backbones_untouched():
    from medmoe.encoders.patch import TimmEmbedding

    embedder = TimmEmbedding("resnet18", num_modalities=2, in_channels=1, image_size=32, hidden_size=16)  # 1 x 1 grid
    assert embedder.grid_size == (1, 1) and embedder.training
    assert isinstance(embedder.backbones[0], timm.models.FeatureListNet)  # a timm features_only backbone
    bn = [m for m in embedder.backbones[0].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(int(m.num_batches_tracked) == 0 for m in bn) and all(bool((m.running_var == 1).all()) for m in bn)


def test_timm_embedder_grid_is_upsampled_to_the_image():
    model = create_model("m4oe", **{**TINY, "embedder": "timm:resnet18", "image_size": 64}).eval()
    assert model(batch_of(b=2, size=(64, 64)))["cup"].shape == (2, 2, 64, 64)


def test_rejects_bad_config():
    with pytest.raises(ValueError, match="modality"):
        create_model("m4oe", **{**TINY, "segmentation_tasks": {"cup": {"modality": "cfp", "classes": 2}}})
    with pytest.raises(ValueError, match="classes"):
        create_model("m4oe", **{**TINY, "segmentation_tasks": {"cup": {"modality": "fundus", "classes": 1}}})
    with pytest.raises(ValueError, match="twice"):
        create_model("m4oe", **{**TINY, "tasks": {"cup": 2}})
    with pytest.raises(ValueError, match="at least one task"):
        create_model("m4oe", **{**TINY, "tasks": {}, "segmentation_tasks": None})
    with pytest.raises(ValueError, match="power of two"):
        create_model("m4oe", **{**TINY, "image_size": 24, "patch_size": 6})
