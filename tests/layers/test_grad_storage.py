"""Warm gradient buffers of the fused Soft MoE backward: reused only when nobody else holds them."""

import copy

import torch

from medmoe.layers import SoftMoE
from medmoe.layers.grad_storage import GradientStorage


def _moe() -> SoftMoE:
    torch.manual_seed(0)
    return SoftMoE(hidden_size=8, mlp_dim=16, num_experts=3, num_slots=2)


def _grads(moe: SoftMoE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    moe(x).pow(2).sum().backward()
    return {n: p.grad.clone() for n, p in moe.named_parameters()}


def test_reused_buffer_gives_the_same_gradients_as_fresh_memory():
    x = torch.randn(2, 5, 8)
    moe = _moe()
    reference = _grads(moe, x)
    first_ptr = moe.experts.w1.grad.data_ptr()
    for _ in range(3):
        moe.zero_grad(set_to_none=True)
        grads = _grads(moe, x)
        assert moe.experts.w1.grad.data_ptr() == first_ptr  # warm memory reused
        for name, g in grads.items():
            torch.testing.assert_close(g, reference[name])


def test_accumulation_without_zero_grad_is_not_corrupted():
    x, x2 = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    moe = _moe()
    second = _grads(moe, x2)
    moe.zero_grad(set_to_none=True)
    first = _grads(moe, x)
    moe(x2).pow(2).sum().backward()  # .grad still alive: the buffer must not be overwritten
    for name, p in moe.named_parameters():
        torch.testing.assert_close(p.grad, first[name] + second[name])


def test_a_held_gradient_keeps_its_values():
    x = torch.randn(2, 5, 8)
    moe = _moe()
    moe(x).pow(2).sum().backward()
    held = moe.experts.w2.grad
    snapshot = held.clone()
    moe.zero_grad(set_to_none=True)
    moe(2 * x).pow(2).sum().backward()
    torch.testing.assert_close(held, snapshot)
    assert held.data_ptr() != moe.experts.w2.grad.data_ptr()


def test_storage_survives_copies_and_state_dicts():
    moe = _moe()
    moe(torch.randn(2, 5, 8)).sum().backward()
    assert set(moe.state_dict()) == {n for n, _ in moe.named_parameters()}
    clone = copy.deepcopy(moe)
    assert isinstance(clone.experts.grad_storage, GradientStorage)
    clone.zero_grad(set_to_none=True)
    clone(torch.randn(2, 5, 8)).sum().backward()
    assert clone.experts.w1.grad.data_ptr() != moe.experts.w1.grad.data_ptr()


def test_take_reallocates_on_a_new_shape():
    storage = GradientStorage()
    a = storage.take("w", (2, 3), torch.float32, torch.device("cpu"))
    del a
    b = storage.take("w", (4, 3), torch.float32, torch.device("cpu"))
    assert b.shape == (4, 3)
