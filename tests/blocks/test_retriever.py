"""MoE-Retriever: train-only support bank, batched sampling, noisy top-k gate, losses, modes."""

import math

import pytest
import torch

from medmoe.blocks import MoERetriever, SupportBank
from medmoe.blocks.retriever import RETRIEVER_MODES, cv_squared, noisy_top_k_gating

M, N, D = 3, 2, 8
T, F = True, False


def tiny(mode="moe", **kwargs):
    torch.manual_seed(0)
    cfg = dict(num_heads=2, num_supports=2, num_candidates=2, num_shared=1, top_k=2, capacity=8)
    return MoERetriever(M, N, D, mode=mode, **{**cfg, **kwargs})


def fill(bank_owner, masks, prefix="train", seed=1):
    """Training-mode forwards of complete or partial samples with ids ``prefix-i``."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor(masks)
    ids = [f"{prefix}-{i}" for i in range(len(masks))]
    bank_owner.train()
    with torch.no_grad():
        bank_owner(torch.randn(len(masks), M, N, D, generator=g), mask, ids)
    return ids


def test_bank_refuses_other_splits_and_keeps_training_ids():
    bank = SupportBank(M, N, D, capacity=4)
    x, mask = torch.randn(2, M, N, D), torch.tensor([[T, T, T], [T, F, F]])
    with pytest.raises(ValueError, match="training-split"):
        bank.update(["val-0", "val-1"], x, mask, split_is_train=False)
    assert not bank.filled.any() and bank.ids == [None] * 4
    assert bank.update(["t0", "t1"], x, mask, split_is_train=True) == 2
    assert bank.ids[:2] == ["t0", "t1"] and bank.presence[1].tolist() == [T, F, F]
    assert bank.embeddings[1, 1:].abs().sum() == 0  # absent modalities are never stored
    bank.update(["t2", "t3", "t4"], torch.randn(3, M, N, D), torch.ones(3, M, dtype=torch.bool), True)
    assert bank.ids == ["t4", "t1", "t2", "t3"]  # FIFO
    with pytest.raises(ValueError, match="embeddings must be"):
        bank.update(None, torch.randn(2, M, N, D + 1), mask, True)


def test_candidates_share_observed_modalities_with_fallback():
    bank = SupportBank(M, N, D, capacity=4)
    rows = torch.tensor([[T, T, F], [T, F, T], [F, T, T], [F, F, T]])
    bank.update([0, 1, 2, 3], torch.randn(4, M, N, D), rows, True)
    observed = torch.tensor([[T, F, F], [F, F, T], [T, F, T]])
    valid, fallback = bank.candidates(observed, torch.tensor([1, 1, 1]))
    assert valid.tolist() == [[T, F, F, F], [F, F, T, F], [T, F, T, F]]
    assert fallback.tolist() == [F, F, T]  # nobody has {0, 2} and 1: fall back to "has 1"
    index, ok = bank.sample(observed, torch.tensor([1, 1, 1]), 3, torch.Generator().manual_seed(0))
    assert ok.sum(1).tolist() == [1, 1, 2]
    for row, good, allowed in zip(index, ok, valid):
        assert allowed[row[good]].all() and len(set(row.tolist())) == 3  # valid ones drawn, no repeats
    assert bank.last_fallback.tolist() == [F, F, T]


def test_supports_come_from_training_ids_only_even_after_eval_forwards():
    model = tiny()
    train_ids = fill(model, [[T, T, T], [T, T, F], [T, F, T], [F, T, T]])
    model.eval()
    g = torch.Generator().manual_seed(3)
    for step in range(3):
        mask = torch.tensor([[T, F, F], [F, T, T], [T, T, F]])
        model(torch.randn(3, M, N, D), mask, [f"test-{step}-{i}" for i in range(3)], generator=g)
        seen = [i for row in model.last_choices()["support_ids"] for i in row]
        assert seen and set(seen) <= set(train_ids)
    assert set(model.bank.ids) - {None} == set(train_ids)  # eval forwards never write


def test_gate_top_k_masks_disallowed_experts():
    clean = torch.tensor([[1.0, 2.0, 3.0, 0.0], [3.0, 1.0, 0.0, 2.0]])
    allowed = torch.tensor([[T, T, F, T], [F, T, T, T]])
    gates, index, load = noisy_top_k_gating(clean, None, None, allowed, 2)
    assert index.tolist() == [[1, 0], [3, 1]]  # expert 2 / 0 have the largest logits but are disallowed
    e = math.e
    torch.testing.assert_close(gates, torch.tensor([[e / (e + 1), 1 / (e + 1)]] * 2))
    assert load.tolist() == [[1, 1, 0, 0], [0, 1, 0, 1]]


def test_gate_smooth_load_matches_shazeer():
    clean = torch.zeros(1, 3)
    noise = torch.tensor([[1.0, 0.0, -1.0]])
    gates, index, load = noisy_top_k_gating(clean, torch.ones(1, 3), noise, torch.ones(1, 3, dtype=torch.bool), 1)
    assert index.tolist() == [[0]] and gates.tolist() == [[1.0]]
    phi = torch.distributions.Normal(0.0, 1.0).cdf
    # in the top-1: threshold = 2nd largest noisy (0); out: threshold = largest noisy (1)
    torch.testing.assert_close(load, phi(torch.tensor([[0.0, -1.0, -1.0]])))


def test_importance_and_balance_losses_hand_computed():
    model = MoERetriever(2, N, D, num_heads=2, num_candidates=1, num_shared=1, top_k=1)
    # experts: 0 -> modality 0, 1 -> modality 1, 2 shared; modality 0 may use {0, 2}, modality 1 {1, 2}
    gates = torch.tensor([[0.7, 0.0, 0.3], [0.4, 0.0, 0.6], [0.0, 1.0, 0.0]])
    load = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    out = model._balance(gates, load, torch.tensor([0, 0, 1]))
    # importance: m0 allowed sums [1.1, 0.9] -> var 0.02 / mean^2 1 = 0.02; m1 [1, 0] -> 0.5 / 0.25 = 2
    torch.testing.assert_close(out["importance"], torch.tensor((0.02 + 2.0) / 2))
    # load: m0 [1, 1] -> 0; m1 [0, 1] -> 2
    torch.testing.assert_close(out["balance"], torch.tensor(1.0))
    assert cv_squared(torch.tensor([2.0])) == 0


def test_eval_routing_respects_allowed_experts_and_reports_choices():
    model = tiny(top_k=1)
    fill(model, [[T, T, T]] * 4)
    with torch.no_grad():
        model.w_gate.zero_()
        model.w_gate[:, 0] = 50.0  # expert 0 (modality 0) would win everywhere if not masked
    model.eval()
    mask = torch.tensor([[F, T, T], [T, F, T], [T, T, F]])
    x = torch.randn(3, M, N, D)
    out = model(x, mask)
    assert torch.equal(out[mask], x[mask])
    choices = model.last_choices()
    assert choices["modality"].tolist() == [0, 1, 2]
    for m, experts in zip(choices["modality"], choices["expert_index"]):
        assert model.allowed[m, experts].all()
    assert model.auxiliary_losses()["balance"] >= 0


def test_every_parameter_receives_a_gradient():
    model = tiny(top_k=3)  # every allowed expert is used
    fill(model, [[T, T, T]] * 4)
    model.train()
    mask = torch.tensor([[F, T, T], [T, F, T], [T, T, F]])
    out = model(torch.randn(3, M, N, D, requires_grad=True), mask, ["a", "b", "c"])
    loss = out.square().sum() + sum(model.auxiliary_losses().values())
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient for {dead}"


@pytest.mark.parametrize("mode", RETRIEVER_MODES)
def test_batched_equals_one_sample_at_a_time(mode):
    model = tiny(mode)
    fill(model, [[T, T, T], [T, T, T], [T, F, F], [F, T, F]])  # exactly 2 candidates for every query below
    model.eval()
    mask = torch.tensor([[T, T, F], [T, F, F], [T, T, T], [F, T, F]])
    x = torch.randn(4, M, N, D)
    batched = model(x, mask, generator=torch.Generator().manual_seed(0))
    for i in range(4):
        alone = model(x[i : i + 1], mask[i : i + 1], generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(alone[0], batched[i], atol=1e-5, rtol=1e-5)


def test_baseline_modes():
    x = torch.randn(2, M, N, D)
    mask = torch.tensor([[T, T, F], [F, T, T]])
    zero = tiny("zero").eval()
    assert zero(x, mask)[0, 2].abs().sum() == 0 and not list(zero.parameters())
    mean = tiny("mean")
    fill(mean, [[T, T, T], [T, F, T]])
    bank = mean.bank
    expected = bank.embeddings[:2, 2].mean(0)
    torch.testing.assert_close(mean.eval()(x, mask)[0, 2], expected)
    public = tiny("public_mean").eval()
    torch.testing.assert_close(public(x, mask)[0, 2], x[0, :2].mean(0))  # empty bank: the own-modality term only
    fill(public, [[T, T, T], [T, T, T]])
    want = 0.5 * public.bank.embeddings[:2, 2].mean(0) + 0.5 * x[0, :2].mean(0)
    torch.testing.assert_close(public.eval()(x, mask)[0, 2], want)
    learned = tiny("learned").eval()
    out = learned(x, mask)
    torch.testing.assert_close(out[0, 2], learned.learned[0b011, 2])
    torch.testing.assert_close(out[1, 0], learned.learned[0b110, 0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        MoERetriever(M, N, D, mode="nearest")
    with pytest.raises(ValueError, match="top_k"):
        MoERetriever(M, N, D, num_candidates=1, num_shared=1, top_k=3)
    with pytest.raises(ValueError, match="num_supports"):
        MoERetriever(M, N, D, num_supports=9, capacity=8)
    with pytest.raises(ValueError, match="tokens must be"):
        tiny()(torch.randn(2, M + 1, N, D), torch.ones(2, M + 1, dtype=torch.bool))
