import pytest
import torch
import torch.nn.functional as F

from medmoe.layers import SoftMoE, TaskSoftMoE, soft_routing


def reference_soft_moe(moe: SoftMoE, x: torch.Tensor) -> torch.Tensor:
    """Unbatched, loop-over-experts Soft MoE written straight from Puigcerver et al., Alg. 1 (one group)."""
    phi = F.normalize(moe.router.phi[0], dim=0) * moe.router.scale[0]  # d (e s)
    logits = F.normalize(x, dim=-1) @ phi  # b m (e s)
    dispatch, combine = logits.softmax(1), logits.softmax(2)
    slots = torch.einsum("bmp,bmd->bpd", dispatch, x)
    e, s = moe.num_experts, moe.num_slots
    outs = []
    for j in range(e):
        w1, b1, w2, b2 = moe.experts.w1[j], moe.experts.b1[j], moe.experts.w2[j], moe.experts.b2[j]
        outs.append(F.gelu(slots[:, j * s : (j + 1) * s] @ w1 + b1) @ w2 + b2)
    return torch.einsum("bmp,bpd->bmd", combine, torch.cat(outs, 1))


@pytest.mark.parametrize("experts,slots", [(1, 1), (4, 2), (8, 1)])
def test_matches_loop_reference(experts, slots):
    torch.manual_seed(0)
    moe = SoftMoE(hidden_size=16, mlp_dim=24, num_experts=experts, num_slots=slots).eval()
    x = torch.randn(3, 10, 16)
    torch.testing.assert_close(moe(x), reference_soft_moe(moe, x), rtol=1e-5, atol=1e-5)


def test_dispatch_and_combine_are_normalised():
    torch.manual_seed(0)
    x, phi, scale = torch.randn(2, 3, 7, 8), torch.randn(2, 8, 12), torch.tensor([1.0, 3.0])
    dispatch, combine = soft_routing(x, phi, scale)
    assert dispatch.shape == combine.shape == (2, 3, 7, 12)
    torch.testing.assert_close(dispatch.sum(2), torch.ones(2, 3, 12))  # each slot: convex mix of tokens
    torch.testing.assert_close(combine.sum(3), torch.ones(2, 3, 7))  # each token: convex mix of slots
    assert (dispatch >= 0).all() and (combine >= 0).all()


def test_logits_use_normalised_inputs_but_slots_get_raw_tokens():
    torch.manual_seed(0)
    moe = SoftMoE(hidden_size=8, mlp_dim=8, num_experts=2).eval()
    x = torch.randn(1, 5, 8)
    d1, c1 = soft_routing(x.unsqueeze(0), moe.router.phi, moe.router.scale)
    d2, c2 = soft_routing(3.0 * x.unsqueeze(0), moe.router.phi, moe.router.scale)
    torch.testing.assert_close(d1, d2)  # routing is scale-invariant in x ...
    assert not torch.allclose(moe(x), moe(3.0 * x))  # ... but the experts see the raw tokens


def test_token_permutation_equivariance():
    torch.manual_seed(0)
    moe = SoftMoE(hidden_size=16, mlp_dim=32, num_experts=4, num_slots=2).eval()
    x = torch.randn(2, 9, 16)
    perm = torch.randperm(9)
    torch.testing.assert_close(moe(x)[:, perm], moe(x[:, perm]), rtol=1e-5, atol=1e-5)


def test_groups_equal_independent_layers():
    torch.manual_seed(0)
    grouped = SoftMoE(hidden_size=8, mlp_dim=16, num_experts=3, num_slots=2, num_groups=2).eval()
    x = torch.randn(2, 4, 6, 8)
    for g in range(2):
        single = SoftMoE(hidden_size=8, mlp_dim=16, num_experts=3, num_slots=2).eval()
        single.router.phi.data = grouped.router.phi.data[g : g + 1].clone()
        single.router.scale.data = grouped.router.scale.data[g : g + 1].clone()
        for name in ("w1", "b1", "w2", "b2"):
            getattr(single.experts, name).data = getattr(grouped.experts, name).data[g * 3 : (g + 1) * 3].clone()
        torch.testing.assert_close(grouped(x)[g], single(x[g]), rtol=1e-5, atol=1e-5)


def test_task_soft_moe_combines_jointly_over_experts_and_tasks():
    torch.manual_seed(0)
    mtoe = TaskSoftMoE(hidden_size=8, mlp_dim=16, num_experts=3, num_tasks=2).eval()
    x = torch.randn(2, 5, 8)
    y, combine = mtoe(x)
    assert y.shape == (2, 2, 5, 8) and combine.shape == (2, 5, 3, 2)
    torch.testing.assert_close(combine.sum((2, 3)), torch.ones(2, 5))
    # task k uses only its own slice: zeroing task 1's embedding leaves task 0 unchanged
    before = y[:, 0].clone()
    with torch.no_grad():
        mtoe.task_embedding[1].zero_()
    torch.testing.assert_close(mtoe(x)[0][:, 0], before)


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="num_experts"):
        SoftMoE(hidden_size=8, mlp_dim=8, num_experts=0)
    with pytest.raises(ValueError, match="expected tokens"):
        SoftMoE(hidden_size=8, mlp_dim=8, num_groups=2)(torch.randn(3, 5, 8))
    with pytest.raises(ValueError, match="batch, tokens, dim"):
        TaskSoftMoE(8, 8, 2, 2)(torch.randn(5, 8))


def reference_grouped_soft_moe(moe: SoftMoE, x: torch.Tensor) -> torch.Tensor:
    """Straight from the semantics (METHODS.md), loops over groups and experts: ``(g, b, m, d) -> (g, b, m, d)``."""
    e, s = moe.num_experts, moe.num_slots
    ys = []
    for g in range(moe.num_groups):
        phi = F.normalize(moe.router.phi[g], dim=0, eps=1e-6) * moe.router.scale[g]  # d (e s)
        logits = F.normalize(x[g], dim=-1, eps=1e-6) @ phi  # b m (e s)
        dispatch, combine = logits.softmax(1), logits.softmax(2)  # over tokens / over all (expert, slot)
        slots = torch.einsum("bmp,bmd->bpd", dispatch, x[g])  # raw tokens
        outs = []
        for j in range(g * e, (g + 1) * e):
            w1, b1, w2, b2 = moe.experts.w1[j], moe.experts.b1[j], moe.experts.w2[j], moe.experts.b2[j]
            outs.append(F.gelu(slots[:, (j - g * e) * s : (j - g * e + 1) * s] @ w1 + b1) @ w2 + b2)
        ys.append(torch.einsum("bmp,bpd->bmd", combine, torch.cat(outs, 1)))
    return torch.stack(ys)


def _randomised(moe: SoftMoE) -> SoftMoE:
    with torch.no_grad():  # non-trivial scale and biases so every term of the backward is exercised
        moe.router.scale.uniform_(0.5, 3.0)
        moe.experts.b1.normal_()
        moe.experts.b2.normal_()
    return moe


@pytest.mark.parametrize("groups,experts,slots", [(1, 4, 1), (1, 3, 2), (2, 4, 1), (3, 2, 3)])
def test_optimised_layer_matches_reference_values_and_gradients(groups, experts, slots):
    torch.manual_seed(0)
    moe = _randomised(SoftMoE(hidden_size=16, mlp_dim=24, num_experts=experts, num_slots=slots, num_groups=groups))
    x = torch.randn(groups, 3, 10, 16, requires_grad=True)
    grad_y = torch.randn(groups, 3, 10, 16)
    params = [x, *moe.parameters()]
    y = moe(x if groups > 1 else x[0])
    y = y if groups > 1 else y.unsqueeze(0)
    grads = torch.autograd.grad(y, params, grad_y)
    y_ref = reference_grouped_soft_moe(moe, x)
    grads_ref = torch.autograd.grad(y_ref, params, grad_y)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)


def test_optimised_backward_gradcheck():
    torch.manual_seed(0)
    moe = _randomised(SoftMoE(hidden_size=4, mlp_dim=6, num_experts=2, num_slots=2, num_groups=2)).double()
    x = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *_: moe(x), (x, *moe.parameters()), fast_mode=True)


@pytest.mark.parametrize(
    ("groups", "batch", "width", "experts", "slots"),
    [(1, 2, 8, 3, 1), (2, 3, 16, 5, 2), (1, 4, 32, 16, 1), (1, 12, 32, 16, 1)],  # the last two: native routing
)
def test_dropout_in_the_optimised_path_matches_autograd(groups, batch, width, experts, slots):
    """Training with dropout runs the optimised path with the masks nn.Dropout would draw: same values and gradients
    as the plain autograd path for the same random state (here with an expanded upstream gradient, from sum())."""
    results = []
    for forward in ("optimised", "autograd"):
        torch.manual_seed(0)
        moe = _randomised(SoftMoE(width, 24, num_experts=experts, num_slots=slots, num_groups=groups, dropout_rate=0.3))
        x = torch.randn(groups, batch, 7, width, requires_grad=True)
        torch.manual_seed(1)
        y = moe(x) if forward == "optimised" else moe._forward_autograd(x)
        y.sum().backward()
        results.append([y.detach(), x.grad, *(p.grad for p in moe.parameters())])
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_dropout_drops_only_in_training():
    torch.manual_seed(0)
    moe = SoftMoE(hidden_size=8, mlp_dim=16, num_experts=3, dropout_rate=0.5)
    x = torch.randn(2, 6, 8)
    first, second = moe(x), moe(x)
    assert not torch.allclose(first, second)  # new masks every call
    moe.eval()
    reference = SoftMoE(hidden_size=8, mlp_dim=16, num_experts=3, dropout_rate=0.0)
    reference.load_state_dict(moe.state_dict())
    torch.testing.assert_close(moe(x), reference(x))


def test_torch_func_transforms_take_the_autograd_path():
    torch.manual_seed(0)
    moe = SoftMoE(hidden_size=8, mlp_dim=16, num_experts=2).eval()
    x = torch.randn(3, 2, 5, 8)
    torch.testing.assert_close(torch.vmap(moe)(x), torch.stack([moe(xi) for xi in x]))
