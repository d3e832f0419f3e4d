"""Score every expert of a product / mixture model on its own (e.g. I2M2's unimodal and joint experts)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events

from ..utils import atomic_write, atomic_write_text
from .metrics import auroc

__all__ = ["ExpertScores"]

logger = logging.getLogger(__name__)


class ExpertScores:
    """Evaluator handler: AUROC of each expert alone per task, over the samples that expert saw.

    The network must expose ``expert_logits()`` -> ``{expert: {task: (b, classes)}}`` and ``expert_presence()``
    -> ``{expert: (b,) bool}`` for the last forward pass (:class:`medmoe.nets.I2M2` does). When the evaluator
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

    Raises:
        ValueError: if the network has no ``expert_logits`` / ``expert_presence``.
    """

    def __init__(
        self,
        output_dir: str | Path,
        tasks: Mapping[str, int],
        network: torch.nn.Module,
        id_key: str = "id",
        split_key: str | None = None,
        eval_split: str = "test",
    ) -> None:
        self.network = getattr(network, "module", network)
        if not (hasattr(self.network, "expert_logits") and hasattr(self.network, "expert_presence")):
            raise ValueError(f"{type(self.network).__name__} has no expert_logits() / expert_presence()")
        self.output_dir, self.tasks, self.id_key = Path(output_dir), dict(tasks), id_key
        self.split_key, self.eval_split = split_key, eval_split

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

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
        presence = self.network.expert_presence()
        for expert, per_task in self.network.expert_logits().items():
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
        atomic_write(self.output_dir / "expert_predictions.csv", lambda tmp: table.to_csv(tmp, index=False))
        atomic_write_text(self.output_dir / "expert_metrics.json", json.dumps(metrics, indent=2))
        for expert, per_task in metrics.items():
            text = ", ".join(f"{t} {_fmt(m['auroc'])}" for t, m in per_task.items())
            logger.info(f"expert {expert} alone: AUROC {text}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
