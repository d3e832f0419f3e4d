"""The native Soft MoE routing (medmoe/layers/native/soft_routing.c): values against PyTorch, when it is used, bad
inputs, the same gradient bit for bit at any thread count."""

import pytest
import torch

from medmoe.layers import SoftMoE, soft_routing
from medmoe.layers.experts import to_batches, to_experts
from medmoe.layers.native import routing as native_routing
from medmoe.layers.native.routing import combine_forward, routing_forward, use_native_routing
from medmoe.layers.soft_moe import NORM_EPS

pytestmark = pytest.mark.usefixtures("native_kernels", "native_kernels_auto")  # skipped where no C compiler is found


@pytest.fixture
def native_kernels_auto(monkeypatch):
    monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", "auto")


def _width() -> int:
    return native_routing.vector_width()


@pytest.mark.parametrize(("groups", "batch", "tokens", "experts", "slots"), [(1, 3, 13, 2, 1), (2, 2, 5, 1, 2)])
def test_routing_forward_matches_pytorch(groups, batch, tokens, experts, slots):
    """Every output of the forward kernel against ``soft_routing`` and the dispatched slots computed with matmuls."""
    torch.manual_seed(0)
    w = _width()
    e, s, d = experts * w // slots, slots, 2 * w
    p = e * s
    x = torch.randn(groups, batch, tokens, d)
    x[0, 0, 3] = 0.0  # a zero token: its norm is clamped
    phi, scale = torch.randn(groups, d, p) * d**-0.5, torch.tensor([1.0, 7.5][:groups])
    phi_n = torch.nn.functional.normalize(phi, dim=1, eps=NORM_EPS) * scale.view(-1, 1, 1)
    inv_norm, logits, dispatch, combine, slots_out = routing_forward(x, phi_n, e, s, NORM_EPS)
    ref_dispatch, ref_combine = soft_routing(x, phi, scale)
    torch.testing.assert_close(dispatch, ref_dispatch, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(combine, ref_combine, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(inv_norm, 1 / x.norm(dim=-1).clamp_min(NORM_EPS))
    torch.testing.assert_close(logits.softmax(-1), ref_combine, rtol=1e-5, atol=1e-6)
    ref_slots = torch.matmul(ref_dispatch.transpose(2, 3), x).view(groups * batch, p, d)
    torch.testing.assert_close(slots_out, to_experts(ref_slots, groups, e, s), rtol=1e-5, atol=1e-5)


def test_combine_forward_matches_bmm():
    torch.manual_seed(0)
    w = _width()
    g, b, m, e, s, d = 2, 3, 7, w // 2, 2, w
    combine, out = torch.rand(g, b, m, e * s), torch.randn(g * e, b * s, d)
    y = combine_forward(combine, out, e, s)
    ref = torch.bmm(combine.view(g * b, m, e * s), to_batches(out, g, e, s)).view(g, b, m, d)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("batch", "experts", "slots", "groups", "scale"), [(4, 1, 1, 1, 1.0), (3, 1, 2, 2, 1.0), (2, 2, 1, 1, 30.0)]
)
def test_soft_moe_gradients_with_native_routing_match_pytorch(monkeypatch, batch, experts, slots, groups, scale):
    """The whole layer (forward, every gradient) with the native routing against ``MEDMOE_NATIVE_KERNELS=off``."""
    w = _width()
    e = experts * w // slots
    results = {}
    for mode in ("off", "auto"):
        monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", mode)
        torch.manual_seed(1)
        moe = SoftMoE(2 * w, 24, num_experts=e, num_slots=slots, num_groups=groups)
        with torch.no_grad():
            moe.router.scale.fill_(scale)  # a large scale: peaked softmaxes
        x = torch.randn(groups, batch, 11, 2 * w)
        x[0, 0, 2] = 0.0  # clamped norm: no gradient through it
        x.requires_grad_(True)
        assert use_native_routing(x, e * slots) == (mode == "auto")
        y = moe(x)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        results[mode] = {"y": y.detach(), "x": x.grad, **{n: p.grad for n, p in moe.named_parameters()}}
    for name, reference in results["off"].items():
        torch.testing.assert_close(results["auto"][name], reference, rtol=1e-4, atol=1e-5, msg=name)


def test_used_only_for_whole_vectors_of_float32_cpu_values(monkeypatch):
    w = _width()
    x = torch.zeros(1, 2, 3, 2 * w)
    assert use_native_routing(x, w)
    assert not use_native_routing(x, w + 1)  # slots not a multiple of the vector width
    assert not use_native_routing(torch.zeros(1, 2, 3, w + 2), w)  # width neither
    assert not use_native_routing(x.double(), w)
    monkeypatch.setenv("MEDMOE_NATIVE_KERNELS", "off")
    assert not use_native_routing(x, w)


def test_bad_inputs_are_rejected():
    w = _width()
    x, phi = torch.randn(1, 2, 3, w), torch.randn(1, w, w)
    with pytest.raises(ValueError, match="phi must hold"):
        routing_forward(x, phi[:, :, :-1].contiguous(), w, 1, NORM_EPS)
    with pytest.raises(ValueError, match="contiguous float32 CPU"):
        routing_forward(x.transpose(2, 3), phi, w, 1, NORM_EPS)
    with pytest.raises(ValueError, match="contiguous float32 CPU"):
        combine_forward(torch.rand(1, 2, 3, w).double(), torch.randn(w, 2, w), w, 1)


def test_the_phi_gradient_is_the_same_bit_for_bit_at_every_thread_count():
    """Threads sum their samples' parts of grad_phi in a fixed order: repeated runs give identical bits at 1, 2, 3, 4
    and 8 threads (the partition, and so the rounding, differs between thread counts: those agree to rounding)."""
    w = _width()
    torch.manual_seed(0)
    moe = SoftMoE(2 * w, 16, num_experts=2 * w)  # width and slots in whole vectors: native routing
    x, grad_y = torch.randn(24, 9, 2 * w), torch.randn(24, 9, 2 * w)
    assert use_native_routing(x.unsqueeze(0), moe.num_experts)

    def phi_grad() -> torch.Tensor:
        moe.zero_grad(set_to_none=True)
        moe(x).backward(grad_y)
        return moe.router.phi.grad.clone()

    threads_before, first = torch.get_num_threads(), {}
    try:
        for threads in (1, 2, 3, 4, 8):
            torch.set_num_threads(threads)
            runs = [phi_grad() for _ in range(6)]
            assert all(torch.equal(run, runs[0]) for run in runs[1:]), f"{threads} threads: runs differ"
            first[threads] = runs[0]
    finally:
        torch.set_num_threads(threads_before)
    for threads, grad in first.items():
        torch.testing.assert_close(grad, first[1], rtol=1e-5, atol=1e-6, msg=f"{threads} threads")
