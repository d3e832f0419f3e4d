"""Evaluation outputs: metrics JSON, per-sample predictions CSV, modality contributions CSV + plot."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine, Events

from ..interpret import contributions_table, dataset_contributions, plot_contributions
from ..utils import atomic_write, atomic_write_text
from .metrics import accuracy, auroc

__all__ = ["EvaluationWriter"]

logger = logging.getLogger(__name__)


class EvaluationWriter:
    """Collect an evaluator's predictions and write them when it completes.

    Writes into ``output_dir``: ``predictions.csv`` (id, ``<task>_prob_<k>``, ``<task>_pred``,
    ``<task>_label`` with -1 for a missing label), ``metrics.json`` (per task: AUROC, accuracy and the
    number of labelled samples; skipped with ``with_metrics=False``, e.g. for inference) and, when the
    network exposes ``modality_task_joint()``, ``modality_contributions.csv`` (per sample and task
    P(M|T)) and ``modality_contributions.png`` (dataset-level P(M|T)). Every file is written atomically.
    Engine output must not be decollated (``decollate=False``).

    Args:
        output_dir: folder for the files.
        tasks: task name -> classes.
        id_key: batch key of the sample ids.
        network: the model, for the interpretation outputs (optional).
        modalities: modality names, for the contribution columns.
        with_metrics: write ``metrics.json``.
    """

    def __init__(
        self,
        output_dir: str | Path,
        tasks: Mapping[str, int],
        id_key: str = "exam_id",
        network: torch.nn.Module | None = None,
        modalities: Sequence[str] = (),
        with_metrics: bool = True,
    ) -> None:
        self.output_dir, self.tasks, self.id_key = Path(output_dir), dict(tasks), id_key
        self.network = getattr(network, "module", network)
        self.modalities, self.with_metrics = list(modalities), with_metrics

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, _: Engine) -> None:
        self.ids: list[str] = []
        self.probs: dict[str, list[np.ndarray]] = {t: [] for t in self.tasks}
        self.labels: dict[str, list[np.ndarray]] = {t: [] for t in self.tasks}
        self.joints: list[np.ndarray] = []

    def _collect(self, engine: Engine) -> None:
        ids = engine.state.batch[self.id_key]
        self.ids += [str(i) for i in ids]
        preds, labels = engine.state.output["pred"], engine.state.output["label"]
        for t in self.tasks:
            self.probs[t].append(preds[t].detach().float().softmax(-1).cpu().numpy())
            self.labels[t].append(labels[t].detach().cpu().numpy())
        if self.network is not None and hasattr(self.network, "modality_task_joint"):
            self.joints.append(self.network.modality_task_joint().cpu().numpy())

    def _write(self, _: Engine) -> None:
        table = pd.DataFrame({"id": self.ids})
        metrics: dict[str, dict] = {}
        for t, classes in self.tasks.items():
            probs, labels = np.concatenate(self.probs[t]), np.concatenate(self.labels[t])
            for k in range(classes):
                table[f"{t}_prob_{k}"] = probs[:, k]
            table[f"{t}_pred"], table[f"{t}_label"] = probs.argmax(1), labels
            valid = labels >= 0
            p, y = torch.from_numpy(probs[valid]), torch.from_numpy(labels[valid])
            metrics[t] = {"auroc": auroc(p, y), "accuracy": accuracy(p, y), "n": int(valid.sum()), "classes": classes}
        atomic_write(self.output_dir / "predictions.csv", lambda tmp: table.to_csv(tmp, index=False))
        if self.with_metrics:
            text = json.dumps(metrics, indent=2, allow_nan=True)
            atomic_write_text(self.output_dir / "metrics.json", text)
            for t, m in metrics.items():
                logger.info(f"{t}: AUROC {m['auroc']:.3f}, accuracy {m['accuracy']:.3f} (n={m['n']})")
        if self.joints:
            joints, tasks = np.concatenate(self.joints), list(self.tasks)
            long = contributions_table(self.ids, joints, self.modalities, tasks)
            atomic_write(self.output_dir / "modality_contributions.csv", lambda tmp: long.to_csv(tmp, index=False))
            plot_contributions(
                dataset_contributions(joints), self.modalities, tasks, self.output_dir / "modality_contributions.png"
            )
        logger.info(f"wrote evaluation outputs to {self.output_dir}")
