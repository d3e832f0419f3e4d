"""ModalityEncoders' missing-modality fill (zero / learned / retriever), used by FusionModel and I2MoE."""

import pytest
import torch

from medmoe.interpret.retrieval import support_ids
from medmoe.nets import create_model
from medmoe.nets.fusion_model import ModalityEncoders

MODALITIES = ["mri", "csf", "cog"]
FEATURES = {"mri": 6, "csf": 3, "cog": 4}
RETRIEVER = dict(num_heads=2, num_supports=2, num_candidates=2, num_shared=1, top_k=3, capacity=8)


def encoders(missing="zero", **kwargs):
    torch.manual_seed(0)
    extra = {"retriever_kwargs": {**RETRIEVER, **kwargs}} if missing == "retriever" else {}
    return ModalityEncoders(MODALITIES, 8, FEATURES, num_tokens=2, missing_modality=missing, **extra)


def batch(mask, prefix="train", seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {k: torch.randn(len(mask), n, generator=g) for k, n in FEATURES.items()}
    out["modality_mask"] = torch.tensor(mask)
    out["id"] = [f"{prefix}-{seed}-{i}" for i in range(len(mask))]
    return out


def fusion(missing="zero", model="fusion", **kwargs):
    torch.manual_seed(0)
    net = create_model(model, modalities=MODALITIES, tasks={"dx": 3}, in_features=FEATURES, hidden_size=8,
                       num_tokens=2, backbone_kwargs={"num_heads": 2})  # fmt: skip
    if missing != "zero":  # swap the encoders in: FusionModel and I2MoE need no change to take a fill
        net.encoders = encoders(missing, **kwargs)
    return net


@pytest.mark.parametrize("missing", ["learned", "retriever"])
@pytest.mark.parametrize("train", [False, True])
def test_complete_batch_is_identical_with_the_fill_on_or_off(missing, train):
    full = batch([[True] * 3] * 4)
    off, on = encoders(), encoders(missing)
    off.train(train), on.train(train)
    with torch.no_grad():
        (a, mask_a, *_), (b, mask_b, *_) = off(full), on(full)
    assert torch.equal(a, b) and torch.equal(mask_a, mask_b)
    for name in ("fusion", "i2moe"):
        nets = [fusion(model=name), fusion(missing, model=name)]
        with torch.no_grad():
            outs = [net.train(train)(full)["dx"] for net in nets]
        if not train or name == "fusion":  # I2MoE's training passes draw noise: compare in eval / for fusion
            assert torch.equal(outs[0], outs[1])


def test_every_parameter_gets_a_gradient_in_retrieval_mode():
    net = fusion("retriever")
    net.train()
    with torch.no_grad():
        net(batch([[True] * 3] * 4, "warm"))  # fill the support bank
    out = net(batch([[False, True, True], [True, False, True], [True, True, False], [True, True, True]]))
    losses = out.aux_losses
    assert set(losses) == {"retriever_importance", "retriever_balance"}
    (out["dx"].logsumexp(-1).sum() + sum(losses.values())).backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient for {dead}"
    assert all(support_ids(out.interpret["retrieval"]))


def test_filled_modality_counts_as_present_and_reaches_the_backbone():
    part = batch([[True, False, True], [False, True, True]])
    zero, learned = encoders(), encoders("learned")
    tokens, mask, presence, aux, _ = learned(part)
    assert mask.all() and presence.tolist() == [[True, False, True], [False, True, True]] and aux == {}
    torch.testing.assert_close(tokens[0, 1], learned.missing_fill.missing_tokens[1, 0])
    torch.testing.assert_close(tokens[1, 0], learned.missing_fill.missing_tokens[0, 0])
    zero_tokens, zero_mask, _, zero_aux, _ = zero(part)
    assert torch.equal(zero_mask, part["modality_mask"]) and zero_tokens[0, 1].abs().sum() == 0
    assert torch.equal(tokens[0, [0, 2]], zero_tokens[0, [0, 2]])  # present modalities untouched
    out_zero, out_learned = fusion().eval()(part)["dx"], fusion("learned").eval()(part)["dx"]
    assert not torch.allclose(out_zero, out_learned)  # the fill is seen by the backbone, not masked away
    assert zero_aux == {}


def test_retriever_bank_takes_training_ids_only():
    enc = encoders("retriever", mode="public_mean")
    enc.train()
    data = batch([[True, True, True], [True, False, True]], "train")
    enc(data)
    enc.eval()
    choices = enc(batch([[True, False, False]], "test")).choices
    assert set(enc.missing_fill.retriever.bank.ids) - {None} == set(data["id"])
    # csf: only train-0-0 has it (and mri); cog: both training rows qualify
    assert sorted(map(sorted, support_ids(choices))) == [
        ["train-0-0"],
        ["train-0-0", "train-0-1"],
    ]


def test_bad_fill_options():
    with pytest.raises(ValueError, match="missing_modality must be one of"):
        ModalityEncoders(MODALITIES, 8, FEATURES, missing_modality="nearest")
    with pytest.raises(ValueError, match="retriever_kwargs needs"):
        ModalityEncoders(MODALITIES, 8, FEATURES, missing_modality="zero", retriever_kwargs={"top_k": 1})


@pytest.mark.parametrize("model", ["fusion", "i2moe"])
def test_models_take_the_fill_as_an_option_and_report_its_losses(model):
    torch.manual_seed(0)
    net = create_model(model, modalities=MODALITIES, tasks={"dx": 3}, in_features=FEATURES, hidden_size=8,
                       num_tokens=2, backbone_kwargs={"num_heads": 2}, missing_modality="retriever",
                       retriever_kwargs=RETRIEVER)  # fmt: skip
    net.train()
    with torch.no_grad():
        net(batch([[True] * 3] * 4, "warm"))
    losses = net(batch([[False, True, True], [True, True, True]])).aux_losses
    expected = {"retriever_importance", "retriever_balance"} | ({"interaction"} if model == "i2moe" else set())
    assert set(losses) == expected


def test_i2moe_interaction_losses_use_the_true_presence_under_a_fill():
    from medmoe.losses import interaction_losses

    torch.manual_seed(0)
    net = create_model("i2moe", modalities=MODALITIES, tasks={"dx": 3}, in_features=FEATURES, hidden_size=8,
                       num_tokens=2, backbone_kwargs={"num_heads": 2}, missing_modality="learned")  # fmt: skip
    part = batch([[True, False, True], [False, True, True], [True, True, False]])
    interpret = net.train()(part).interpret
    got = torch.stack(list(interpret["interaction_losses"].values()))
    true = interaction_losses(interpret["pass_logits"], part["modality_mask"])
    everything = interaction_losses(interpret["pass_logits"], torch.ones(3, 3, dtype=torch.bool))
    torch.testing.assert_close(got, true)
    assert not torch.allclose(got, everything)
