"""Multi-task loss (classification and segmentation) with missing labels ignored, plus weighted auxiliary losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn

__all__ = ["masked_cross_entropy", "masked_dice_ce", "MultiTaskLoss", "present_key"]


def present_key(task: str) -> str:
    """Batch / target key of a segmentation task's per-sample ``(b,)`` bool "mask present" flag."""
    return f"{task}_present"


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Cross-entropy over the samples whose label is not ``ignore_index``; 0 (with gradient) if none.

    Args:
        logits: ``(b, classes)``.
        labels: ``(b,)`` integer labels, ``ignore_index`` for a missing label.
    """
    labels = labels.to(logits.device).long().view(-1)
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)


def masked_dice_ce(
    logits: torch.Tensor, mask: torch.Tensor, present: torch.Tensor | None = None, loss: nn.Module | None = None
) -> torch.Tensor:
    """Dice + cross-entropy over the samples whose mask is present; 0 (with gradient) if none.

    The loss is computed on the present samples only, so an absent sample's mask content never matters.

    Args:
        logits: ``(b, K, *spatial)`` with ``K >= 2`` classes incl. background (softmax convention).
        mask: ``(b, 1, *spatial)`` or ``(b, *spatial)`` integer label map in ``[0, K)``.
        present: ``(b,)`` bool, ``None`` = all present.
        loss: the Dice-CE module (default ``DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)``:
            Dice over the foreground classes, CE over all).

    Raises:
        ValueError: on a mask whose shape does not match the logits or whose values are outside ``[0, K)``.
    """
    if present is None:
        present = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
    present = present.to(device=logits.device, dtype=torch.bool).view(-1)
    if not bool(present.any()):
        return logits.sum() * 0.0
    mask = mask.to(logits.device)
    if mask.dim() == logits.dim() - 1:
        mask = mask.unsqueeze(1)
    if mask.shape[0] != logits.shape[0] or mask.shape[1] != 1 or mask.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"mask must be (b, 1, {', '.join(map(str, logits.shape[2:]))}) for logits {tuple(logits.shape)}, "
            f"got {tuple(mask.shape)}"
        )
    logits, mask = logits[present], mask[present]
    if bool((mask < 0).any() | (mask >= logits.shape[1]).any()):
        raise ValueError(f"mask values must be class indices in [0, {logits.shape[1]}) for present samples")
    loss = loss or DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)
    return loss(logits.float(), mask.round().long())


class MultiTaskLoss(nn.Module):
    """Sum of per-task losses (missing labels ignored) plus weighted auxiliary losses.

    Classification tasks: masked cross-entropy, label -1 = missing. Segmentation tasks: Dice + CE
    (:func:`masked_dice_ce`) on the integer label map ``labels[task]`` ``(b, 1, H, W)``, over the samples whose
    ``labels["<task>_present"]`` (``(b,)`` bool, :func:`present_key`) is True; without that key every sample
    counts as present. An absent sample's mask is any placeholder of the right shape (e.g. zeros).

    Auxiliary losses are read from the model after its forward pass through
    ``network.auxiliary_losses()`` (DESIGN.md, "Contracts"); a weight < 0 maximises the term,
    e.g. M4oE's ``L = sum_k L_k - alpha I(M;E|T)`` is ``aux_weights={"mutual_information": -0.05}``.

    ``expert_task_weight > 0`` adds that weight times the task loss of every expert's own prediction, averaged over
    experts (:class:`medmoe.losses.PerExpertLoss` with ``reduction="mean"``; term ``"expert_task"``), for models
    with ``expert_logits()`` (I2MoE, I2M2). For I2MoE this departs from the paper, whose task loss sees only the
    weighted sum; why it is there: docs/methods/i2moe.md, "Per-expert supervision".

    Args:
        tasks: task names (or task -> classes) whose predictions and labels are compared.
        network: the model (a DDP wrapper is unwrapped); needed only when ``aux_weights`` is set.
        aux_weights: auxiliary loss name -> weight.
        task_weights: optional per-task weights (default 1).
        segmentation_tasks: names (or the model's ``segmentation_tasks`` mapping) of the segmentation tasks.
        expert_task_weight: weight of the per-expert task loss (classification tasks only; default 0 = off).

    Raises:
        ValueError: when ``aux_weights`` is given without a network exposing ``auxiliary_losses``, or
            ``expert_task_weight`` without a network exposing ``expert_logits`` or with segmentation tasks.
        KeyError: at call time, naming a task missing from the predictions or the labels.
    """

    def __init__(
        self,
        tasks: Mapping[str, int] | list[str],
        network: nn.Module | None = None,
        aux_weights: Mapping[str, float] | None = None,
        task_weights: Mapping[str, float] | None = None,
        segmentation_tasks: Mapping[str, Mapping] | Sequence[str] | None = None,
        expert_task_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.segmentation_tasks = list(segmentation_tasks or [])
        self.tasks = [*tasks, *(t for t in self.segmentation_tasks if t not in tasks)]
        self.dice_ce = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)
        self.aux_weights = dict(aux_weights or {})
        self.task_weights = {t: float((task_weights or {}).get(t, 1.0)) for t in self.tasks}
        module = getattr(network, "module", network)
        if self.aux_weights and not hasattr(module, "auxiliary_losses"):
            raise ValueError("aux_weights needs a network with an auxiliary_losses() method")
        # a plain attribute (not a submodule) so the loss never owns or re-registers the network
        self.__dict__["_network"] = module
        self.expert_task_weight = float(expert_task_weight)
        self.expert_task = None
        if self.expert_task_weight:
            if self.segmentation_tasks:
                raise ValueError("expert_task_weight supports classification tasks only")
            from .experts import PerExpertLoss  # here: experts.py imports this module

            # raises without expert_logits; the experts' task terms get the same task weights as the mixture's
            self.expert_task = PerExpertLoss(self.tasks, module, reduction="mean", task_weights=self.task_weights)
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, preds: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor]) -> torch.Tensor:
        terms: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            if task not in preds or task not in labels:
                raise KeyError(f"task '{task}' missing from {'predictions' if task not in preds else 'labels'}")
            if task in self.segmentation_tasks:
                term = masked_dice_ce(preds[task], labels[task], labels.get(present_key(task)), self.dice_ce)
            else:
                term = masked_cross_entropy(preds[task], labels[task])
            terms[task] = term * self.task_weights[task]
        total = sum(terms.values())
        if self.expert_task is not None:
            terms["expert_task"] = self.expert_task(preds, labels)
            total = total + self.expert_task_weight * terms["expert_task"]
        if self.aux_weights:
            aux = self._network.auxiliary_losses()
            for name, weight in self.aux_weights.items():
                if name not in aux:
                    raise KeyError(f"auxiliary loss '{name}' not produced by the model (has {sorted(aux)})")
                terms[name] = aux[name]
                total = total + weight * aux[name]
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return total
