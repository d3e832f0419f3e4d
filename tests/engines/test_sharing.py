"""A model file for sharing holds the weights and no training data: no support-bank embeddings, no training ids."""

import json
import logging

import torch

from medmoe.engines import load_weights
from medmoe.engines.sharing import main, write_shared_model
from medmoe.utils import atomic_torch_save


def _batch(ids):
    mask = torch.tensor([[True, False], [True, True]])
    return {"a": torch.randn(2, 1, 16, 16), "b": torch.randn(2, 1, 16, 16), "modality_mask": mask, "id": ids}


def test_the_shared_file_has_the_weights_but_no_training_embeddings_or_ids(tmp_path, caplog, make_m4oe):
    net = make_m4oe(missing_modality="retriever")
    net.train()
    net(_batch(["train_exam_0001", "train_exam_0002"]))  # a training forward fills the support bank
    bank = net.missing_fill.retriever.bank
    assert bank.filled.sum() == 2 and "train_exam_0001" in bank.ids
    source = atomic_torch_save(tmp_path / "last.pt", {"model": net.state_dict(), "optimizer": {}, "trainer": {}})
    assert b"train_exam_0001" in source.read_bytes()

    target = write_shared_model(source, tmp_path / "shared" / "model.pt")
    assert b"train_exam_0001" not in target.read_bytes() and b"train_exam_0002" not in target.read_bytes()
    shared = torch.load(target, weights_only=True)
    assert shared["kind"] == "shared" and set(shared) == {"kind", "model"}  # no optimizer, no random states
    state = shared["model"]
    assert (
        not state["missing_fill.retriever.bank.embeddings"].any()
        and not state["missing_fill.retriever.bank.filled"].any()
    )
    for key, value in net.state_dict().items():
        if ".bank." not in key:
            assert torch.equal(state[key], value), key  # every weight is kept
    metadata = json.loads((tmp_path / "shared" / "model.json").read_text())
    assert metadata["kind"] == "shared" and metadata["contains_training_data"] is False
    assert metadata["support_banks_emptied"] == ["missing_fill.retriever.bank"]

    recipient = make_m4oe(seed=1, missing_modality="retriever")
    with caplog.at_level(logging.WARNING):
        load_weights(recipient, target)
    assert "is a model for sharing: its support bank is empty" in caplog.text
    recipient.eval()
    with torch.no_grad():
        output = recipient(_batch(["new_1", "new_2"]))
    fallback = output.interpret["retrieval"]["fallback"]  # this forward's retrieval choices (the model contract)
    assert torch.isfinite(output["t"]).all() and fallback.numel() > 0 and fallback.all()  # no supports to read


def test_a_model_without_a_bank_is_shared_unchanged_by_the_command_line(tmp_path):
    net = torch.nn.Linear(3, 2)
    source = atomic_torch_save(tmp_path / "model.pt", net.state_dict())
    assert main([str(source), str(tmp_path / "out.pt")]) == 0
    shared = torch.load(tmp_path / "out.pt", weights_only=True)["model"]
    assert all(torch.equal(shared[k], v) for k, v in net.state_dict().items())
    assert json.loads((tmp_path / "out.json").read_text())["support_banks_emptied"] == []
