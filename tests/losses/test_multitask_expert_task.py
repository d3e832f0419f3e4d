"""MultiTaskLoss(expert_task_weight=...): every expert's own prediction supervised, on a real I2MoE."""

import pytest
import torch
import torch.nn.functional as F

from medmoe.losses import MultiTaskLoss
from medmoe.nets import create_model


def _i2moe():
    torch.manual_seed(0)
    return create_model(
        "i2moe",
        modalities=["a", "b"],
        tasks={"y": 3},
        in_features=4,
        hidden_size=8,
        backbone="early",
        identical_init=False,
    )


def test_expert_task_term_is_the_mean_of_the_experts_own_losses():
    model = _i2moe()
    batch = {"a": torch.randn(6, 4), "b": torch.randn(6, 4)}
    labels = {"y": torch.tensor([0, 1, 2, -1, 1, 0])}  # one label missing
    loss_fn = MultiTaskLoss({"y": 3}, aux_weights={"interaction": 1.0}, expert_task_weight=0.5)
    out = model(batch)
    total = loss_fn(out, labels)
    keep = labels["y"] != -1
    own = [F.cross_entropy(logits["y"][keep], labels["y"][keep]) for logits in out.interpret["expert_logits"].values()]
    expected_experts = torch.stack(own).mean()
    torch.testing.assert_close(loss_fn.last_terms["expert_task"], expected_experts.detach())
    task = F.cross_entropy(out["y"][keep], labels["y"][keep])
    expected = task + 0.5 * expected_experts + out.aux_losses["interaction"]
    torch.testing.assert_close(total, expected)
    # task weights apply to the experts' terms as to the mixture's
    weighted = MultiTaskLoss({"y": 3}, expert_task_weight=0.5, task_weights={"y": 3.0})
    weighted(out, labels)
    torch.testing.assert_close(weighted.last_terms["expert_task"], 3.0 * expected_experts.detach())
    # off by default: no term, the same total minus the experts' part
    plain = MultiTaskLoss({"y": 3}, aux_weights={"interaction": 1.0})
    assert "expert_task" not in (plain(out, labels), plain.last_terms)[1]


def test_an_expert_with_no_weight_still_learns_from_its_own_loss():
    # Without per-expert supervision the task gradient reaching an expert is scaled by its mixture weight;
    # with it, an expert the reweighting ignores is still trained on the label.
    model = _i2moe()
    with torch.no_grad():  # reweighting output: all weight on the first expert
        last = model.reweight[-1] if isinstance(model.reweight, torch.nn.Sequential) else model.reweight
        last.weight.zero_()
        last.bias.copy_(torch.tensor([50.0, 0.0, 0.0, 0.0]))
    batch = {"a": torch.randn(8, 4), "b": torch.randn(8, 4)}
    labels = {"y": torch.randint(0, 3, (8,))}
    norms = {}
    for weight in (0.0, 0.5):
        model.zero_grad(set_to_none=True)
        model.eval()  # clean pass only: the gradient comes from the task terms alone
        MultiTaskLoss({"y": 3}, expert_task_weight=weight)(model(batch), labels).backward()
        grads = [p.grad for n, p in model.named_parameters() if n.startswith("experts") and p.grad is not None]
        # parameters carry a leading expert axis; the norm of the last expert's slice (redundancy, weight ~0)
        norms[weight] = sum(float(g[-1].norm()) for g in grads if g.shape[0] == model.num_experts)
    assert norms[0.0] < 1e-6 < norms[0.5]


def test_errors():
    preds, labels = {"y": torch.zeros(2, 2)}, {"y": torch.tensor([0, 1])}
    with pytest.raises(ValueError, match="expert_logits"):  # a model output without experts (or a plain dict)
        MultiTaskLoss({"y": 2}, expert_task_weight=0.5)(preds, labels)
    with pytest.raises(ValueError, match="classification tasks only"):
        MultiTaskLoss({"y": 2}, segmentation_tasks=["cup"], expert_task_weight=0.5)
    MultiTaskLoss({"y": 2})(preds, labels)  # weight 0: no expert requirement
