"""Per-expert loss for models that expose their experts' predictions (I2M2's unimodal pretraining, I2MoE's
per-expert supervision through ``MultiTaskLoss(expert_task_weight=...)``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .multitask import masked_cross_entropy

__all__ = ["PerExpertLoss"]


class PerExpertLoss(nn.Module):
    """Each expert's own cross-entropy, summed over tasks and over (or averaged across) experts.

    Samples an expert did not see (``expert_presence()`` False) are ignored; a network without
    ``expert_presence()`` (I2MoE, whose experts all see every modality) counts every sample for every expert.

    The experts share no parameters, so one step with this loss trains every expert on its own: the unimodal
    pretraining of I2M2 (Madaan et al., NeurIPS 2024, Sec. 5) done in one run. The combined prediction the
    engine passes in is not used; the network's ``expert_logits()`` and ``expert_presence()`` of the same
    forward pass are.

    Args:
        tasks: task names (or task -> classes).
        network: the model (a DDP wrapper is unwrapped) with ``expert_logits()`` -> ``{expert: {task: logits}}``
            and optionally ``expert_presence()`` -> ``{expert: (b,) bool}``.
        experts: restrict to these experts (default: all).
        reduction: ``"sum"`` (default) or ``"mean"`` over experts.
        task_weights: optional per-task weights (default 1), as :class:`~medmoe.losses.MultiTaskLoss` applies them.

    Raises:
        ValueError: if the network has no ``expert_logits`` or ``reduction`` is unknown.

    Example::

        >>> loss = PerExpertLoss(["acl"], model)  # doctest: +SKIP
        >>> loss(model(batch), {"acl": labels})  # doctest: +SKIP
    """

    def __init__(
        self,
        tasks: Sequence[str] | Mapping[str, int],
        network: nn.Module,
        experts: Sequence[str] = (),
        reduction: str = "sum",
        task_weights: Mapping[str, float] | None = None,
    ):
        super().__init__()
        module = getattr(network, "module", network)
        if not hasattr(module, "expert_logits"):
            raise ValueError(f"{type(module).__name__} has no expert_logits(), so it has no per-expert predictions")
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.tasks, self.experts, self.reduction = list(tasks), list(experts), reduction
        self.task_weights = {t: float((task_weights or {}).get(t, 1.0)) for t in self.tasks}
        self._network = [module]  # a list, so the network is not registered as a submodule of the loss

    def forward(self, preds: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor]) -> torch.Tensor:
        network = self._network[0]
        logits = network.expert_logits()
        presence = network.expert_presence() if hasattr(network, "expert_presence") else {}
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
