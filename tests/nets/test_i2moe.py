"""I2MoE and the fusion backbones: shapes, gradients, the batched (1 + n)-pass, interaction losses, missing data."""

import math
import warnings

import numpy as np
import pytest
import torch

from medmoe.interpret import collect_expert_weights, expert_weight_summary, plot_expert_weights, plot_sample_weights
from medmoe.losses import interaction_losses
from medmoe.nets import I2MoE, create_model
from medmoe.nets.fusion import BACKBONES as BACKBONE_CLASSES
from medmoe.nets.fusion import build_backbone, stacked

MODALITIES = ["mri", "csf", "clinical"]
FEATURES = {"mri": 12, "csf": 5, "clinical": 7}
TASKS = {"dx": 3, "conv": 2}
BACKBONES = ["transformer", "early", "late"]


def make_model(backbone="transformer", **kwargs):
    torch.manual_seed(0)
    options = dict(
        modalities=MODALITIES,
        tasks=TASKS,
        in_features=FEATURES,
        backbone=backbone,
        hidden_size=16,
        num_tokens=2,
        backbone_kwargs={"num_layers": 1, "num_heads": 2} if backbone == "transformer" else {},
    )
    return create_model("i2moe", **{**options, **kwargs})


def make_batch(b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = {k: torch.randn(b, f, generator=g) for k, f in FEATURES.items()}
    batch["modality_mask"] = torch.ones(b, len(MODALITIES), dtype=torch.bool)
    return batch


@pytest.mark.parametrize("backbone", BACKBONES)
def test_shapes_weights_and_names(backbone):
    model = make_model(backbone)
    out = model(make_batch())
    assert {k: v.shape for k, v in out.items()} == {"dx": (5, 3), "conv": (5, 2)}
    weights = out.interpret["expert_weights"]
    assert weights.shape == (5, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(5))
    assert model.expert_names == ["unique_mri", "unique_csf", "unique_clinical", "synergy", "redundancy"]
    logits = out.interpret["expert_logits"]
    assert list(logits) == model.expert_names and logits["synergy"]["dx"].shape == (5, 3)
    assert out.interpret["pass_logits"].shape == (5, 4, 5, 5)  # experts, 1 + n passes, batch, outputs
    # Eq. 1: prediction = weighted sum of the experts' clean logits
    expected = sum(weights[:, i, None] * logits[name]["dx"] for i, name in enumerate(model.expert_names))
    torch.testing.assert_close(out["dx"], expected)
    assert set(out.interpret["interaction_losses"]) == set(model.expert_names)
    model.eval()
    out = model(make_batch())
    assert "pass_logits" not in out.interpret and out.aux_losses["interaction"].item() == 0.0


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_parameter_and_every_expert_receives_a_gradient(backbone):
    model = make_model(backbone, identical_init=False)
    batch = make_batch()
    batch["modality_mask"][1, 2] = False
    out = model(batch)
    labels = {"dx": torch.tensor([0, 1, 2, 0, 1]), "conv": torch.tensor([0, 1, 1, 0, 1])}
    loss = sum(torch.nn.functional.cross_entropy(out[t], labels[t]) for t in TASKS)
    loss = loss + out.aux_losses["interaction"]
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient for {dead}"
    for name, p in model.experts.named_parameters():  # each expert's own slice, not just the stacked tensor
        per_expert = p.grad.view(model.num_experts, -1).abs().sum(1)
        assert bool((per_expert > 0).all()), f"an expert gets no gradient in {name}: {per_expert}"


def test_interaction_loss_alone_reaches_every_expert():
    model = make_model()
    model(make_batch()).aux_losses["interaction"].backward()
    for name, p in model.experts.named_parameters():
        assert bool((p.grad.view(model.num_experts, -1).abs().sum(1) > 0).all()), name


@pytest.mark.parametrize("backbone", BACKBONES)
def test_batched_passes_equal_a_loop_over_experts_and_passes(backbone):
    model = make_model(backbone, identical_init=False)
    batch = make_batch()
    batch["modality_mask"][3, 0] = False
    g = torch.Generator().manual_seed(1)
    noise = {}

    def fixed_noise(like):
        noise["value"] = torch.randn(like.shape, generator=g)
        return noise["value"]

    model.draw_noise = fixed_noise
    batched = model(batch).interpret["pass_logits"]
    tokens, mask, *_ = model.encoders(batch)
    e, m = model.num_experts, len(MODALITIES)
    # reference: one single-group backbone per expert, fed one pass at a time
    reference = build_backbone(
        backbone, m, 16, TASKS, 2, 1, **({"num_layers": 1, "num_heads": 2} if backbone == "transformer" else {})
    )
    slow = torch.empty_like(batched)
    with torch.no_grad():
        for i in range(e):
            state = {
                k: v.view(e, -1)[i].view(reference.state_dict()[k].shape) for k, v in model.experts.state_dict().items()
            }
            reference.load_state_dict(state)
            for p in range(1 + m):
                x, pass_mask = tokens.clone(), mask.clone()
                if p > 0:
                    x[:, p - 1] = noise["value"][i, p, :, p - 1]
                    pass_mask[:, p - 1] = True
                slow[i, p] = torch.cat(list(reference(x, pass_mask).values()), -1)
    torch.testing.assert_close(batched, slow, atol=1e-5, rtol=1e-5)


def test_identical_init_and_fresh_noise_per_expert():
    model = make_model()
    for p in model.experts.parameters():
        flat = p.view(model.num_experts, -1)
        assert torch.equal(flat, flat[:1].expand_as(flat))
    seen = {}
    model.draw_noise = lambda like: seen.setdefault("n", torch.randn_like(like))
    passes = model(make_batch()).interpret["pass_logits"]
    n = seen["n"]  # e p b m n d
    assert not torch.allclose(n[0], n[1])  # each expert draws its own random vectors
    torch.testing.assert_close(passes[0, 0], passes[1, 0])  # identical experts agree on the clean pass...
    assert not torch.allclose(passes[0, 1], passes[1, 1])  # ...but not on their perturbed passes


def test_identical_experts_diverge_and_then_train_the_reweighting():
    model = make_model()  # identical_init: all clean logits agree, so the weights do not matter yet
    batch = make_batch()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(2):
        optimiser.zero_grad()
        out = model(batch)
        loss = torch.nn.functional.cross_entropy(out["dx"], torch.tensor([0, 1, 2, 0, 1]))
        (loss + out.aux_losses["interaction"]).backward()
        grad = model.reweight[0].weight.grad.abs().max().item()
        assert grad < 1e-6 if step == 0 else grad > 1e-4
        optimiser.step()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_stacked_single_copy_backbone_matches_the_grouped_one(backbone):
    kwargs = {"num_layers": 1, "num_heads": 2} if backbone == "transformer" else {}
    torch.manual_seed(0)
    grouped = build_backbone(backbone, 3, 16, TASKS, 2, 5, **kwargs)
    generic = build_backbone(stacked(BACKBONE_CLASSES[backbone]), 3, 16, TASKS, 2, 5, **kwargs)
    with torch.no_grad():  # give the vmapped copies the grouped backbone's weights
        for name, p in zip(generic._param_names, generic.stacked_params):
            p.copy_(grouped.get_parameter(name).view_as(p))
    tokens, mask = torch.randn(5, 4, 3, 2, 16), torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 1], [1, 1, 0]]).bool()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no vmap batching rule for CPU flash attention: a slower fallback
        a, b = grouped(tokens, mask), generic(tokens, mask)
        model = make_model(stacked(BACKBONE_CLASSES[backbone]), identical_init=False)
        out = model(make_batch())
    for task in TASKS:
        torch.testing.assert_close(a[task], b[task], atol=1e-5, rtol=1e-5)
    (sum(v.sum() for v in out.values()) + out.aux_losses["interaction"]).backward()
    for p in model.experts.parameters():
        assert bool((p.grad.view(model.num_experts, -1).abs().sum(1) > 0).all())


def test_stacked_backbone_follows_train_and_eval_mode():
    torch.manual_seed(0)
    fusion = build_backbone(stacked(BACKBONE_CLASSES["late"]), 2, 8, {"y": 3}, 1, 2, dropout_rate=0.5)
    tokens, mask = torch.randn(2, 6, 2, 1, 8), torch.ones(6, 2, dtype=torch.bool)
    fusion.eval()
    torch.testing.assert_close(fusion(tokens, mask)["y"], fusion(tokens, mask)["y"])  # no dropout in eval
    fusion.train()
    assert not torch.allclose(fusion(tokens, mask)["y"], fusion(tokens, mask)["y"])  # dropout in training


def test_classification_interaction_losses_by_hand():
    # experts: unique_0, unique_1, synergy, redundancy; passes: clean, modality 0 masked, modality 1 masked
    out = torch.zeros(4, 3, 2, 2)
    # sample 0 (both modalities present)
    out[0, :, 0] = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])  # unique_0: anchor, negative, positive
    out[1, :, 0] = torch.tensor([[1.0, 1.0], [1.0, 2.0], [4.0, 5.0]])  # unique_1: anchor, positive, negative
    out[2, :, 0] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # synergy
    out[3, :, 0] = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [0.0, 5.0]])  # redundancy
    # sample 1 lacks modality 1: only its "modality 0 masked" pass enters synergy / redundancy
    out[2, :, 1] = torch.tensor([[0.0, 2.0], [0.0, -1.0], [7.0, 7.0]])
    out[3, :, 1] = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-9.0, 3.0]])
    out[:2, :, 1] = 100.0 * torch.randn(2, 3, 2)  # never used: each triplet needs modality 1

    # sample 0 alone (the paper's formulas, every modality present):
    # unique_0: max(||a-p|| - ||a-n|| + 1, 0) = max(3 - 1 + 1, 0) = 3
    # unique_1: max(1 - 5 + 1, 0) = 0
    # synergy: mean(cos((1,0),(0,1)), cos((1,0),(1,1))) = (0 + 1/sqrt2) / 2
    # redundancy: mean(1 - cos((2,0),(-1,0)), 1 - cos((2,0),(0,5))) = (2 + 1) / 2
    expected = torch.tensor([3.0, 0.0, (0 + 1 / math.sqrt(2)) / 2, 1.5])
    torch.testing.assert_close(interaction_losses(out[:, :, :1]), expected, atol=1e-5, rtol=0)
    triplet = torch.nn.TripletMarginLoss(margin=1.0)(out[0, 0, :1], out[0, 2, :1], out[0, 1, :1])
    torch.testing.assert_close(interaction_losses(out[:, :, :1])[0], triplet)

    # both samples, sample 1 missing modality 1: pairs with an absent modality are left out
    # synergy: (0 + 1/sqrt2 + cos((0,2),(0,-1)) = -1) / 3; redundancy: (2 + 1 + 0) / 3
    present = torch.tensor([[True, True], [True, False]])
    expected = torch.tensor([3.0, 0.0, (1 / math.sqrt(2) - 1) / 3, 1.0])
    torch.testing.assert_close(interaction_losses(out, present), expected, atol=1e-5, rtol=0)


def test_regression_interaction_losses_by_hand():
    out = torch.zeros(4, 3, 1, 2)
    out[0, :, 0] = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    out[1, :, 0] = torch.tensor([[1.0, 1.0], [1.0, 2.0], [4.0, 5.0]])
    out[2, :, 0] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    out[3, :, 0] = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [0.0, 5.0]])
    # D = mean squared difference over outputs
    # unique_0: max(D(a,p) - D(a,n) + 1, 0) = max(4.5 - 0.5 + 1, 0) = 5
    # unique_1: max(0.5 - 12.5 + 1, 0) = 0
    # synergy (margin 1): mean(max(1 - 1, 0), max(1 - 0.5, 0)) = 0.25   (pushes apart, bounded)
    # redundancy: mean(4.5, 14.5) = 9.5
    expected = torch.tensor([5.0, 0.0, 0.25, 9.5])
    torch.testing.assert_close(interaction_losses(out, kind="regression"), expected)


def test_missing_modality_never_reaches_the_network():
    model = make_model()
    batch = make_batch()
    batch["modality_mask"][1, 0] = False
    batch["modality_mask"][2] = False  # nothing present at all
    batch["mri"][1] = float("nan")
    for k in MODALITIES:
        batch[k][2] = float("nan")
    out = model(batch)
    loss = sum(v.sum() for v in out.values()) + out.aux_losses["interaction"]
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    ref = model(batch)["dx"]
    batch2 = {k: v.clone() for k, v in batch.items()}
    batch2["mri"][1] = 123.0  # an absent modality's content does not matter
    torch.testing.assert_close(model(batch2)["dx"], ref)
    batch2["csf"][1] += 1.0  # a present one does
    assert not torch.allclose(model(batch2)["dx"][1], ref[1])


@pytest.mark.parametrize("missing_modality", ["zero", "learned"])
def test_uniqueness_expert_of_an_absent_modality_gets_no_weight(missing_modality):
    model = make_model(missing_modality=missing_modality, mask_absent_experts=True)
    batch = make_batch()
    batch["modality_mask"][1, 0] = False  # no mri
    batch["modality_mask"][3] = torch.tensor([False, True, False])  # csf only
    batch["modality_mask"][4] = False  # nothing at all
    for training in (True, False):
        model.train(training)
        w = model(batch).interpret["expert_weights"]
        torch.testing.assert_close(w.sum(-1), torch.ones(5))
        names = model.expert_names
        assert w[1, names.index("unique_mri")] == 0 and (w[1, 1:] > 0).all()
        assert w[3, names.index("unique_mri")] == 0 and w[3, names.index("unique_clinical")] == 0
        assert w[3, names.index("unique_csf")] > 0
        assert (w[4, :3] == 0).all() and (w[4, 3:] > 0).all()  # synergy / redundancy only
        assert (w[0] > 0).all() and (w[2] > 0).all()  # complete samples: every expert
    loss = sum(v.sum() for v in model(batch).values())
    loss.backward()  # the masked logits leave the gradients finite
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    unmasked = make_model(missing_modality=missing_modality)  # off by default: every expert keeps some weight
    assert (unmasked(batch).interpret["expert_weights"] > 0).all()


def test_regression_variant_and_standalone_backbones():
    model = make_model(tasks={"score": 1}, interaction_loss="regression")
    out = model(make_batch())
    assert out["score"].shape == (5, 1) and torch.isfinite(out.aux_losses["interaction"])
    for backbone in BACKBONES:
        fusion = build_backbone(backbone, 2, 8, {"y": 3}, num_heads=2)
        per_modality = [torch.randn(4, 8), torch.randn(4, 8)]
        a = fusion(per_modality, torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]]).bool())["y"]
        b = fusion(torch.stack(per_modality, 1).unsqueeze(2))["y"]
        assert a.shape == b.shape == (4, 3)
        torch.testing.assert_close(a[[0, 3]], b[[0, 3]])


def test_vanilla_fusion_model():
    torch.manual_seed(0)
    model = create_model(
        "fusion", modalities=MODALITIES, tasks=TASKS, in_features=FEATURES, hidden_size=16, backbone="late"
    )
    out = model(make_batch())
    assert out["dx"].shape == (5, 3) and out.aux_losses == {}


def test_bad_input():
    with pytest.raises(ValueError, match="unknown fusion backbone"):
        make_model("mult")
    with pytest.raises(ValueError, match="interaction_loss"):
        make_model(interaction_loss="hinge")
    with pytest.raises(ValueError, match="in_features"):
        make_model(in_features={"mri": 12})
    with pytest.raises(ValueError, match="temperature"):
        make_model(temperature=0.0)
    model = make_model()
    batch = make_batch()
    batch["csf"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite values in modality 'csf'"):
        model(batch)
    with pytest.raises(KeyError, match="clinical"):
        model({k: v for k, v in make_batch().items() if k != "clinical"})
    with pytest.raises(ValueError, match="modality_mask"):
        model({**make_batch(), "modality_mask": torch.ones(5, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="values per sample"):
        model({**make_batch(), "csf": torch.randn(5, 6)})


def test_expert_weight_interpretation(tmp_path):
    model = make_model()
    weights = collect_expert_weights(model, [make_batch(seed=s) for s in range(3)])
    assert weights.shape == (15, 5) and model.training
    summary = expert_weight_summary(weights, model.expert_names)
    assert list(summary.index) == model.expert_names
    np.testing.assert_allclose(summary["mean"].sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(summary["top1"].sum(), 1.0)
    violin = plot_expert_weights(weights, model.expert_names, tmp_path / "global.png")
    bars = plot_sample_weights(weights, model.expert_names, tmp_path / "local.png", ids=[f"s{i}" for i in range(15)])
    assert violin.read_bytes()[:4] == bars.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["global.png", "local.png"]  # no temp files left
    with pytest.raises(ValueError, match="samples"):
        expert_weight_summary(weights[:, :3], model.expert_names)


def test_i2moe_is_exported():
    assert isinstance(make_model(), I2MoE)


def _perturbed_inputs(model, batch):
    """The tokens the experts receive in one training forward, ``(e, p, b, M, n, d)``, and the clean tokens."""
    seen = {}
    fuse = model.experts.fuse

    def spy(tokens, mask):
        seen["x"] = tokens
        return fuse(tokens, mask)

    model.experts.fuse = spy
    model.train()
    model(batch)
    clean = model.encoders(batch).tokens
    e, m = model.num_experts, len(model.modalities)
    return seen["x"].view(e, 1 + m, *clean.shape).detach(), clean.detach()


@pytest.mark.parametrize("masking", ["shuffle", "mixed"])
def test_shuffle_masking_uses_other_samples_embeddings(masking):
    torch.manual_seed(1)
    model = make_model(masking=masking)
    batch = make_batch(b=8)
    x, clean = _perturbed_inputs(model, batch)
    e, p, b, m = x.shape[:4]
    shuffled_experts = range(e) if masking == "shuffle" else range(e - 1)
    orders = set()
    for i in range(e):
        torch.testing.assert_close(x[i, 0], clean)  # pass 0 is clean
        for j in range(m):
            replaced, others = x[i, 1 + j, :, j], x[i, 1 + j, :, [k for k in range(m) if k != j]]
            torch.testing.assert_close(others, clean[:, [k for k in range(m) if k != j]])  # only modality j changes
            # distance of every replaced row to every clean row of modality j
            dist = torch.cdist(replaced.flatten(1), clean[:, j].flatten(1))
            if i in shuffled_experts:
                donors = dist.argmin(1)
                assert torch.allclose(dist.min(1).values, torch.zeros(b), atol=1e-5)  # a real embedding ...
                assert sorted(donors.tolist()) == list(range(b))  # ... of a permutation of the batch
                orders.add(tuple(donors.tolist()))
            else:  # mixed: the redundancy expert gets N(0, 1) noise, not a batch row
                assert dist.min() > 1e-2
                assert abs(replaced.std().item() - 1.0) < 0.3
    assert len(orders) > 1  # drawn afresh per expert / pass
    out = model(batch)
    loss = sum(v.sum() for v in out.values()) + out.aux_losses["interaction"]
    loss.backward()
    assert all(p.grad is not None for p in model.experts.parameters())


def test_masking_and_centring_options_are_checked():
    with pytest.raises(ValueError, match="masking must be one of"):
        make_model(masking="zeros")
    with pytest.raises(ValueError, match="classification"):
        make_model(tasks={"score": 1}, interaction_loss="regression", centre_logits=True)
    model = make_model(centre_logits=True)
    interpret = model(make_batch()).interpret
    passes = interpret["pass_logits"]  # centred losses equal the loss function's on the recorded outputs
    per_task = [interaction_losses(chunk, centre_logits=True) for chunk in passes.split(list(model.tasks.values()), -1)]
    torch.testing.assert_close(
        torch.stack(list(interpret["interaction_losses"].values())), torch.stack(per_task).mean(0)
    )


def test_temperature_divides_the_reweighting_scores():
    # Sec. 3.3.1: w = softmax(z / T), z the reweighting MLP's output on the mean-pooled clean embeddings
    batch = make_batch()
    weights = {}
    for temperature in (0.25, 1.0, 4.0):
        model = make_model(temperature=temperature, identical_init=False).eval()  # same seed: same parameters
        with torch.no_grad():
            scores = model.reweight(model.encoders(batch).tokens.mean(2).flatten(1))  # z, (b, n + 2)
            weights[temperature] = model(batch).interpret["expert_weights"]
        torch.testing.assert_close(weights[temperature], torch.softmax(scores / temperature, -1))
    # a low temperature sharpens the weights, a high one flattens them
    spread = {t: (w.max(-1).values - w.min(-1).values).mean().item() for t, w in weights.items()}
    assert spread[0.25] > spread[1.0] > spread[4.0] > 0
