"""M4oE with ``missing_modality="retriever"``: identity on complete batches, train-only cache, losses, checkpoints."""

import io

import pytest
import torch

from medmoe.engines import MultimodalPrepareBatch
from medmoe.interpret.retrieval import support_ids
from medmoe.nets import create_model

MODALITIES = ["cc", "mlo", "s2d_cc"]
TINY = dict(
    modalities=MODALITIES,
    tasks={"density": 4, "risk": 2},
    image_size=16,
    patch_size=8,
    hidden_size=16,
    mlp_dim=16,
    num_heads=2,
    msoe_experts=2,
    mtoe_experts=2,
    fusion_experts=2,
)
RETRIEVER = dict(num_supports=2, num_candidates=2, num_shared=1, top_k=2, capacity=8)


def model(missing="retriever", **kwargs):
    torch.manual_seed(0)
    extra = {"retriever_kwargs": {**RETRIEVER, **kwargs}} if missing == "retriever" else {}
    return create_model("m4oe", **TINY, missing_modality=missing, **extra)


def batch(mask, prefix="train", seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(mask)
    out = {k: torch.rand(b, 1, 16, 16, generator=g) for k in MODALITIES}
    out["modality_mask"] = torch.tensor(mask)
    out["id"] = [f"{prefix}-{seed}-{i}" for i in range(b)]
    return out


@pytest.mark.parametrize("train", [False, True])
def test_complete_batch_is_identical_with_retriever_on_or_off(train):
    off, on = model("zero"), model()
    on.load_state_dict(off.state_dict(), strict=False)
    full = batch([[True] * 3] * 2)
    off.train(train), on.train(train)
    with torch.no_grad():
        a, b = off(full), on(full)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cache_holds_training_ids_only_and_supports_come_from_it():
    net = model(id_key="exam_id")
    prepare = MultimodalPrepareBatch(MODALITIES, TINY["tasks"], id_key="exam_id")  # ids travel with the batch

    def run(data):
        data["exam_id"] = data.pop("id")
        seen.append(net(prepare(data)[0]).interpret["retrieval"])
        return data["exam_id"]

    seen = []

    net.train()
    train_ids = []
    for _epoch in range(2):  # the same training exams in two epochs: one row each
        for seed in range(2):
            train_ids += run(batch([[True, True, True], [True, False, True], [True, True, False]], "train", seed))
    assert sorted(i for i in net.retriever.bank.ids if i is not None) == sorted(set(train_ids))
    assert len(set(train_ids)) == 6
    net.eval()
    for seed in range(2):
        run(batch([[True, False, False], [False, True, True]], "val", seed))
        supports = [i for row in support_ids(seen[-1]) for i in row]
        assert supports and None not in supports and set(supports) <= set(train_ids)
    assert set(net.retriever.bank.ids) - {None} == set(train_ids)


def test_retriever_losses_and_gradients():
    net = model(top_k=3)
    net.train()
    net(batch([[True] * 3] * 3, "warm"))
    out = net(batch([[False, True, True], [True, False, True], [True, True, False]]))
    losses = out.aux_losses
    assert {"retriever_importance", "retriever_balance", "mutual_information"} == set(losses)
    loss = sum(v.logsumexp(-1).sum() for v in out.values()) + sum(losses.values())
    loss.backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"no gradient for {dead}"
    learned = model("learned")
    assert set(learned(batch([[False, True, True]])).aux_losses) == {"mutual_information"}


def test_cache_travels_with_the_checkpoint():
    net = model()
    net.train()
    net(batch([[True, True, True], [True, False, True]]))
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    fresh = model()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.retriever.bank.ids == net.retriever.bank.ids
    assert torch.equal(fresh.retriever.bank.embeddings, net.retriever.bank.embeddings)


def test_retriever_kwargs_need_the_retriever():
    with pytest.raises(ValueError, match="retriever_kwargs"):
        create_model("m4oe", **TINY, missing_modality="zero", retriever_kwargs={"top_k": 1})


@pytest.mark.parametrize("missing", ["learned", "retriever"])
def test_checkpoints_from_before_the_shared_fill_module_still_load(missing):
    net = model(missing)
    net.train()
    net(batch([[True, True, True], [True, False, True]]))
    old = {k.replace("missing_fill.", ""): v for k, v in net.state_dict().items()}  # the former key names
    old = {k: v for k, v in old.items() if not k.endswith("bank.stamp")}  # nor had the bank a write stamp
    assert ("missing_tokens" in old) == (missing == "learned")
    fresh = model(missing)
    fresh.load_state_dict(old)
    for key, value in net.state_dict().items():
        got = fresh.state_dict()[key]
        if not key.endswith("bank.stamp"):
            assert torch.equal(got, value) if torch.is_tensor(value) else got == value, key  # ids: extra state
