"""The native expert layers (medmoe/layers/native/expert_mlp.c): values against PyTorch, when they are used."""

import pytest
import torch

from medmoe.layers import SoftMoE
from medmoe.layers.native import experts as native_experts
from medmoe.layers.native.experts import (
    linear_backward,
    linear_forward,
    use_native,
    use_native_forward,
)

pytestmark = pytest.mark.usefixtures("native_kernels")  # skipped where no C compiler is found


def _strided(shape: tuple[int, int, int]) -> torch.Tensor:
    """``(n, r, c)`` as the fused layer passes it: a transposed view of ``(r, n, c)`` (rows are samples)."""
    n, r, c = shape
    return torch.randn(r, n, c).transpose(0, 1)


@pytest.mark.parametrize(
    ("n", "r", "k", "big_n"),
    [(3, 8, 40, 64), (2, 1, 5, 7), (4, 7, 33, 130), (1, 5, 64, 16), (2, 3, 17, 200)],
)
def test_linear_backward_matches_bmm(n, r, k, big_n):
    torch.manual_seed(0)
    g, x, w = _strided((n, r, big_n)), _strided((n, r, k)), torch.randn(n, k, big_n)
    gx = torch.full((r, n, k), float("nan")).transpose(0, 1)  # strided output, every element must be written
    gw, gb = torch.full((n, k, big_n), float("nan")), torch.full((n, 1, big_n), float("nan"))
    linear_backward(g, x, w, gx, gw, gb)
    torch.testing.assert_close(gx, torch.bmm(g, w.transpose(1, 2)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, torch.bmm(x.transpose(1, 2), g), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gb, g.sum(1, keepdim=True), rtol=1e-5, atol=1e-5)


def test_linear_backward_rejects_bad_inputs():
    g, x, w = torch.randn(2, 3, 8), torch.randn(2, 3, 4), torch.randn(2, 4, 8)
    out = (torch.empty(2, 3, 4), torch.empty(2, 4, 8), torch.empty(2, 1, 8))
    with pytest.raises(ValueError, match="float32 CPU"):
        linear_backward(g.double(), x, w, *out)
    with pytest.raises(ValueError, match="do not fit"):
        linear_backward(torch.randn(2, 3, 9), x, w, *out)
    with pytest.raises(ValueError, match="contiguous features"):
        linear_backward(g, x, w, torch.empty(2, 4, 3).transpose(1, 2), *out[1:])
    with pytest.raises(ValueError, match="contiguous"):
        linear_backward(g, x, w.transpose(1, 2).contiguous().transpose(1, 2), *out)


@pytest.mark.parametrize(("batch", "experts", "slots", "groups"), [(8, 6, 1, 1), (3, 5, 2, 2), (2, 4, 3, 1)])
def test_soft_moe_gradients_do_not_depend_on_the_kernels(monkeypatch, batch, experts, slots, groups):
    grads = {}
    for mode in ("off", "on"):
        monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", mode)
        torch.manual_seed(1)
        moe = SoftMoE(24, 37, num_experts=experts, num_slots=slots, num_groups=groups)
        x = torch.randn(groups, batch, 7, 24) if groups > 1 else torch.randn(batch, 7, 24)
        x.requires_grad_(True)
        assert use_native(x, batch * slots) == (mode == "on")
        y = moe(x)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        grads[mode] = {"x": x.grad, **{name: p.grad for name, p in moe.named_parameters()}}
    for name, reference in grads["off"].items():
        torch.testing.assert_close(grads["on"][name], reference, rtol=1e-5, atol=1e-6, msg=name)


def test_use_native_only_for_few_float32_cpu_rows(monkeypatch):
    monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", "auto")
    x = torch.zeros(2, 3)
    assert use_native(x, native_experts.MAX_NATIVE_ROWS)
    assert not use_native(x, native_experts.MAX_NATIVE_ROWS + 1)
    assert not use_native(x.double(), 4)
    monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", "off")
    assert not use_native(x, 4)
    monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", "sometimes")
    with pytest.raises(ValueError, match="auto, on or off"):
        use_native(x, 4)


@pytest.mark.parametrize(("n", "r", "k", "big_n"), [(3, 8, 40, 64), (2, 1, 5, 7), (4, 7, 70, 130), (2, 3, 33, 200)])
def test_linear_forward_matches_baddbmm(n, r, k, big_n):
    torch.manual_seed(0)
    x, w, b = _strided((n, r, k)), torch.randn(n, k, big_n), torch.randn(n, 1, big_n)
    out = torch.full((r, n, big_n), float("nan")).transpose(0, 1)  # strided, every element must be written
    assert linear_forward(x, w, b, out) is out
    torch.testing.assert_close(out, torch.baddbmm(b, x, w), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="do not fit"):
        linear_forward(x, w, torch.randn(n, 1, big_n + 1), out)


def test_the_forward_kernel_only_for_weights_beyond_cache(monkeypatch):
    monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", "auto")
    x, rows = torch.zeros(2, 3), 4
    small = torch.zeros(native_experts.NATIVE_FORWARD_MIN_BYTES // 4 - 1)
    assert not use_native_forward(x, rows, small)
    assert use_native_forward(x, rows, torch.zeros(native_experts.NATIVE_FORWARD_MIN_BYTES // 4))
    assert not use_native_forward(x, native_experts.MAX_NATIVE_ROWS + 1, torch.zeros(2**23))


def test_soft_moe_with_both_native_directions_matches_pytorch(monkeypatch):
    monkeypatch.setattr(native_experts, "NATIVE_FORWARD_MIN_BYTES", 0)  # the forward kernel for small weights too
    results = {}
    for mode in ("off", "on"):
        monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", mode)
        torch.manual_seed(1)
        moe = SoftMoE(40, 70, num_experts=3, num_slots=2)
        x = torch.randn(3, 9, 40, requires_grad=True)
        y = moe(x)
        y.pow(2).sum().backward()
        results[mode] = {"y": y.detach(), "x": x.grad, **{name: p.grad for name, p in moe.named_parameters()}}
    for name, reference in results["off"].items():
        torch.testing.assert_close(results["on"][name], reference, rtol=1e-5, atol=1e-5, msg=name)
