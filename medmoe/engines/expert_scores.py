"""Score every expert of a product / mixture model on its own (e.g. I2M2's unimodal and joint experts)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine

from ..metrics import choose_threshold
from ..nets.contract import require_interpretations
from ..utils import atomic_write_csv, atomic_write_text
from .collector import EpochCollector
from .metrics import auroc

__all__ = ["ExpertScores"]

logger = logging.getLogger(__name__)


class ExpertScores(EpochCollector):
    """Evaluator handler: AUROC of each expert alone per task, over the samples that expert saw.

    The network's output must carry ``interpret["expert_logits"]`` ``{expert: {task: (b, classes)}}`` and
    ``interpret["expert_presence"]`` ``{expert: (b,) bool}`` (:class:`medmoe.nets.I2M2` does). When the evaluator
    completes, writes ``expert_metrics.json`` (``{expert: {task: {"auroc", "n"}}}``, ``null`` where undefined)
    and ``expert_predictions.csv`` (id, ``<expert>_<task>_prob_<k>``, empty where the expert did not see the
    sample) into ``output_dir``, atomically. Engine output must not be decollated (``decollate=False``).

    Args:
        output_dir: folder for the files.
        tasks: task name -> classes.
        network: the model (a DDP wrapper is unwrapped).
        id_key: batch key of the sample ids.
        split_key, eval_split: when the evaluator runs over several splits (e.g. val + test for thresholds),
            score only the samples whose ``split_key`` equals ``eval_split``.
        threshold_split: with ``split_key``: for binary tasks, choose each expert's decision threshold on this
            split (Youden's J, over the samples it saw) and add ``balanced_accuracy`` and ``threshold`` on
            ``eval_split`` (``null`` when the tuning samples hold a single class).

    Raises:
        ValueError: if the network does not declare those interpretations.
    """

    def __init__(
        self,
        output_dir: str | Path,
        tasks: Mapping[str, int],
        network: torch.nn.Module,
        id_key: str = "id",
        split_key: str | None = None,
        eval_split: str = "test",
        threshold_split: str | None = None,
    ) -> None:
        require_interpretations(network, {"expert_logits", "expert_presence"}, "ExpertScores")
        self.output_dir, self.tasks, self.id_key = Path(output_dir), dict(tasks), id_key
        if threshold_split and not split_key:
            raise ValueError("threshold_split needs split_key (the batch key holding each sample's split)")
        self.split_key, self.eval_split, self.threshold_split = split_key, eval_split, threshold_split

    def _reset(self, _: Engine) -> None:
        self.ids: list[str] = []
        self.splits: list[str] = []
        self.labels: dict[str, list[np.ndarray]] = {t: [] for t in self.tasks}
        self.probs: dict[str, dict[str, list[np.ndarray]]] = {}
        self.presence: dict[str, list[np.ndarray]] = {}

    def _collect(self, engine: Engine) -> None:
        self.ids += [str(i) for i in engine.state.batch[self.id_key]]
        if self.split_key:
            self.splits += [str(v) for v in engine.state.batch[self.split_key]]
        for t in self.tasks:
            self.labels[t].append(engine.state.output["label"][t].detach().cpu().numpy())
        interpret = engine.state.output["pred"].interpret
        presence = interpret["expert_presence"]
        for expert, per_task in interpret["expert_logits"].items():
            store = self.probs.setdefault(expert, {t: [] for t in self.tasks})
            for t in self.tasks:
                store[t].append(per_task[t].detach().float().softmax(-1).cpu().numpy())
            self.presence.setdefault(expert, []).append(presence[expert].detach().cpu().numpy().astype(bool))

    def _write(self, _: Engine) -> None:
        table, metrics = pd.DataFrame({"id": self.ids}), {}
        labels = {t: np.concatenate(v) for t, v in self.labels.items()}
        scored = np.asarray(self.splits) == self.eval_split if self.split_key else np.ones(len(self.ids), bool)
        if self.split_key:
            table["split"] = self.splits
        for expert, per_task in self.probs.items():
            seen = np.concatenate(self.presence[expert])
            metrics[expert] = {}
            for t, chunks in per_task.items():
                probs = np.concatenate(chunks)
                for k in range(probs.shape[1]):
                    table[f"{expert}_{t}_prob_{k}"] = np.where(seen, probs[:, k], np.nan)
                use = seen & (labels[t] >= 0) & scored
                value = auroc(torch.from_numpy(probs[use]), torch.from_numpy(labels[t][use]))
                value = float(value) if np.isfinite(value) else None
                metrics[expert][t] = {"auroc": value, "n": int(use.sum())}
                if self.threshold_split and probs.shape[1] == 2:
                    tune = seen & (labels[t] >= 0) & (np.asarray(self.splits) == self.threshold_split)
                    metrics[expert][t].update(_balanced_at_val_threshold(probs[:, 1], labels[t], tune, use))
        atomic_write_csv(self.output_dir / "expert_predictions.csv", table, index=False)
        atomic_write_text(self.output_dir / "expert_metrics.json", json.dumps(metrics, indent=2))
        for expert, per_task in metrics.items():
            text = ", ".join(f"{t} {_fmt(m['auroc'])}" for t, m in per_task.items())
            logger.info(f"expert {expert} alone: AUROC {text}")


def _balanced_at_val_threshold(score: np.ndarray, labels: np.ndarray, tune: np.ndarray, use: np.ndarray) -> dict:
    """Youden threshold on the ``tune`` rows, balanced accuracy on the ``use`` rows (``None`` where undefined)."""
    positive = labels == 1
    if len(set(positive[tune])) < 2 or len(set(positive[use])) < 2:
        return {"balanced_accuracy": None, "threshold": None}
    threshold = choose_threshold(score[tune], positive[tune])
    pred = score[use] >= threshold
    sensitivity, specificity = pred[positive[use]].mean(), (~pred[~positive[use]]).mean()
    return {"balanced_accuracy": float(0.5 * (sensitivity + specificity)), "threshold": float(threshold)}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
