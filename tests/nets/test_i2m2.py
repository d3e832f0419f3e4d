"""I2M2 product of experts and its pre-activation ResNet encoder."""

import pytest
import torch
import torch.nn.functional as F

from medmoe.encoders import PreActResNet2d
from medmoe.nets import I2M2, create_model

MODALITIES = ["magnitude", "phase"]
TASKS = {"acl": 2, "meniscus": 2, "grade": 3, "site": 4}
TINY = dict(modalities=MODALITIES, tasks=TASKS, base_channels=4, blocks=(1, 1, 1, 1), norm_groups=2)


def make_batch(b=3, size=16, seed=0, modalities=MODALITIES):
    g = torch.Generator().manual_seed(seed)
    batch = {k: torch.randn(b, 1, size, size, generator=g) for k in modalities}
    batch["modality_mask"] = torch.ones(b, len(modalities), dtype=torch.bool)
    return batch


def tiny(mode="i2m2", seed=0, **kwargs):
    torch.manual_seed(seed)
    return create_model("i2m2", **{**TINY, "mode": mode, **kwargs}).eval()


def brute_force_poe(expert_logits, experts, task, rows=slice(None)):
    """prod_e softmax_e / sum over classes, computed explicitly in float64."""
    prod = torch.ones_like(expert_logits[experts[0]][task][rows], dtype=torch.float64)
    for e in experts:
        prod = prod * expert_logits[e][task][rows].double().softmax(-1)
    return prod / prod.sum(-1, keepdim=True)


def test_shapes_and_normalised_log_probabilities():
    model = tiny()
    out = model(make_batch())
    assert set(out) == set(TASKS)
    for task, classes in TASKS.items():
        assert out[task].shape == (3, classes)
        torch.testing.assert_close(out[task].exp().sum(-1), torch.ones(3))
        # usable as logits: cross-entropy on normalised log-probs is plain NLL
        y = torch.randint(classes, (3,))
        torch.testing.assert_close(F.cross_entropy(out[task], y), F.nll_loss(out[task], y))
    experts = out.interpret["expert_logits"]
    assert list(experts) == [*MODALITIES, "joint"]
    for name in experts:
        assert {t: v.shape for t, v in experts[name].items()} == {t: (3, c) for t, c in TASKS.items()}
    assert experts["joint"]["acl"].requires_grad  # kept for per-expert (pretraining) losses
    assert out.aux_losses == {}


def test_poe_equals_brute_force_normalised_product():
    model = tiny()
    out = model(make_batch())
    experts = out.interpret["expert_logits"]
    for task in TASKS:
        expected = brute_force_poe(experts, [*MODALITIES, "joint"], task)
        torch.testing.assert_close(out[task].exp().double(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode, experts", [("intra", MODALITIES), ("inter", ["joint"])])
def test_variants_equal_their_sub_products(mode, experts):
    full = tiny()
    batch = make_batch()
    full_experts = full(batch).interpret["expert_logits"]
    variant = tiny(mode, seed=1)
    missing, unexpected = variant.load_state_dict(full.state_dict(), strict=False)
    assert not missing  # every parameter of the variant exists in the full model
    assert set(full.state_dict()) - set(variant.state_dict()) == set(unexpected)
    out = variant(batch)
    assert list(out.interpret["expert_logits"]) == experts
    for task in TASKS:
        expected = brute_force_poe(full_experts, experts, task)
        torch.testing.assert_close(out[task].exp().double(), expected, atol=1e-5, rtol=0)


def test_only_the_mode_s_experts_are_built():
    assert tiny("inter").unimodal is None and tiny("intra").joint is None
    n_full, n_intra, n_inter = (sum(p.numel() for p in tiny(m).parameters()) for m in ("i2m2", "intra", "inter"))
    assert n_full == n_intra + n_inter


@pytest.mark.parametrize("mode", ["i2m2", "intra", "inter"])
def test_every_parameter_receives_a_gradient(mode):
    model = tiny(mode).train()
    batch = make_batch(b=4)
    batch["modality_mask"][0, 1] = False
    out = model(batch)
    loss = sum(F.cross_entropy(v, torch.arange(4) % v.shape[1]) for v in out.values())
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"No gradient for {dead}"


def test_missing_modality_is_dropped_from_the_product():
    model = tiny()
    batch = make_batch()
    batch["modality_mask"][1, 0] = False
    batch["magnitude"][1] = float("nan")  # the data layer's placeholder never reaches the network
    out = model(batch)
    assert all(torch.isfinite(v).all() for v in out.values())
    presence = out.interpret["expert_presence"]
    assert presence["magnitude"].tolist() == [True, False, True] and presence["joint"].all()
    experts = out.interpret["expert_logits"]
    for task in TASKS:  # sample 1: product of the phase and joint experts only
        expected = brute_force_poe(experts, ["phase", "joint"], task, rows=slice(1, 2))
        torch.testing.assert_close(out[task][1:2].exp().double(), expected, atol=1e-5, rtol=0)

    # the absent modality's content does not matter (its expert is dropped, the joint sees zeros) ...
    batch2 = {k: v.clone() for k, v in batch.items()}
    batch2["magnitude"][1] = torch.randn(1, 16, 16) * 5
    out2 = model(batch2)
    for task in TASKS:
        torch.testing.assert_close(out2[task], out[task])
    # ... a present one's does
    batch2["phase"][1] += 1.0
    assert not torch.allclose(model(batch2)["grade"][1], out["grade"][1])


def test_intra_with_every_modality_absent_is_uniform():
    model = tiny("intra")
    batch = make_batch()
    batch["modality_mask"][2] = False
    out = model(batch)
    torch.testing.assert_close(out["site"][2].exp(), torch.full((4,), 0.25))


def test_mask_defaults_to_all_present():
    model = tiny()
    batch = make_batch()
    expected = model(batch)
    del batch["modality_mask"]
    torch.testing.assert_close(model(batch)["grade"], expected["grade"])


def test_rejects_bad_input():
    model = tiny()
    with pytest.raises(KeyError, match="phase"):
        model({"magnitude": torch.rand(2, 1, 16, 16)})
    with pytest.raises(ValueError, match=r"'modality_mask' must be \(batch, 2\)"):
        model({**make_batch(), "modality_mask": torch.ones(3, 3, dtype=torch.bool)})
    batch = make_batch()
    batch["phase"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        model(batch)
    with pytest.raises(ValueError, match="modality 'phase' must be"):
        model({**make_batch(), "phase": torch.rand(3, 1, 8, 8)})
    with pytest.raises(ValueError, match="modality 'magnitude' must be"):
        model({**make_batch(), "magnitude": torch.rand(3, 2, 16, 16)})
    with pytest.raises(ValueError, match="mode"):
        I2M2(**{**TINY, "mode": "late"})
    with pytest.raises(ValueError, match="joint"):
        I2M2(**{**TINY, "modalities": ["joint", "phase"]})
    with pytest.raises(ValueError, match="'acl' needs >= 2 classes"):
        I2M2(**{**TINY, "tasks": {"acl": 1}})
    with pytest.raises(ValueError, match="at least one modality"):
        I2M2(**{**TINY, "modalities": []})


# --- encoder -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stem, size", [("cifar", 16), ("imagenet", 32)])
def test_encoder_shapes(stem, size):
    encoder = PreActResNet2d(in_channels=2, base_channels=4, blocks=(1, 1, 1, 1), stem=stem, pool_size=2)
    assert encoder.out_features == 32 * 4
    assert encoder(torch.rand(3, 2, size, size)).shape == (3, 128)
    resnet18 = PreActResNet2d(in_channels=1)
    assert sum(m.__class__.__name__ == "PreActBlock" for m in resnet18.modules()) == 8
    assert resnet18.out_features == 512


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_grouped_encoder_equals_separate_encoders(norm):
    kwargs = dict(in_channels=1, base_channels=4, blocks=(1, 1, 1, 1), norm=norm, norm_groups=2, pool_size=2)
    grouped = PreActResNet2d(groups=2, **kwargs).eval()
    separate = [PreActResNet2d(**kwargs).eval() for _ in range(2)]
    for tensor, *parts in zip(*(m.state_dict().values() for m in [grouped, *separate]), strict=True):
        chunks = tensor.chunk(2) if tensor.ndim else (tensor, tensor)  # num_batches_tracked is a scalar
        for part, chunk in zip(parts, chunks):
            part.copy_(chunk)
    x = torch.randn(2, 2, 16, 16)
    expected = torch.cat([separate[0](x[:, :1]), separate[1](x[:, 1:])], dim=1)
    torch.testing.assert_close(grouped(x), expected, atol=1e-5, rtol=1e-5)


def test_grouped_encoder_starts_like_separate_encoders():
    torch.manual_seed(0)
    kwargs = dict(in_channels=1, base_channels=16, blocks=(1, 1, 1, 1), norm_groups=4)
    single, grouped = PreActResNet2d(**kwargs), PreActResNet2d(groups=4, **kwargs)
    for a, b in zip(single.modules(), grouped.modules(), strict=True):
        if isinstance(a, torch.nn.Conv2d):  # He init with each group's own fan-out: same spread per expert
            assert b.weight.std().item() == pytest.approx(a.weight.std().item(), rel=0.15)


def test_encoder_rejects_bad_input():
    with pytest.raises(ValueError, match="stem"):
        PreActResNet2d(stem="vit")
    with pytest.raises(ValueError, match="norm"):
        PreActResNet2d(norm="layer")
    with pytest.raises(ValueError, match="blocks"):
        PreActResNet2d(blocks=())
    with pytest.raises(ValueError, match=r"expected \(B, 2, H, W\)"):
        PreActResNet2d(in_channels=2, base_channels=4, blocks=(1,))(torch.rand(1, 1, 8, 8))
