import itertools
import math

import pytest
import torch

from medmoe.losses import (
    MultiTaskLoss,
    conditional_mutual_information,
    masked_cross_entropy,
    modality_expert_task_joint,
)
from medmoe.nets import ModelOutput


def brute_force_cmi(pi: torch.Tensor) -> float:
    """I(M;E|T) = sum_t P(t) sum_{m,e} P(m,e|t) log P(m,e|t) / (P(m|t) P(e|t)), element by element."""
    M, E, T = pi.shape
    total = 0.0
    for t in range(T):
        p_t = sum(pi[m, e, t].item() for m in range(M) for e in range(E))
        for m, e in itertools.product(range(M), range(E)):
            p_me = pi[m, e, t].item() / p_t
            p_m = sum(pi[m, k, t].item() for k in range(E)) / p_t
            p_e = sum(pi[k, e, t].item() for k in range(M)) / p_t
            if p_me > 0:
                total += p_t * p_me * math.log(p_me / (p_m * p_e))
    return total


def test_matches_brute_force_on_random_joint():
    torch.manual_seed(0)
    joint = torch.rand(3, 2, 4, 3)
    joint = joint / joint.sum((1, 2, 3), keepdim=True)
    expected = brute_force_cmi(joint.mean(0))
    assert conditional_mutual_information(joint).item() == pytest.approx(expected, rel=1e-5)


def test_zero_when_modality_and_expert_independent_given_task():
    p_t = torch.tensor([0.2, 0.5, 0.3])
    p_m_t = torch.softmax(torch.randn(3, 3), 0)  # M x T
    p_e_t = torch.softmax(torch.randn(5, 3), 0)  # E x T
    pi = p_m_t[:, None, :] * p_e_t[None, :, :] * p_t
    assert conditional_mutual_information(pi).abs().item() < 1e-6


def test_maximal_when_each_modality_owns_an_expert():
    pi = torch.zeros(2, 2, 1)
    pi[0, 0, 0] = pi[1, 1, 0] = 0.5
    assert conditional_mutual_information(pi).item() == pytest.approx(math.log(2), rel=1e-5)


def test_joint_from_combine_weights_sums_to_one():
    combine = torch.softmax(torch.randn(4, 6, 5 * 2), -1).view(4, 6, 5, 2)
    joint = modality_expert_task_joint(combine, num_modalities=3)
    assert joint.shape == (4, 3, 5, 2)
    torch.testing.assert_close(joint.sum((1, 2, 3)), torch.ones(4))
    with pytest.raises(ValueError, match="split evenly"):
        modality_expert_task_joint(combine, num_modalities=4)


def test_masked_cross_entropy_ignores_missing_labels():
    logits = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([0, -1, 2, -1])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    torch.testing.assert_close(masked_cross_entropy(logits, labels), expected)
    none = masked_cross_entropy(logits, torch.full((4,), -1))
    assert none.item() == 0.0
    none.backward()  # still differentiable


def test_multitask_loss_adds_weighted_auxiliary_terms():
    preds = ModelOutput({"a": torch.zeros(2, 2), "b": torch.zeros(2, 3)}, {"mutual_information": torch.tensor(0.5)})
    labels = {"a": torch.tensor([0, 1]), "b": torch.tensor([-1, 2])}
    loss = MultiTaskLoss(["a", "b"], aux_weights={"mutual_information": -0.1})
    expected = math.log(2) + math.log(3) - 0.1 * 0.5
    assert loss(preds, labels).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(KeyError, match="task 'c'"):
        MultiTaskLoss(["c"])(preds, labels)
    with pytest.raises(KeyError, match="auxiliary loss 'x'"):
        MultiTaskLoss(["a"], aux_weights={"x": 1.0})(preds, labels)
    with pytest.raises(ValueError, match="aux_losses"):  # a plain dict carries no auxiliary losses
        MultiTaskLoss(["a"], aux_weights={"mutual_information": 1.0})(dict(preds), labels)
