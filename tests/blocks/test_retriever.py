"""MoE-Retriever: train-only support bank, batched sampling, noisy top-k gate, losses, modes."""

import math

import pytest
import torch

from medmoe.blocks import MoERetriever, SupportBank
from medmoe.blocks.retriever import RETRIEVER_MODES, cv_squared, noisy_top_k_gating
from medmoe.engines import finish_distributed
from medmoe.interpret.retrieval import support_ids

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
    index, ok, fallback = bank.sample(observed, torch.tensor([1, 1, 1]), 3, torch.Generator().manual_seed(0))
    assert ok.sum(1).tolist() == [1, 1, 2]
    for row, good, allowed in zip(index, ok, valid):
        assert allowed[row[good]].all() and len(set(row.tolist())) == 3  # valid ones drawn, no repeats
    assert fallback.tolist() == [F, F, T]


def test_supports_come_from_training_ids_only_even_after_eval_forwards():
    model = tiny()
    train_ids = fill(model, [[T, T, T], [T, T, F], [T, F, T], [F, T, T]])
    model.eval()
    g = torch.Generator().manual_seed(3)
    for step in range(3):
        mask = torch.tensor([[T, F, F], [F, T, T], [T, T, F]])
        out = model(torch.randn(3, M, N, D), mask, [f"test-{step}-{i}" for i in range(3)], generator=g)
        seen = [i for row in support_ids(out.choices) for i in row]
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
    out, aux, choices = model(x, mask)
    assert torch.equal(out[mask], x[mask])
    assert choices["modality"].tolist() == [0, 1, 2]
    for m, experts in zip(choices["modality"], choices["expert_index"]):
        assert model.allowed[m, experts].all()
    assert aux["balance"] >= 0


def test_every_parameter_receives_a_gradient():
    model = tiny(top_k=3)  # every allowed expert is used
    fill(model, [[T, T, T]] * 4)
    model.train()
    mask = torch.tensor([[F, T, T], [T, F, T], [T, T, F]])
    out, aux, _ = model(torch.randn(3, M, N, D, requires_grad=True), mask, ["a", "b", "c"])
    loss = out.square().sum() + sum(aux.values())
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
    batched = model(x, mask, generator=torch.Generator().manual_seed(0)).tokens
    for i in range(4):
        alone = model(x[i : i + 1], mask[i : i + 1], generator=torch.Generator().manual_seed(5)).tokens
        torch.testing.assert_close(alone[0], batched[i], atol=1e-5, rtol=1e-5)


def test_baseline_modes():
    x = torch.randn(2, M, N, D)
    mask = torch.tensor([[T, T, F], [F, T, T]])
    zero = tiny("zero").eval()
    assert zero(x, mask).tokens[0, 2].abs().sum() == 0 and not list(zero.parameters())
    mean = tiny("mean")
    fill(mean, [[T, T, T], [T, F, T]])
    bank = mean.bank
    expected = bank.embeddings[:2, 2].mean(0)
    torch.testing.assert_close(mean.eval()(x, mask).tokens[0, 2], expected)
    public = tiny("public_mean").eval()
    torch.testing.assert_close(public(x, mask).tokens[0, 2], x[0, :2].mean(0))  # empty bank: the own-modality term only
    fill(public, [[T, T, T], [T, T, T]])
    want = 0.5 * public.bank.embeddings[:2, 2].mean(0) + 0.5 * x[0, :2].mean(0)
    torch.testing.assert_close(public.eval()(x, mask).tokens[0, 2], want)
    learned = tiny("learned").eval()
    out = learned(x, mask).tokens
    torch.testing.assert_close(out[0, 2], learned.learned[0b011, 2])
    torch.testing.assert_close(out[1, 0], learned.learned[0b110, 0])


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_zero_auxiliary_losses_live_where_the_forward_ran(mode):
    # nothing to retrieve (every modality present) in a parameter-free mode: the zero losses are made on the
    # device of the call's tokens (they were CPU tensors, mixed into a CUDA loss), scalars of every name.
    module = tiny(mode).eval()
    tokens = torch.randn(2, M, N, D, dtype=torch.float64)
    losses = module(tokens, torch.ones(2, M, dtype=torch.bool)).aux_losses
    assert not list(module.parameters()) and set(losses) == {"importance", "balance"}
    assert all(v.device == tokens.device and v.dim() == 0 and v == 0 for v in losses.values())


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        MoERetriever(M, N, D, mode="nearest")
    with pytest.raises(ValueError, match="top_k"):
        MoERetriever(M, N, D, num_candidates=1, num_shared=1, top_k=3)
    with pytest.raises(ValueError, match="num_supports"):
        MoERetriever(M, N, D, num_supports=9, capacity=8)
    with pytest.raises(ValueError, match="tokens must be"):
        tiny()(torch.randn(2, M + 1, N, D), torch.ones(2, M + 1, dtype=torch.bool))


def test_bank_keeps_one_row_per_id_with_the_newest_embedding():
    bank = SupportBank(M, N, D, capacity=3)
    ones = torch.ones(2, M, dtype=torch.bool)
    bank.update(["a", "b"], torch.zeros(2, M, N, D), ones, True)
    newer = torch.full((2, M, N, D), 2.0)
    assert bank.update(["b", "c"], newer, ones, True) == 2  # "b" seen again (next epoch): same row, new value
    assert bank.ids == ["a", "b", "c"]
    assert bank.embeddings[1].eq(2.0).all() and bank.embeddings[0].eq(0.0).all()
    # within one batch the last occurrence wins; "a" is refreshed, so "d" evicts the least recent row ("b")
    batch = torch.stack([torch.full((M, N, D), 5.0), torch.full((M, N, D), 7.0), torch.full((M, N, D), 9.0)])
    assert bank.update(["a", "a", "d"], batch, torch.ones(3, M, dtype=torch.bool), True) == 2
    assert bank.ids == ["a", "d", "c"] and sorted(i for i in bank.ids) == ["a", "c", "d"]
    assert bank.embeddings[0].eq(7.0).all() and bank.embeddings[1].eq(9.0).all()
    bank.update(None, torch.ones(2, M, N, D), ones, True)  # anonymous rows are never merged
    assert bank.ids.count(None) == 2
    with pytest.raises(ValueError, match="one entry per sample"):
        bank.update(["x"], torch.ones(2, M, N, D), ones, True)


def test_eval_sampling_is_reproducible_by_default():
    model = tiny(num_supports=1, capacity=8, support_selection="random")
    fill(model, [[T, T, T]] * 8)
    model.eval()
    x, mask = torch.randn(4, M, N, D), torch.tensor([[F, T, T], [T, F, T], [T, T, F], [F, F, T]])
    first = model(x, mask)
    supports = support_ids(first.choices)
    model(torch.randn(2, M, N, D), mask[:2])  # an unrelated batch in between
    torch.manual_seed(123)  # the global RNG does not matter in eval
    again = model(x, mask)
    torch.testing.assert_close(again.tokens, first.tokens, rtol=0, atol=0)
    assert support_ids(again.choices) == supports
    other = tiny(num_supports=1, capacity=8, eval_seed=1, support_selection="random")
    other.load_state_dict(model.state_dict())
    draws = [supports, support_ids(other.eval()(x, mask).choices)]
    assert draws[0] != draws[1]  # 4 draws from 8 rows: seeds 0 and 1 differ (checked, deterministic)


def _gather_worker(rank: int, world: int, path: str, result: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    bank = SupportBank(M, N, D, capacity=8)
    x = torch.full((rank + 1, M, N, D), float(rank))  # ranks hold different batch sizes
    written = bank.update([f"r{rank}-{i}" for i in range(rank + 1)], x, torch.ones(rank + 1, M, dtype=torch.bool), True)
    torch.save({"ids": bank.ids, "embeddings": bank.embeddings, "written": written}, f"{result}{rank}.pt")
    finish_distributed()  # barrier, destroy, exit 0 without the finalization abort (medmoe.engines)


def test_bank_updates_are_gathered_across_ranks(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_gather_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "bank")), nprocs=2)
    banks = [torch.load(tmp_path / f"bank{r}.pt", weights_only=True) for r in range(2)]
    for bank in banks:
        assert bank["written"] == 3 and bank["ids"][:3] == ["r0-0", "r1-0", "r1-1"]
        assert bank["embeddings"][0].eq(0).all() and bank["embeddings"][1:3].eq(1).all()
    assert torch.equal(banks[0]["embeddings"], banks[1]["embeddings"])


def test_a_sample_never_supports_itself():
    bank = SupportBank(M, N, D, capacity=4)
    bank.update(["a", "b", "c"], torch.randn(3, M, N, D), torch.ones(3, M, dtype=torch.bool), True)
    observed, targets = torch.tensor([[T, F, F], [T, F, F]]), torch.tensor([1, 1])
    valid, _ = bank.candidates(observed, targets, ["b", "z"])
    assert valid.tolist() == [[T, F, T, F], [T, T, T, F]]
    index, ok, _ = bank.sample(observed, targets, 3, torch.Generator().manual_seed(0), ["b", None])
    assert 1 not in index[0][ok[0]].tolist() and ok.sum(1).tolist() == [2, 3]
    model = tiny(num_supports=3)
    fill(model, [[T, T, T]] * 3, "train")  # ids train-0..2, e.g. a previous epoch with every view present
    model.train()
    with torch.no_grad():
        out = model(torch.randn(3, M, N, D), torch.tensor([[F, T, T]] * 3), ["train-0", "train-1", "train-2"])
    for own, supports in zip(["train-0", "train-1", "train-2"], support_ids(out.choices)):
        assert own not in supports and len(supports) == 2


def test_masked_retrieval_trains_the_retriever_on_complete_samples():
    model = tiny(top_k=3, masked_retrieval=1.0, capacity=16)
    fill(model, [[T, T, T]] * 8, "warm")
    model.train()
    x = torch.randn(4, M, N, D)
    out, losses, _ = model(x, torch.tensor([[T, T, T], [T, T, T], [T, T, F], [T, F, F]]), ["a", "b", "c", "d"])
    assert torch.equal(out[:, :2][:2], x[:, :2][:2])  # the downstream model still sees the real embeddings
    assert set(losses) == {"importance", "balance", "reconstruction"} and losses["reconstruction"] > 0
    model.zero_grad()
    _, losses, choices = model(x, torch.ones(4, M, dtype=torch.bool), ["a", "b", "c", "d"])  # nothing missing
    assert choices["sample"].numel() == 0
    losses["reconstruction"].backward()
    trained = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert {"query", "attention.in_proj_weight", "experts.w1"} <= set(trained)
    model.eval()
    assert model(x, torch.ones(4, M, dtype=torch.bool)).aux_losses["reconstruction"] == 0  # eval never hides
    with pytest.raises(ValueError, match="masked_retrieval"):
        tiny("public_mean", masked_retrieval=0.5)


def _e(i: int) -> torch.Tensor:
    return torch.eye(D)[i]


def _nearest_bank() -> tuple[SupportBank, list[str]]:
    """Rows whose cosine scores to the query of :func:`test_nearest_supports_by_hand` are easy to compute."""
    rows = {  # id: (presence, embedding of modality 0, 1, 2) with both tokens equal
        "far": ([T, T, T], [-_e(0), _e(5), _e(1)]),  # mod 0 opposite, mod 2 equal: (-1 + 1) / 2 = 0
        "self": ([T, T, T], [_e(0), _e(5), _e(1)]),  # identical to query 0 but its own id
        "mid": ([T, T, T], [_e(0), _e(5), _e(2)]),  # (1 + 0) / 2 = 0.5
        "no_target": ([T, F, T], [_e(0), torch.zeros(D), _e(1)]),  # would score 1 but lacks modality 1
        "near": ([T, T, T], [_e(0) * 3, _e(6), _e(1)]),  # scale does not matter: 1
        "no_shared": ([T, T, F], [_e(0), _e(5), torch.zeros(D)]),  # lacks the observed modality 2
        "tilted": ([T, T, T], [_e(0) + _e(3), _e(7), _e(1)]),  # (1 / sqrt 2 + 1) / 2 = 0.854
    }
    bank = SupportBank(M, N, D, capacity=8)
    presence = torch.tensor([p for p, _ in rows.values()])
    x = torch.stack([torch.stack(e) for _, e in rows.values()]).unsqueeze(2).expand(-1, -1, N, -1)
    bank.update(list(rows), x, presence, True)
    return bank, list(rows)


def test_nearest_supports_by_hand():
    bank, ids = _nearest_bank()
    query = torch.zeros(2, M, N, D)
    query[0, 0] = torch.stack([_e(0) + _e(4), _e(0) - _e(4)])  # tokens mean-pool to e0
    query[0, 2] = _e(1)
    query[1, 0] = -_e(0)
    query[0, 1] = query[1, 1] = 100.0  # the target's slot (absent) is never read
    observed, targets = torch.tensor([[T, F, T], [T, F, F]]), torch.tensor([1, 2])
    index, valid, fallback = bank.nearest(observed, targets, 5, query, ["self", "q1"])
    picked = [[ids[j] for j, ok in zip(row, good) if ok] for row, good in zip(index.tolist(), valid.tolist())]
    # query 0 (has 0 and 2, misses 1): "self", "no_target", "no_shared" are ineligible; 4 eligible rows only
    assert picked[0] == ["near", "tilted", "mid", "far"] and valid[0].tolist() == [T, T, T, T, F]
    # query 1 (has 0, misses 2): rows with 2 and 0; only "far" points along -e0, then "tilted" (-0.707)
    # then four rows at -1 in row order (ties to the lower row); "no_shared" lacks modality 2
    assert picked[1] == ["far", "tilted", "self", "mid", "no_target"] and valid[1].all()
    assert fallback.tolist() == [F, F]
    with pytest.raises(ValueError, match="query must be"):
        bank.nearest(observed, targets, 2, query[:, :, :1])
    with pytest.raises(ValueError, match="capacity"):
        bank.nearest(observed, targets, 9, query)


def test_retriever_uses_nearest_training_supports_and_never_ineligible_ones():
    model = tiny(num_supports=3, capacity=8)
    assert model.support_selection == "nearest"
    bank, ids = _nearest_bank()
    model.bank.load_state_dict(bank.state_dict())
    model.eval()
    x = torch.zeros(3, M, N, D)
    x[:, 0], x[:, 2] = _e(0), _e(1)
    mask = torch.tensor([[T, F, T]] * 3)
    before = model.bank.embeddings.clone()
    for _ in range(2):  # deterministic in eval; evaluation never writes to the bank
        supports = support_ids(model(x, mask, ["self", "test-1", "test-2"]).choices)
        assert supports[0] == ["near", "tilted", "mid"]  # "self" (score 1) never supports itself
        assert supports[1] == supports[2] == ["self", "near", "tilted"]  # ties go to the lower row
        assert not {"no_target", "no_shared"} & {i for row in supports for i in row}
    assert torch.equal(model.bank.embeddings, before) and model.bank.ids == ids + [None]
    model.train()  # training selects the same way (deterministic), reading the bank before writing the batch
    with torch.no_grad():
        supports = support_ids(model(x, mask, ["self", "new-1", "new-2"]).choices)
    assert supports[0] == ["near", "tilted", "mid"]
    assert supports[1] == ["self", "near", "tilted"]
    assert {"new-1", "new-2"} <= set(model.bank.ids)
    with pytest.raises(ValueError, match="support_selection"):
        tiny(support_selection="closest")


def test_support_residual_adds_the_mean_of_the_valid_supports():
    plain, residual = tiny(capacity=16), tiny(capacity=16, support_residual=True)
    assert not plain.support_residual and residual.support_residual
    for model in (plain, residual):
        with torch.no_grad():  # no expert contribution: the output is the attention output (+ support mean)
            model.experts.w2.zero_()
            model.experts.b2.zero_()
    x = torch.randn(3, M, N, D)
    mask = torch.tensor([[T, F, T], [F, T, T], [T, T, F]])
    residual.eval()
    empty = residual(x, mask, ["q0", "q1", "q2"]).tokens  # empty bank: no valid support, nothing added
    plain.eval()
    assert torch.allclose(empty, plain(x, mask, ["q0", "q1", "q2"]).tokens, atol=1e-6)
    residual.load_state_dict(plain.state_dict() | {k: v for k, v in residual.state_dict().items() if "experts" in k})
    ids = fill(plain, [[T, T, T]] * 6 + [[T, F, T]] * 2, "train")
    fill(residual, [[T, T, T]] * 6 + [[T, F, T]] * 2, "train")
    plain.eval(), residual.eval()
    (out_plain, _, plain_choices), (out_res, _, choices) = (
        plain(x, mask, ["q0", "q1", "q2"]),
        residual(x, mask, ["q0", "q1", "q2"]),
    )
    assert torch.equal(choices["support_index"], plain_choices["support_index"])
    assert choices["support_valid"].all()
    bank = residual.bank.embeddings
    for row, (i, m) in enumerate(zip(choices["sample"].tolist(), choices["modality"].tolist())):
        supports = choices["support_index"][row]
        assert all(residual.bank.presence[j, m] for j in supports.tolist())
        assert set(support_ids(choices)[row]) <= set(ids)
        expected = out_plain[i, m] + bank[supports, m].mean(0)
        assert torch.allclose(out_res[i, m], expected, atol=1e-5)
    assert torch.equal(out_res[mask], x[mask])  # present modalities untouched
    residual.train()
    residual.zero_grad()
    residual(x, mask, ["q0", "q1", "q2"]).tokens.sum().backward()
    assert residual.attention.in_proj_weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="support_residual"):
        tiny("public_mean", support_residual=True)


def test_importance_and_balance_are_the_cv_squared_of_this_calls_routing():
    # Shazeer et al. 2017: cv^2 of each target modality's summed gates (importance) and selections (load, eval)
    # over its allowed experts, averaged over the modalities filled in this call
    model = tiny(top_k=2)
    fill(model, [[T, T, T]] * 6)
    with torch.no_grad():
        model.w_gate.normal_(generator=torch.Generator().manual_seed(2))  # uneven routing (zero init: all tied)
    model.eval()
    mask = torch.tensor([[F, T, T], [T, F, T], [F, F, T], [T, T, F], [T, F, T]])
    _, aux, choices = model(torch.randn(5, M, N, D), mask)
    importance, load = torch.zeros(M, model.num_experts), torch.zeros(M, model.num_experts)
    for m, experts, gates in zip(choices["modality"], choices["expert_index"], choices["expert_gate"]):
        for e, g in zip(experts.flatten().tolist(), gates.flatten().tolist()):
            importance[m, e] += g
            load[m, e] += 1.0
    expected = {}
    for name, table in (("importance", importance), ("balance", load)):
        rows = [table[m][model.allowed[m]] for m in sorted(set(choices["modality"].tolist()))]
        expected[name] = torch.stack([r.var() / r.mean() ** 2 for r in rows]).mean()
    assert set(aux) == {"importance", "balance"} and expected["importance"] > 0.05 and expected["balance"] > 0.05
    torch.testing.assert_close(aux["importance"], expected["importance"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(aux["balance"], expected["balance"], rtol=1e-4, atol=1e-6)
    (gradient,) = torch.autograd.grad(aux["importance"], model.w_gate)  # a loss, not a report: it trains the gate
    assert gradient.abs().sum() > 0


@pytest.mark.parametrize("mode", ["moe", "public_mean"])
def test_absent_modalities_placeholders_are_never_read(mode):
    # an absent modality's tokens (whatever the caller left there) must not reach any retrieved embedding:
    # the retriever attends only to the sample's observed modalities and the supports
    model = tiny(mode, capacity=16)
    fill(model, [[T, T, T]] * 6 + [[T, F, T]] * 2)
    model.eval()
    mask = torch.tensor([[T, F, F], [T, T, F], [F, T, T]])
    x = torch.randn(3, M, N, D)
    filled = model(x, mask, ["q0", "q1", "q2"]).tokens
    other = x.clone()
    other[~mask] = torch.randn(int((~mask).sum()), N, D) * 10.0  # different placeholders, same observed views
    again = model(other, mask, ["q0", "q1", "q2"]).tokens
    torch.testing.assert_close(again, filled, rtol=0, atol=1e-6)
    changed = x.clone()
    changed[0, 0] += 1.0  # an observed modality does matter
    assert not torch.allclose(model(changed, mask, ["q0", "q1", "q2"]).tokens[0, 1], filled[0, 1])
