"""benchmarks/soft_moe.py's ``kernels`` candidate computes exactly what the layer's autograd step computes."""

from __future__ import annotations

import os

import pytest
import torch

from medmoe.layers import SoftMoE


def test_kernel_step_matches_the_layer_forward_and_backward(load_benchmark):
    bench = load_benchmark("soft_moe")
    torch.manual_seed(0)
    moe = SoftMoE(16, 32, num_experts=4, num_slots=2)
    x = torch.randn(3, 10, 16, requires_grad=True)
    grad_y = torch.randn(3, 10, 16)

    y, grad_x, _, grad_w1, grad_b1, grad_w2, grad_b2 = bench.make_kernel_step(moe, x, grad_y)()
    assert x.grad is None and all(p.grad is None for p in moe.parameters())  # no autograd bookkeeping

    expected = moe._forward_autograd(x.unsqueeze(0))[0]
    expected.backward(grad_y)
    torch.testing.assert_close(y, expected.detach())
    torch.testing.assert_close(grad_x, x.grad)
    ex = moe.experts
    for got, param in ((grad_w1, ex.w1), (grad_b1, ex.b1), (grad_w2, ex.w2), (grad_b2, ex.b2)):
        torch.testing.assert_close(got, param.grad)


def test_kernel_step_rejects_grouped_layers(load_benchmark):
    bench = load_benchmark("soft_moe")
    moe = SoftMoE(8, 16, num_experts=2, num_groups=2)
    with pytest.raises(ValueError, match="one group"):
        bench.make_kernel_step(moe, torch.randn(2, 2, 4, 8), torch.randn(2, 2, 4, 8))


def test_ours_bmm_runs_with_the_native_kernel_off_and_restores_the_setting(load_benchmark, monkeypatch, native_kernels):
    bench = load_benchmark("soft_moe")
    monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", "on")
    seen = []
    bench.with_native_kernels("off", lambda: seen.append(os.environ["MEDMOE_NATIVE_KERNELS"]))()
    assert seen == ["off"] and os.environ["MEDMOE_NATIVE_KERNELS"] == "on"

    def fail() -> None:
        raise RuntimeError("step failed")

    monkeypatch.delenv("MEDMOE_NATIVE_KERNELS")
    with pytest.raises(RuntimeError, match="step failed"):
        bench.with_native_kernels("off", fail)()
    assert "MEDMOE_NATIVE_KERNELS" not in os.environ
    status = bench.native_kernel_status()
    assert status["mode"] == "auto" and status["available"] and status["error"] is None and status["max_rows"] == 8
