"""Per-task AUROC / accuracy for ignite engines, with missing labels (-1) ignored and DDP gathering."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral

import torch
import torch.distributed as dist
from ignite.engine import Engine
from ignite.metrics import Metric
from monai.metrics import compute_roc_auc
from monai.utils import evenly_divisible_all_gather

__all__ = ["SegmentationDice", "TaskMetric", "task_metrics", "auroc", "accuracy"]

logger = logging.getLogger(__name__)


def auroc(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """One-vs-rest macro AUROC (MONAI's ``compute_roc_auc``); NaN if fewer than 2 classes are present."""
    if labels.numel() == 0 or labels.unique().numel() < 2:
        return float("nan")
    onehot = torch.nn.functional.one_hot(labels.long(), probs.shape[1])
    present = onehot.sum(0) > 0  # classes absent from the labels have no defined one-vs-rest AUROC
    return float(compute_roc_auc(probs[:, present], onehot[:, present], average="macro"))


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of arg-max predictions equal to the label; NaN for no labels."""
    if labels.numel() == 0:
        return float("nan")
    return float((probs.argmax(1) == labels).float().mean())


_FUNCTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {"auroc": auroc, "accuracy": accuracy}


def _default_transform(output: Mapping) -> tuple:
    return output["pred"], output["label"]


class TaskMetric(Metric):
    """AUROC or accuracy of one task, or their mean over all tasks (``task=None``).

    Expects the engine output ``{"pred": {task: logits}, "label": {task: labels}}`` (``decollate=False``).
    Samples with label -1 are skipped. Under ``torch.distributed`` the values are gathered from all ranks.

    Args:
        tasks: task names (or task -> classes).
        metric: ``"auroc"`` or ``"accuracy"``.
        task: one task name, or None for the mean over tasks (NaN tasks skipped).
        output_transform: maps the engine output to ``(preds, labels)`` dicts.

    Raises:
        ValueError: for an unknown metric or task.

    A task whose validation labels hold fewer than two classes has no AUROC; the mean skips it, so it is left
    out of model selection. That is logged as a warning naming the task: when the metric is attached to an
    evaluator whose ``data_loader.dataset.data`` holds the records (MONAI's ``Dataset`` / ``CacheDataset``, i.e. when
    the bundle is set up, before training starts), and otherwise at the first validation that finds it.
    """

    def __init__(
        self,
        tasks: Mapping[str, int] | Sequence[str],
        metric: str = "auroc",
        task: str | None = None,
        output_transform: Callable = _default_transform,
    ) -> None:
        if metric not in _FUNCTIONS:
            raise ValueError(f"metric must be one of {sorted(_FUNCTIONS)}, got '{metric}'")
        self.tasks = [task] if task is not None else list(tasks)
        if task is not None and task not in list(tasks):
            raise ValueError(f"unknown task '{task}'; tasks are {list(tasks)}")
        self.fn, self.metric, self.averaged = _FUNCTIONS[metric], metric, task is None
        self._warned: set[str] = set()
        super().__init__(output_transform=output_transform)

    def attach(self, engine: Engine, name: str, *args, **kwargs) -> None:
        """Ignite's ``attach``; also warns about validation tasks with one class in the engine's data (see above)."""
        super().attach(engine, name, *args, **kwargs)
        self.name = name
        records = getattr(getattr(getattr(engine, "data_loader", None), "dataset", None), "data", None)
        if self.metric == "auroc" and self.averaged and isinstance(records, Sequence):
            for t in self.tasks:
                labels = {int(r[t]) for r in records if isinstance(r, Mapping) and isinstance(r.get(t), Integral)}
                self._warn_single_class(t, sorted(v for v in labels if v >= 0))

    def _warn_single_class(self, task: str, classes: Sequence[int]) -> None:
        if task in self._warned or len(classes) >= 2:
            return
        self._warned.add(task)
        found = f"only class {classes[0]}" if classes else "no labels"
        others = [t for t in self.tasks if t != task]
        rest = f"averages {others}" if others else "has no task left: no best model can be chosen"
        logger.warning(
            f"validation task '{task}' has {found} in its labelled samples: its AUROC is "
            f"undefined, so it is left out of model selection ('{getattr(self, 'name', 'the key metric')}' {rest}); "
            "put samples of every class into the validation split"
        )

    def reset(self) -> None:
        self._probs: dict[str, list[torch.Tensor]] = {t: [] for t in self.tasks}
        self._labels: dict[str, list[torch.Tensor]] = {t: [] for t in self.tasks}

    def update(self, output: tuple) -> None:
        preds, labels = output
        for t in self.tasks:
            y = labels[t].detach().view(-1)
            valid = y >= 0
            self._probs[t].append(preds[t].detach()[valid].float().softmax(-1).cpu())
            self._labels[t].append(y[valid].cpu())

    def compute(self) -> float:
        values = []
        for t in self.tasks:
            probs, labels = torch.cat(self._probs[t]), torch.cat(self._labels[t])
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                probs = evenly_divisible_all_gather(probs, concat=True)
                labels = evenly_divisible_all_gather(labels.unsqueeze(1), concat=True).view(-1)
            values.append(self.fn(probs, labels))
            if self.metric == "auroc" and self.averaged and values[-1] != values[-1]:
                self._warn_single_class(t, sorted(int(c) for c in labels.unique()))
        finite = [v for v in values if v == v]
        return sum(finite) / len(finite) if finite else float("nan")


class SegmentationDice(Metric):
    """Mean per-case Dice of a segmentation task's ``argmax`` prediction, over the cases whose mask is present.

    Expects the engine output ``{"pred": {task: (b, K, H, W) logits}, "label": {task: (b, 1, H, W) labels,
    "<task>_present": (b,) bool}}`` (``decollate=False``; as :class:`~medmoe.engines.MultimodalPrepareBatch` gives).
    A case's Dice is the mean over the foreground classes ``1..K-1`` that occur in its prediction or its mask; a
    case with neither is skipped. Under ``torch.distributed`` the per-case values are gathered from all ranks.

    Args:
        task: the segmentation task.
        output_transform: maps the engine output to ``(preds, labels)`` dicts.

    Example::

        >>> metric = SegmentationDice("cup")  # in a config: additional_metrics {"cup_dice": metric}
    """

    def __init__(self, task: str, output_transform: Callable = _default_transform) -> None:
        self.task = task
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        self._dice: list[torch.Tensor] = []

    def update(self, output: tuple) -> None:
        preds, labels = output
        logits = preds[self.task].detach()
        classes = logits.shape[1]
        pred = logits.argmax(1).flatten(1)  # b (H W)
        truth = labels[self.task].detach().reshape(pred.shape).to(pred.device)
        present = labels.get(f"{self.task}_present")
        present = torch.ones(pred.shape[0], dtype=torch.bool) if present is None else present.detach().bool().cpu()
        k = torch.arange(1, classes, device=pred.device).view(1, -1, 1)
        p, t = pred.unsqueeze(1) == k, truth.unsqueeze(1) == k  # b (K-1) (H W)
        inter, total = (p & t).sum(-1).float(), (p.sum(-1) + t.sum(-1)).float()
        dice = torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.nan).nanmean(1).cpu()  # b
        self._dice.append(dice[present])

    def compute(self) -> float:
        dice = torch.cat(self._dice) if self._dice else torch.zeros(0)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dice = evenly_divisible_all_gather(dice.unsqueeze(1), concat=True).view(-1)
        dice = dice[~torch.isnan(dice)]
        return float(dice.mean()) if dice.numel() else float("nan")


def mean_of(*values: float) -> float:
    """Mean of the finite values (NaN if none), e.g. to combine a grade AUROC and a cup Dice into one key metric."""
    finite = [float(v) for v in values if v == v]
    return sum(finite) / len(finite) if finite else float("nan")


def task_metrics(tasks: Mapping[str, int] | Sequence[str], metrics: Sequence[str] = ("auroc", "accuracy")) -> dict:
    """``{"<task>_<metric>": TaskMetric}`` for every task and metric (for ``additional_metrics``)."""
    return {f"{t}_{m}": TaskMetric(tasks, m, task=t) for t in tasks for m in metrics}
