"""Memory levers on CPU: activation checkpointing per block, gradient accumulation through the bundle trainer."""

from functools import partial
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedTrainer

from medmoe.blocks import TransformerBlock, set_activation_checkpointing
from medmoe.engines import MultimodalPrepareBatch
from medmoe.layers import SoftMoE
from medmoe.losses import MultiTaskLoss
from medmoe.nets import M4oE

REPO = Path(__file__).resolve().parents[2]


def _m4oe(checkpointing: bool, dropout: float = 0.1) -> M4oE:
    torch.manual_seed(0)
    return M4oE(
        ["a", "b"],
        {"t": 3},
        image_size=32,
        patch_size=8,
        hidden_size=32,
        mlp_dim=64,
        msoe_depth=2,
        dropout_rate=dropout,
        missing_modality="learned",
        activation_checkpointing=checkpointing,
    ).train()


def _batch(n: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {
        "a": torch.rand(n, 1, 32, 32),
        "b": torch.rand(n, 1, 32, 32),
        "modality_mask": torch.ones(n, 2, dtype=torch.bool),
        "t": torch.arange(n) % 3,
    }


def _step(model: M4oE, batch: dict) -> tuple[int, torch.Tensor, dict[str, torch.Tensor]]:
    """Bytes saved for backward during the forward, the output, and every parameter's gradient."""
    saved = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    torch.manual_seed(5)  # the same dropout draws in both runs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(batch)
    (out["t"].square().sum() + out.aux_losses["mutual_information"]).backward()
    return saved[0], out["t"].detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def test_checkpointing_same_values_and_gradients_less_saved_memory():
    batch = _batch()
    plain_saved, plain_out, plain_grads = _step(_m4oe(False), batch)
    model = _m4oe(True)
    blocks = [m for m in model.modules() if isinstance(m, TransformerBlock)]
    assert len(blocks) == 3 and all(b.activation_checkpointing for b in blocks)  # 2 MSoE + 1 fusion
    assert model.mtoe.activation_checkpointing  # and the MToE (attention over all views' tokens)
    saved, out, grads = _step(model, batch)
    torch.testing.assert_close(out, plain_out)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], msg=name)
    assert saved < 0.5 * plain_saved, (saved, plain_saved)  # measured 0.36x at this size


def test_checkpointing_only_when_training_with_gradients():
    block = TransformerBlock(16, 32, 2, partial(SoftMoE, num_experts=2), activation_checkpointing=True)
    x = torch.randn(2, 5, 16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        block.eval()(x)
    eval_saved = len(saved)
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        block.train()(x)
    assert len(saved) < eval_saved  # training: only the checkpoint's input is kept
    with torch.no_grad():
        assert block(x).shape == x.shape
    with pytest.raises(ValueError, match="no TransformerBlock"):
        set_activation_checkpointing(torch.nn.Linear(2, 2))
    assert set_activation_checkpointing(block, False) is block and not block.activation_checkpointing


def _train(model: M4oE, loader: list[dict], accumulation_steps: int) -> dict[str, torch.Tensor]:
    trainer = SupervisedTrainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=loader,
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
        loss_function=MultiTaskLoss({"t": 3}, aux_weights={}),
        prepare_batch=MultimodalPrepareBatch(["a", "b"], {"t": 3}),
        decollate=False,
        accumulation_steps=accumulation_steps,
    )
    trainer.run()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_gradient_accumulation_equals_one_large_batch():
    """Two batches of 2 with ``accumulation_steps=2`` (the bundle option) = one step on the batch of 4."""
    batch = _batch(4)
    halves = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    start = _m4oe(False, dropout=0.0).state_dict()
    large = _train(_m4oe(False, dropout=0.0), [batch], 1)
    accumulated = _train(_m4oe(True, dropout=0.0), halves, 2)
    moved = [k for k in start if not torch.equal(start[k], large[k])]
    assert len(moved) > 10
    for key in start:
        torch.testing.assert_close(accumulated[key], large[key], rtol=1e-4, atol=1e-6, msg=key)
    unaccumulated = _train(_m4oe(False, dropout=0.0), halves, 1)  # two steps: not the same
    assert not torch.allclose(unaccumulated["msoe.blocks.0.attn.qkv.weight"], large["msoe.blocks.0.attn.qkv.weight"])


@pytest.mark.parametrize("bundle", ["embed_m4oe", "gamma_m4oe"])
def test_bundle_options(bundle):
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
    assert parser["activation_checkpointing"] is False and parser["accumulation_steps"] == 1
    assert parser["train"]["trainer"]["accumulation_steps"] == "@accumulation_steps"
    parser["activation_checkpointing"] = True
    model = parser.get_parsed_content("network_def")
    assert all(m.activation_checkpointing for m in model.modules() if isinstance(m, TransformerBlock))
