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
    y = mtoe(x)
    assert y.shape == (2, 2, 5, 8)
    combine = mtoe.last_combine
    torch.testing.assert_close(combine.sum((2, 3)), torch.ones(2, 5))
    # task k uses only its own slice: zeroing task 1's embedding leaves task 0 unchanged
    before = y[:, 0].clone()
    with torch.no_grad():
        mtoe.task_embedding[1].zero_()
    torch.testing.assert_close(mtoe(x)[:, 0], before)


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="num_experts"):
        SoftMoE(hidden_size=8, mlp_dim=8, num_experts=0)
    with pytest.raises(ValueError, match="expected tokens"):
        SoftMoE(hidden_size=8, mlp_dim=8, num_groups=2)(torch.randn(3, 5, 8))
    with pytest.raises(ValueError, match="batch, tokens, dim"):
        TaskSoftMoE(8, 8, 2, 2)(torch.randn(5, 8))
