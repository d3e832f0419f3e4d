import pytest
import torch
import torch.nn.functional as F

from medmoe.losses import PerExpertLoss
from medmoe.nets import ModelOutput


def output(logits, presence=None, prediction=None) -> ModelOutput:
    """A model output carrying fixed expert logits (and presence, as I2M2's; I2MoE's has none)."""
    interpret = {"expert_logits": logits, **({"expert_presence": presence} if presence is not None else {})}
    return ModelOutput(prediction or {}, interpret=interpret)


def test_sums_each_experts_cross_entropy_over_the_samples_it_saw():
    a = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    j = torch.tensor([[0.5, 0.0], [0.0, 3.0], [1.0, -1.0]])
    out = output(
        {"mag": {"acl": a}, "joint": {"acl": j}},
        {"mag": torch.tensor([True, False, True]), "joint": torch.tensor([True, True, True])},
        {"acl": torch.zeros(3, 2)},
    )
    labels = {"acl": torch.tensor([0, 1, -1])}  # third label missing
    loss = PerExpertLoss(["acl"])(out, labels)
    expected = F.cross_entropy(a[:1], torch.tensor([0])) + F.cross_entropy(j[:2], torch.tensor([0, 1]))
    torch.testing.assert_close(loss, expected)
    only_joint = PerExpertLoss(["acl"], experts=["joint"])(out, labels)
    torch.testing.assert_close(only_joint, F.cross_entropy(j[:2], torch.tensor([0, 1])))


def test_errors():
    with pytest.raises(ValueError, match="expert_logits"):
        PerExpertLoss(["acl"])({"acl": torch.zeros(1, 2)}, {"acl": torch.tensor([0])})  # a plain dict
    out = output({"mag": {"acl": torch.zeros(1, 2)}}, {"mag": torch.tensor([True])})
    with pytest.raises(KeyError, match="unknown expert"):
        PerExpertLoss(["acl"], experts=["phase"])(out, {"acl": torch.tensor([0])})


def test_mean_over_experts_without_presence_counts_every_sample():
    a = torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    b = torch.tensor([[0.0, 0.0, 3.0], [1.0, -1.0, 0.0]])
    out = output({"unique_m1": {"y": a}, "synergy": {"y": b}}, prediction={"y": torch.zeros(2, 3)})
    labels = {"y": torch.tensor([2, 1])}
    expected = (F.cross_entropy(a, labels["y"]) + F.cross_entropy(b, labels["y"])) / 2
    torch.testing.assert_close(PerExpertLoss(["y"], reduction="mean")(out, labels), expected)
    torch.testing.assert_close(PerExpertLoss(["y"])(out, labels), 2 * expected)
    with pytest.raises(ValueError, match="reduction"):
        PerExpertLoss(["y"], reduction="max")


def test_per_expert_loss_trains_each_i2m2_expert_from_its_own_forward():
    from medmoe.nets import create_model

    torch.manual_seed(0)
    model = create_model("i2m2", modalities=["m", "p"], tasks={"acl": 2}, base_channels=4, blocks=(1, 1, 1, 1),
                         norm_groups=2)  # fmt: skip
    batch = {"m": torch.rand(2, 1, 16, 16), "p": torch.rand(2, 1, 16, 16)}
    first = model(batch)
    model({"m": torch.rand(3, 1, 16, 16), "p": torch.rand(3, 1, 16, 16)})  # a second forward before the loss
    loss = PerExpertLoss(["acl"])(first, {"acl": torch.tensor([0, 1])})  # the batch of 2, not the last one of 3
    loss.backward()
    assert model.joint_head.weight.grad.abs().sum() > 0 and model.unimodal_weight.grad.abs().sum() > 0
