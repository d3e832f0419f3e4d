"""M4oE with a volume modality (OCT via OCTEmbedding) next to a 2D image modality (fundus)."""

import pytest
import torch

from medmoe.blocks.retriever import FillOutput
from medmoe.losses import MultiTaskLoss
from medmoe.nets import create_model

TINY = dict(
    modalities=["fundus", "oct"],
    tasks={"glaucoma": 3},
    segmentation_tasks={"cup": {"modality": "fundus", "classes": 2}},
    volume_modalities={"oct": {"num_bscans": 4, "size": (16, 16), "patch_size": 4}},
    in_channels=3,
    image_size=32,
    patch_size=8,  # fundus 32 / 8 -> 16 tokens; OCT 16 / 4 -> 16 tokens
    hidden_size=32,
    mlp_dim=32,
    num_heads=4,
    msoe_experts=4,
    mtoe_experts=4,
    fusion_experts=2,
    seg_feature_size=8,
)


def batch_of(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "fundus": torch.rand(b, 3, 32, 32, generator=g),
        "oct": torch.rand(b, 1, 4, 16, 16, generator=g),
        "modality_mask": torch.ones(b, 2, dtype=torch.bool),
    }


def test_shapes_and_embedders():
    model = create_model("m4oe", **TINY).eval()
    out = model(batch_of())
    assert out["glaucoma"].shape == (4, 3) and out["cup"].shape == (4, 2, 32, 32)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert model.image_modalities == ["fundus"] and list(model.volume_embedders) == ["oct"]
    assert model.embedder.num_modalities == 1
    assert out.interpret["modality_contributions"].shape == (4, 2, 2)


def test_every_parameter_receives_a_gradient():
    torch.manual_seed(0)
    model = create_model("m4oe", **TINY)
    loss_fn = MultiTaskLoss(
        model.tasks, aux_weights={"mutual_information": -0.05}, segmentation_tasks=model.segmentation_tasks
    )
    batch = batch_of()
    batch["modality_mask"][1, 1] = False  # one sample without OCT: the learned token bank is used
    targets = {
        "glaucoma": torch.tensor([0, 1, 2, -1]),
        "cup": (torch.rand(4, 1, 32, 32) > 0.8).long(),
        "cup_present": torch.tensor([True, True, False, True]),
    }
    loss_fn(model(batch), targets).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"No gradient for {dead}"


def test_missing_oct_is_never_embedded():
    model = create_model("m4oe", **TINY).eval()
    batch = batch_of()
    batch["modality_mask"][2, 1] = False
    batch["oct"][2] = float("nan")  # the data layer's placeholder
    out = model(batch)
    assert all(torch.isfinite(v).all() for v in out.values())
    other = {**batch, "oct": batch["oct"].clone()}
    other["oct"][2] = 7.0  # whatever the placeholder holds, the absent sample's output is the same
    torch.testing.assert_close(model(other)["glaucoma"][2], out["glaucoma"][2])
    assert out.interpret["modality_contributions"][2, :, 1].abs().max() == 0  # absent OCT contributes nothing
    bad = batch_of()
    bad["oct"][0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        model(bad)


def test_volume_only_model_and_zero_fill():
    cfg = {**TINY, "modalities": ["oct"], "segmentation_tasks": None, "missing_modality": "zero"}
    model = create_model("m4oe", **cfg).eval()
    assert model.embedder is None
    batch = batch_of()
    out = model({"oct": batch["oct"], "modality_mask": batch["modality_mask"][:, 1:]})
    assert out["glaucoma"].shape == (4, 3)


class _HandZeroFill(torch.nn.Module):
    """Reference for ``missing_modality="zero"``: tokens ``(B, M, n, d)`` with the absent ones set to 0 by hand."""

    def forward(self, tokens, mask, batch=None):
        out = tokens.clone()
        for b, m in zip(*torch.nonzero(~mask, as_tuple=True), strict=True):
            out[b, m] = 0.0
        return FillOutput(out, {}, {})


def test_zero_fill_puts_exact_zeros_in_place_of_an_absent_modality():
    torch.manual_seed(0)
    model = create_model("m4oe", **{**TINY, "missing_modality": "zero"}).eval()
    batch = batch_of()
    batch["modality_mask"][1, 0] = False  # sample 1 has no fundus
    batch["fundus"][1] = float("nan")  # the data layer's placeholder
    seen = {}
    model.missing_fill.register_forward_hook(lambda mod, args, out: seen.update(tokens=args[0], filled=out.tokens))
    with torch.no_grad():
        out = model(batch)
    tokens, filled = seen["tokens"], seen["filled"]  # (B, M, n, d), modalities in model order: fundus, oct
    assert filled.shape == (4, 2, 16, 32)
    assert torch.count_nonzero(filled[1, 0]) == 0  # the absent fundus: exactly zero
    assert tokens[1, 0].abs().sum() > 0  # (its embedding of the zeroed image was not already zero)
    keep = torch.ones(4, 2, dtype=torch.bool)
    keep[1, 0] = False
    torch.testing.assert_close(filled[keep], tokens[keep], rtol=0, atol=0)  # present tokens pass unchanged

    model.missing_fill = _HandZeroFill()
    with torch.no_grad():
        reference = model(batch)
    for name in ("glaucoma", "cup"):
        assert torch.isfinite(out[name]).all()
        torch.testing.assert_close(out[name], reference[name])


@pytest.mark.parametrize(
    "change, match",
    [
        ({"volume_modalities": {"oct": {"num_bscans": 4, "size": (16, 16), "patch_size": 8}}}, "same number of tokens"),
        ({"volume_modalities": {"oct": {"size": (16, 16)}}}, "num_bscans"),
        ({"volume_modalities": {"oct": {"num_bscans": 4, "depth": 3}}}, "num_bscans"),
        ({"segmentation_tasks": {"cup": {"modality": "oct", "classes": 2}}}, "image modalities"),
    ],
)
def test_bad_volume_specs(change, match):
    with pytest.raises(ValueError, match=match):
        create_model("m4oe", **{**TINY, **change})
