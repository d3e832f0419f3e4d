"""Multi-task loss with missing labels ignored, plus the model's weighted auxiliary losses."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["masked_cross_entropy", "MultiTaskLoss"]


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Cross-entropy over the samples whose label is not ``ignore_index``; 0 (with gradient) if none.

    Args:
        logits: ``(b, classes)``.
        labels: ``(b,)`` integer labels, ``ignore_index`` for a missing label.
    """
    labels = labels.long().view(-1)
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)


class MultiTaskLoss(nn.Module):
    """Sum of per-task losses (missing labels = -1 ignored) plus weighted auxiliary losses.

    Auxiliary losses are read from the model after its forward pass through
    ``network.auxiliary_losses()`` (DESIGN.md, "Contracts"); a weight < 0 maximises the term,
    e.g. M4oE's ``L = sum_k L_k - alpha I(M;E|T)`` is ``aux_weights={"mutual_information": -0.05}``.

    Args:
        tasks: task names (or task -> classes) whose predictions and labels are compared.
        network: the model (a DDP wrapper is unwrapped); needed only when ``aux_weights`` is set.
        aux_weights: auxiliary loss name -> weight.
        task_weights: optional per-task weights (default 1).

    Raises:
        ValueError: when ``aux_weights`` is given without a network exposing ``auxiliary_losses``.
        KeyError: at call time, naming a task missing from the predictions or the labels.
    """

    def __init__(
        self,
        tasks: Mapping[str, int] | list[str],
        network: nn.Module | None = None,
        aux_weights: Mapping[str, float] | None = None,
        task_weights: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.aux_weights = dict(aux_weights or {})
        self.task_weights = {t: float((task_weights or {}).get(t, 1.0)) for t in self.tasks}
        module = getattr(network, "module", network)
        if self.aux_weights and not hasattr(module, "auxiliary_losses"):
            raise ValueError("aux_weights needs a network with an auxiliary_losses() method")
        # a plain attribute (not a submodule) so the loss never owns or re-registers the network
        self.__dict__["_network"] = module
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, preds: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor]) -> torch.Tensor:
        terms: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            if task not in preds or task not in labels:
                raise KeyError(f"task '{task}' missing from {'predictions' if task not in preds else 'labels'}")
            terms[task] = masked_cross_entropy(preds[task], labels[task]) * self.task_weights[task]
        total = sum(terms.values())
        if self.aux_weights:
            aux = self._network.auxiliary_losses()
            for name, weight in self.aux_weights.items():
                if name not in aux:
                    raise KeyError(f"auxiliary loss '{name}' not produced by the model (has {sorted(aux)})")
                terms[name] = aux[name]
                total = total + weight * aux[name]
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return total
