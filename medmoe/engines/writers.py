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

__all__ = ["EvaluationWriter"]

logger = logging.getLogger(__name__)


class EvaluationWriter:
    """Collect an evaluator's predictions and write them when it completes.

    Writes into ``output_dir``: ``predictions.csv`` (id, ``<task>_prob_<k>``, ``<task>_pred``,
    ``<task>_label`` with -1 for a missing label), ``metrics.json`` (per task: AUROC and accuracy with
    bootstrap confidence intervals, the number of labelled samples and classes; a metric that is undefined,
    e.g. AUROC with one class present, is ``null``), ``report/`` (the evaluation app's report: ROC / PR /
    calibration plots, CSV tables and ``report.md``; see ``docs/evaluation.md``) and, when the
    network exposes ``modality_task_joint()``, ``modality_contributions.csv`` (per sample and task
    P(M|T)) and ``modality_contributions.png`` (dataset-level P(M|T)). ``metrics.json`` and ``report/`` are
    skipped with ``with_metrics=False`` (inference). Every file is written atomically.
    Engine output must not be decollated (``decollate=False``).

    Args:
        output_dir: folder for the files.
        tasks: task name -> classes.
        id_key: batch key of the sample ids.
        network: the model, for the interpretation outputs (optional).
        modalities: modality names, for the contribution columns.
        with_metrics: write ``metrics.json`` and ``report/``.
        n_bootstrap: bootstrap resamples for the confidence intervals (0 = none).
        ci: confidence level of the intervals.
        seed: bootstrap seed.
        title: title of ``report/report.md``.
    """

    def __init__(
        self,
        output_dir: str | Path,
        tasks: Mapping[str, int],
        id_key: str = "exam_id",
        network: torch.nn.Module | None = None,
        modalities: Sequence[str] = (),
        with_metrics: bool = True,
        n_bootstrap: int = 1000,
        ci: float = 0.95,
        seed: int = 0,
        title: str = "Evaluation",
    ) -> None:
        self.output_dir, self.tasks, self.id_key = Path(output_dir), dict(tasks), id_key
        self.network = getattr(network, "module", network)
        self.modalities, self.with_metrics = list(modalities), with_metrics
        self.n_bootstrap, self.ci, self.seed, self.title = int(n_bootstrap), float(ci), int(seed), title

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
        for t, classes in self.tasks.items():
            probs, labels = np.concatenate(self.probs[t]), np.concatenate(self.labels[t])
            for k in range(classes):
                table[f"{t}_prob_{k}"] = probs[:, k]
            table[f"{t}_pred"], table[f"{t}_label"] = probs.argmax(1), labels
        atomic_write(self.output_dir / "predictions.csv", lambda tmp: table.to_csv(tmp, index=False))
        if self.with_metrics:
            self._write_metrics(table)
        if self.joints:
            joints, tasks = np.concatenate(self.joints), list(self.tasks)
            long = contributions_table(self.ids, joints, self.modalities, tasks)
            atomic_write(self.output_dir / "modality_contributions.csv", lambda tmp: long.to_csv(tmp, index=False))
            plot_contributions(
                dataset_contributions(joints), self.modalities, tasks, self.output_dir / "modality_contributions.png"
            )
        logger.info(f"wrote evaluation outputs to {self.output_dir}")

    def _write_metrics(self, table: pd.DataFrame) -> None:
        """``metrics.json`` (values + bootstrap CIs from :mod:`medmoe.apps.evaluate`) and the ``report/`` folder."""
        from ..apps.evaluate import evaluate_classification, write_report

        labels = pd.DataFrame({"id": table["id"]})
        for t in self.tasks:
            labels[t] = table[f"{t}_label"].where(table[f"{t}_label"] >= 0).astype("Int64")
        labelled = [t for t in self.tasks if labels[t].notna().any()]
        metrics: dict[str, dict] = {t: _empty_task(self.tasks[t]) for t in self.tasks}
        if labelled:
            predictions = table.drop(columns=[c for c in table if c.endswith(("_pred", "_label"))])
            result = evaluate_classification(
                predictions, labels, labelled, n_bootstrap=self.n_bootstrap, seed=self.seed, ci=self.ci
            )
            for entry in result["metrics"]:
                if entry["class"] is None and entry["group"] is None and entry["metric"] in ("auroc", "accuracy"):
                    task = metrics[entry["task"]]
                    task[entry["metric"]] = _finite(entry["value"])
                    task[f"{entry['metric']}_ci"] = [_finite(entry["ci_low"]), _finite(entry["ci_high"])]
                    task["n"] = int(entry["n"])
            write_report(result, self.output_dir / "report", title=self.title)
        text = json.dumps({"ci_level": self.ci, "n_bootstrap": self.n_bootstrap, "tasks": metrics}, indent=2)
        atomic_write_text(self.output_dir / "metrics.json", text)
        for t, m in metrics.items():
            logger.info(
                f"{t}: AUROC {_fmt(m['auroc'], m['auroc_ci'])}, accuracy {_fmt(m['accuracy'], m['accuracy_ci'])}"
                f" (n={m['n']})"
            )


def _empty_task(classes: int) -> dict:
    return {
        "auroc": None,
        "auroc_ci": [None, None],
        "accuracy": None,
        "accuracy_ci": [None, None],
        "n": 0,
        "classes": classes,
    }


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _fmt(value: float | None, interval: list) -> str:
    if value is None:
        return "n/a"
    if interval[0] is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"
