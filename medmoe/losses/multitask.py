"""Multi-task loss (classification and segmentation) with missing labels ignored, plus weighted auxiliary losses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.losses import DiceCELoss
from torch import nn

from .experts import PerExpertLoss
from .masked import masked_cross_entropy, masked_dice_ce, present_key

__all__ = ["masked_cross_entropy", "masked_dice_ce", "MultiTaskLoss", "present_key"]


class MultiTaskLoss(nn.Module):
    """Sum of per-task losses (missing labels ignored) plus weighted auxiliary losses.

    Classification tasks: masked cross-entropy, label -1 = missing. Segmentation tasks: Dice + CE
    (:func:`masked_dice_ce`) on the integer label map ``labels[task]`` ``(b, 1, H, W)``, over the samples whose
    ``labels["<task>_present"]`` (``(b,)`` bool, :func:`present_key`) is True; without that key every sample
    counts as present. An absent sample's mask is any placeholder of the right shape (e.g. zeros).

    Auxiliary losses are read from the predictions it is given: the model's
    :class:`~medmoe.nets.contract.ModelOutput` carries the ``aux_losses`` of the forward that made it (DESIGN.md,
    "Contracts"); a weight < 0 maximises the term, e.g. M4oE's ``L = sum_k L_k - alpha I(M;E|T)`` is
    ``aux_weights={"mutual_information": -0.05}``.

    ``expert_task_weight > 0`` adds that weight times the task loss of every expert's own prediction, averaged over
    experts (:class:`medmoe.losses.PerExpertLoss` with ``reduction="mean"``; term ``"expert_task"``), for models
    whose output has ``interpret["expert_logits"]`` (I2MoE, I2M2). For I2MoE this departs from the paper, whose
    task loss sees only the weighted sum; why it is there: docs/methods/i2moe.md, "Per-expert supervision".

    Args:
        tasks: task names (or task -> classes) whose predictions and labels are compared.
        aux_weights: auxiliary loss name -> weight (names of the model output's ``aux_losses``).
        task_weights: optional per-task weights (default 1).
        segmentation_tasks: names (or the model's ``segmentation_tasks`` mapping) of the segmentation tasks.
        expert_task_weight: weight of the per-expert task loss (classification tasks only; default 0 = off).

    Raises:
        ValueError: ``expert_task_weight`` with segmentation tasks; at call time, ``aux_weights`` or
            ``expert_task_weight`` with predictions that are not a model output carrying them.
        KeyError: at call time, naming a task missing from the predictions or the labels, or an auxiliary loss
            missing from the output.
    """

    def __init__(
        self,
        tasks: Mapping[str, int] | list[str],
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
        self.expert_task_weight = float(expert_task_weight)
        self.expert_task = None
        if self.expert_task_weight:
            if self.segmentation_tasks:
                raise ValueError("expert_task_weight supports classification tasks only")
            # the experts' task terms get the same task weights as the mixture's
            self.expert_task = PerExpertLoss(self.tasks, reduction="mean", task_weights=self.task_weights)
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
            aux = getattr(preds, "aux_losses", None)
            if aux is None:
                raise ValueError(
                    f"aux_weights {sorted(self.aux_weights)} need the model's output (a medmoe.nets.ModelOutput "
                    f"with aux_losses), got a {type(preds).__name__}"
                )
            for name, weight in self.aux_weights.items():
                if name not in aux:
                    raise KeyError(f"auxiliary loss '{name}' not produced by the model (has {sorted(aux)})")
                terms[name] = aux[name]
                total = total + weight * aux[name]
        self.last_terms = {k: v.detach() for k, v in terms.items()}
        return total
