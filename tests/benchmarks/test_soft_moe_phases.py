"""benchmarks/soft_moe_phases.py times the phases of the layer it claims to: together they compute the layer's step."""

from __future__ import annotations

import pytest
import torch

from medmoe.layers import SoftMoE
from medmoe.layers.native import routing as native_routing


def test_phases_compute_the_layer_forward_and_backward(load_benchmark, native_kernels):
    bench = load_benchmark("soft_moe_phases")
    width = native_routing.vector_width()
    torch.manual_seed(0)
    moe = SoftMoE(width, 2 * width, num_experts=width)  # slots and width in whole vectors: native routing
    x = torch.randn(3, 10, width, requires_grad=True)
    grad_y = torch.randn(3, 10, width)
    phases, state = bench.make_phases(moe, x, grad_y)
    assert tuple(phases) == bench.PHASES
    for fn in phases.values():
        fn()

    expected = moe._forward_autograd(x.unsqueeze(0))[0]
    expected.backward(grad_y)
    torch.testing.assert_close(state["y"][0], expected.detach())
    torch.testing.assert_close(state["grad_x"][0], x.grad)
    ex = moe.experts
    for got, param in zip(state["grad_experts"], (ex.w1, ex.b1, ex.w2, ex.b2), strict=True):
        torch.testing.assert_close(got, param.grad)


def test_phase_flops_add_up_to_the_cost_model(load_benchmark):
    bench = load_benchmark("soft_moe_phases")
    b, m, d, h, e = 3, 7, 16, 40, 5
    layer = bench.soft_moe_bench.soft_moe_cost(b, m, d, h, e, 1)
    assert sum(bench.phase_flops(b, m, d, h, e).values()) == layer["flops"]


def test_phases_refuse_layers_they_do_not_mirror(load_benchmark):
    bench = load_benchmark("soft_moe_phases")
    with pytest.raises(ValueError, match="one group and one slot"):
        bench.make_phases(SoftMoE(16, 32, num_experts=16, num_slots=2), torch.randn(2, 4, 16), torch.randn(2, 4, 16))
