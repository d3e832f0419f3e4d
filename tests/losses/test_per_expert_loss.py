import pytest
import torch
import torch.nn.functional as F

from medmoe.losses import PerExpertLoss


class TwoExperts(torch.nn.Module):
    """Stand-in exposing fixed expert logits and presence, as I2M2 does after a forward pass."""

    def __init__(self, logits, presence):
        super().__init__()
        self._logits, self._presence = logits, presence

    def expert_logits(self):
        return self._logits

    def expert_presence(self):
        return self._presence


def test_sums_each_experts_cross_entropy_over_the_samples_it_saw():
    a = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    j = torch.tensor([[0.5, 0.0], [0.0, 3.0], [1.0, -1.0]])
    net = TwoExperts(
        {"mag": {"acl": a}, "joint": {"acl": j}},
        {"mag": torch.tensor([True, False, True]), "joint": torch.tensor([True, True, True])},
    )
    labels = {"acl": torch.tensor([0, 1, -1])}  # third label missing
    loss = PerExpertLoss(["acl"], net)({"acl": torch.zeros(3, 2)}, labels)
    expected = F.cross_entropy(a[:1], torch.tensor([0])) + F.cross_entropy(j[:2], torch.tensor([0, 1]))
    torch.testing.assert_close(loss, expected)
    only_joint = PerExpertLoss(["acl"], net, experts=["joint"])({"acl": torch.zeros(3, 2)}, labels)
    torch.testing.assert_close(only_joint, F.cross_entropy(j[:2], torch.tensor([0, 1])))


def test_errors():
    with pytest.raises(ValueError, match="Linear has no expert_logits"):
        PerExpertLoss(["acl"], torch.nn.Linear(2, 2))
    net = TwoExperts({"mag": {"acl": torch.zeros(1, 2)}}, {"mag": torch.tensor([True])})
    with pytest.raises(KeyError, match="unknown expert"):
        PerExpertLoss(["acl"], net, experts=["phase"])({"acl": torch.zeros(1, 2)}, {"acl": torch.tensor([0])})


class AllSeeing(torch.nn.Module):
    """Stand-in with expert logits but no expert_presence(), as I2MoE (every expert sees every modality)."""

    def __init__(self, logits):
        super().__init__()
        self._logits = logits

    def expert_logits(self):
        return self._logits


def test_mean_over_experts_without_presence_counts_every_sample():
    a = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    b = torch.tensor([[0.0, 0.0, 3.0], [1.0, -1.0, 0.0]])
    net = AllSeeing({"unique_m1": {"y": a}, "synergy": {"y": b}})
    labels = {"y": torch.tensor([2, 1])}
    expected = (F.cross_entropy(a, labels["y"]) + F.cross_entropy(b, labels["y"])) / 2
    loss = PerExpertLoss(["y"], net, reduction="mean")({"y": torch.zeros(2, 3)}, labels)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(PerExpertLoss(["y"], net)({"y": torch.zeros(2, 3)}, labels), 2 * expected)
    with pytest.raises(ValueError, match="reduction"):
        PerExpertLoss(["y"], net, reduction="max")
