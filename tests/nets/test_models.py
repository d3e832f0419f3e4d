"""Registry-driven model contract tests: every registered model is built tiny and checked."""

import pytest
import torch

from medmoe.nets import create_model, list_models

TASKS = {"density": 4, "birads": 3, "risk": 2}
TINY = {
    "m4oe": dict(
        modalities=["cc", "mlo", "s2d_cc"],
        tasks=TASKS,
        image_size=16,
        patch_size=4,
        hidden_size=32,
        mlp_dim=32,
        num_heads=4,
        msoe_experts=4,
        mtoe_experts=4,
        fusion_experts=2,
    ),
    "i2m2": dict(
        modalities=["cc", "mlo", "s2d_cc"],
        tasks=TASKS,
        base_channels=4,
        blocks=(1, 1, 1, 1),
        norm_groups=2,
    ),
    "fusion": dict(
        modalities=["cc", "mlo", "s2d_cc"],
        tasks=TASKS,
        in_features=256,
        hidden_size=16,
        backbone_kwargs={"num_layers": 1, "num_heads": 2},
    ),
    "i2moe": dict(
        modalities=["cc", "mlo", "s2d_cc"],
        tasks=TASKS,
        in_features=256,
        hidden_size=16,
        backbone_kwargs={"num_layers": 1, "num_heads": 2},
        identical_init=False,  # identical experts give the reweighting model no gradient before the first step
    ),
}


def tiny_batch(modalities, b=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = {k: torch.rand(b, 1, size, size, generator=g) for k in modalities}
    batch["modality_mask"] = torch.ones(b, len(modalities), dtype=torch.bool)
    return batch


def test_every_registered_model_has_a_tiny_config():
    assert set(list_models()) <= set(TINY), f"add a tiny config for {set(list_models()) - set(TINY)}"


@pytest.mark.parametrize("name", list_models())
def test_forward_shapes_and_finite(name):
    model = create_model(name, **TINY[name]).eval()
    out = model(tiny_batch(TINY[name]["modalities"]))
    assert set(out) == set(TASKS)
    for task, classes in TASKS.items():
        assert out[task].shape == (4, classes)
        assert torch.isfinite(out[task]).all()


@pytest.mark.parametrize("name", list_models())
def test_every_parameter_receives_a_gradient(name):
    torch.manual_seed(0)
    model = create_model(name, **TINY[name])
    batch = tiny_batch(TINY[name]["modalities"])
    batch["modality_mask"][0, 1] = False  # exercise the missing-modality path too
    out = model(batch)
    loss = sum(v.logsumexp(-1).sum() for v in out.values())
    for aux in model.auxiliary_losses().values():
        loss = loss + aux
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"No gradient for {dead}"


def test_m4oe_missing_modality_placeholders_never_leak():
    model = create_model("m4oe", **TINY["m4oe"]).eval()
    batch = tiny_batch(TINY["m4oe"]["modalities"])
    batch["modality_mask"][1, 0] = False
    batch["cc"][1] = float("nan")  # the data layer's explicit placeholder
    out = model(batch)
    assert all(torch.isfinite(v).all() for v in out.values())
    # a missing view's content does not matter; a present view's does
    batch2 = {k: v.clone() for k, v in batch.items()}
    batch2["cc"][1] = 123.0
    torch.testing.assert_close(model(batch2)["density"], out["density"])
    batch2["mlo"][1] += 1.0
    assert not torch.allclose(model(batch2)["density"][1], out["density"][1])


def test_m4oe_rejects_bad_input():
    model = create_model("m4oe", **TINY["m4oe"])
    batch = tiny_batch(TINY["m4oe"]["modalities"])
    batch["cc"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        model(batch)
    with pytest.raises(KeyError, match="mlo"):
        model({"cc": torch.rand(2, 1, 16, 16), "s2d_cc": torch.rand(2, 1, 16, 16)})
    with pytest.raises(ValueError, match="modality_mask"):
        model({**tiny_batch(TINY["m4oe"]["modalities"]), "modality_mask": torch.ones(4, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="missing_modality"):
        create_model("m4oe", **{**TINY["m4oe"], "missing_modality": "mean"})


def test_m4oe_modality_contributions_are_conditional_distributions():
    model = create_model("m4oe", **TINY["m4oe"]).eval()
    model(tiny_batch(TINY["m4oe"]["modalities"]))
    contrib = model.modality_contributions()
    assert contrib.shape == (4, len(TASKS), 3)
    torch.testing.assert_close(contrib.sum(-1), torch.ones(4, len(TASKS)))
    assert model.auxiliary_losses()["mutual_information"].item() >= -1e-6

    batch = tiny_batch(TINY["m4oe"]["modalities"])
    batch["modality_mask"][1, 2] = False  # sample 1 lacks its third view
    batch["s2d_cc"][1] = float("nan")
    model(batch)
    contrib = model.modality_contributions()
    assert torch.all(contrib[1, :, 2] == 0) and torch.all(contrib[0, :, 2] > 0)
    torch.testing.assert_close(contrib.sum(-1), torch.ones(4, len(TASKS)))
    torch.testing.assert_close(model.modality_task_joint().sum((1, 2)), torch.ones(4))
    pi = model.modality_expert_task_joint()  # (b, M, E, T): the MI loss's joint, P(M, T) is its sum over experts
    assert pi.shape == (4, 3, 4, len(TASKS)) and not pi.requires_grad
    p_mt = pi.sum(2) * batch["modality_mask"].unsqueeze(-1)
    torch.testing.assert_close(p_mt / p_mt.sum((1, 2), keepdim=True), model.modality_task_joint())


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown model 'nope'.*m4oe"):
        create_model("nope")
    assert list_models("m4*") == ["m4oe"]
