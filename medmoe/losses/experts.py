"""Per-expert loss for models that expose their experts' predictions (I2M2's unimodal pretraining)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .multitask import masked_cross_entropy

__all__ = ["PerExpertLoss"]


class PerExpertLoss(nn.Module):
    """Sum over experts and tasks of each expert's own cross-entropy; samples an expert did not see are ignored.

    The experts share no parameters, so one step with this loss trains every expert on its own: the unimodal
    pretraining of I2M2 (Madaan et al., NeurIPS 2024, Sec. 5) done in one run. The combined prediction the
    engine passes in is not used; the network's ``expert_logits()`` and ``expert_presence()`` of the same
    forward pass are.

    Args:
        tasks: task names (or task -> classes).
        network: the model (a DDP wrapper is unwrapped) with ``expert_logits()`` -> ``{expert: {task: logits}}``
            and ``expert_presence()`` -> ``{expert: (b,) bool}``.
        experts: restrict to these experts (default: all).

    Raises:
        ValueError: if the network has no ``expert_logits`` / ``expert_presence``.

    Example::

        >>> loss = PerExpertLoss(["acl"], model)  # doctest: +SKIP
        >>> loss(model(batch), {"acl": labels})  # doctest: +SKIP
    """

    def __init__(self, tasks: Sequence[str] | Mapping[str, int], network: nn.Module, experts: Sequence[str] = ()):
        super().__init__()
        module = getattr(network, "module", network)
        if not (hasattr(module, "expert_logits") and hasattr(module, "expert_presence")):
            raise ValueError(f"{type(module).__name__} has no expert_logits() / expert_presence()")
        self.tasks, self.experts = list(tasks), list(experts)
        self._network = [module]  # a list, so the network is not registered as a submodule of the loss

    def forward(self, preds: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor]) -> torch.Tensor:
        network = self._network[0]
        logits, presence = network.expert_logits(), network.expert_presence()
        names = self.experts or list(logits)
        unknown = set(names) - set(logits)
        if unknown:
            raise KeyError(f"unknown expert(s) {sorted(unknown)}; the model has {sorted(logits)}")
        total = next(iter(preds.values())).sum() * 0.0
        for name in names:
            for task in self.tasks:
                target = labels[task].masked_fill(~presence[name].to(labels[task].device), -1)
                total = total + masked_cross_entropy(logits[name][task], target)
        return total
