"""Per-expert loss for models whose output carries their experts' predictions (I2M2's unimodal pretraining,
I2MoE's per-expert supervision through ``MultiTaskLoss(expert_task_weight=...)``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .masked import masked_cross_entropy

__all__ = ["PerExpertLoss"]


class PerExpertLoss(nn.Module):
    """Each expert's own cross-entropy, summed over tasks and over (or averaged across) experts.

    The experts' predictions come with the combined prediction: ``preds.interpret["expert_logits"]``
    ``{expert: {task: logits}}`` of the model's :class:`~medmoe.nets.contract.ModelOutput`. Samples an expert did
    not see (``interpret["expert_presence"]`` False) are ignored; an output without ``expert_presence`` (I2MoE,
    whose experts all see every modality) counts every sample for every expert.

    The experts share no parameters, so one step with this loss trains every expert on its own: the unimodal
    pretraining of I2M2 (Madaan et al., NeurIPS 2024, Sec. 5) done in one run. The combined prediction itself is
    not used.

    Args:
        tasks: task names (or task -> classes).
        experts: restrict to these experts (default: all).
        reduction: ``"sum"`` (default) or ``"mean"`` over experts.
        task_weights: optional per-task weights (default 1), as :class:`~medmoe.losses.MultiTaskLoss` applies them.

    Raises:
        ValueError: if ``reduction`` is unknown; at call time, if the predictions carry no
            ``interpret["expert_logits"]``.
        KeyError: at call time, naming an unknown expert.

    Example::

        >>> loss = PerExpertLoss(["acl"])  # doctest: +SKIP
        >>> loss(model(batch), {"acl": labels})  # doctest: +SKIP
    """

    def __init__(
        self,
        tasks: Sequence[str] | Mapping[str, int],
        experts: Sequence[str] = (),
        reduction: str = "sum",
        task_weights: Mapping[str, float] | None = None,
    ):
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.tasks, self.experts, self.reduction = list(tasks), list(experts), reduction
        self.task_weights = {t: float((task_weights or {}).get(t, 1.0)) for t in self.tasks}

    def forward(self, preds: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor]) -> torch.Tensor:
        interpret = getattr(preds, "interpret", {})
        if "expert_logits" not in interpret:
            raise ValueError(
                "per-expert losses need the model's output with interpret['expert_logits'] (I2MoE, I2M2), "
                f"got a {type(preds).__name__} with interpret {sorted(interpret)}"
            )
        logits = interpret["expert_logits"]
        presence = interpret.get("expert_presence", {})
        names = self.experts or list(logits)
        unknown = set(names) - set(logits)
        if unknown:
            raise KeyError(f"unknown expert(s) {sorted(unknown)}; the model has {sorted(logits)}")
        total = next(iter(preds.values())).sum() * 0.0
        for name in names:
            for task in self.tasks:
                target = labels[task]
                if name in presence:
                    target = target.masked_fill(~presence[name].to(target.device), -1)
                total = total + self.task_weights[task] * masked_cross_entropy(logits[name][task], target)
        return total / len(names) if self.reduction == "mean" else total
