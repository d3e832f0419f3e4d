"""Evaluation outputs: metrics JSON, per-sample predictions CSV, modality contributions and expert-task CSVs + plots."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine
from PIL import Image

from ..interpret import (
    contributions_summary,
    contributions_table,
    dataset_contributions,
    dataset_expert_task,
    expert_task_joint,
    expert_task_summary,
    expert_task_table,
    modality_presence,
    plot_contributions,
    plot_expert_task,
)
from ..losses.multitask import present_key
from ..metrics import (
    bootstrap,
    case_metrics,
    evaluate_classification,
    weighted_mean,
    weighted_quadratic_kappa,
    write_report,
)
from ..metrics.plots import plot_overlay
from ..nets.contract import declared_interpretations
from ..utils import FileNames, atomic_write, atomic_write_csv, atomic_write_text
from .collector import EpochCollector
from .segmentation_cases import binary_dice, mask_regions_of, original_mask_spec, per_case

__all__ = ["EvaluationWriter"]

logger = logging.getLogger(__name__)


class EvaluationWriter(EpochCollector):
    """Collect an evaluator's predictions and write them when it completes.

    Writes into ``output_dir``: ``predictions.csv`` (id, ``<task>_prob_<k>``, ``<task>_pred``,
    ``<task>_label`` with -1 for a missing label), ``metrics.json`` (per task: AUROC and accuracy with
    bootstrap confidence intervals, the number of labelled samples and classes; a metric that is undefined,
    e.g. AUROC with one class present, is ``null``), ``report/`` (the evaluation app's report: ROC / PR /
    calibration plots, CSV tables and ``report.md``; see ``docs/evaluation.md``) and, when the
    network's output carries ``interpret["modality_task_joint"]`` (M4oE), the interpretation files
    (``docs/methods/m4oe.md``):
    ``modality_contributions.csv`` (per sample and task P(M|T); NaN for a sample with no modality present),
    ``modality_contributions_dataset.csv`` (dataset-level P(M|T), each modality pooled over the samples where it
    is present, with ``n_present`` / ``n_compared``; :func:`~medmoe.interpret.contributions_summary`) and
    ``modality_contributions.png`` (its heat map) and, from the MToE joint (``modality_expert_task_joint``),
    ``expert_task.csv`` (per sample and task P(E|T), one ``expert_<e>`` column per MToE expert),
    ``expert_task_dataset.csv`` (its mean over the samples; :func:`~medmoe.interpret.expert_task_summary`) and
    ``expert_task.png``. With a single task, P(M|T) is uniform by construction: a warning is logged and the plot
    says so. ``metrics.json`` and ``report/`` are skipped with ``with_metrics=False`` (inference). Every file is
    written atomically.

    Segmentation tasks (``segmentation_tasks``; outputs ``(b, K, H, W)``) are left out of ``predictions.csv`` and
    the classification metrics. With metrics, ``segmentation.csv`` gets one row per (sample, task) whose mask is
    present (``"<task>_present"`` in the targets): Dice, IoU and HD95 (pixels) of each region (by default each
    foreground class; see ``mask_regions``) of the ``argmax`` prediction (:func:`medmoe.metrics.case_metrics`),
    and ``metrics.json`` the mean and standard deviation of the per-case Dice per region. With ``mask_palette``,
    every predicted mask is also written as ``<task>_masks/<id>.png`` with class ``k`` drawn in grey level
    ``palette[k]`` (GAMMA cup: ``[255, 0]``; cup / disc: ``[255, 128, 0]``); an id that is not a safe file name
    (``../x``, ``a/b``, ``CON``) is written under :func:`medmoe.utils.safe_names.id_file_stem` and logged, and two ids
    that would share a file raise ``ValueError``. Masks, metrics and overlays are at the
    model's resolution unless ``original_masks`` maps the task back to the original images; then they are at the
    original resolution against the original ground truth, and ``segmentation.csv`` / ``metrics.json`` also hold
    the model-resolution Dice (``network_dice_<region>``, ``dice_network``).
    Engine output must not be decollated (``decollate=False``).

    Args:
        output_dir: folder for the files.
        tasks: task name -> classes.
        id_key: batch key of the sample ids.
        network: the model, for the interpretation outputs (optional).
        modalities: modality names, for the contribution columns (network ``modality_mask`` order). Default: the
            network's ``modalities``.
        with_metrics: write ``metrics.json`` and ``report/``.
        n_bootstrap: bootstrap resamples for the confidence intervals (0 = none).
        ci: confidence level of the intervals.
        seed: bootstrap seed.
        title: title of ``report/report.md``.
        segmentation_tasks: segmentation task -> spec with ``"classes"`` (e.g. the model's ``segmentation_tasks``).
        mask_palette: segmentation task -> grey level per class, to write the predicted masks as PNG.
        split_key: batch key of each sample's split; needed with ``threshold_split``.
        threshold_split: evaluate over this split *and* ``eval_split`` (e.g. ``"val"`` and ``"test"``): binary
            tasks get a decision threshold chosen on ``threshold_split`` (Youden), and ``metrics.json`` then holds
            ``balanced_accuracy`` (with CI) and the ``threshold`` for each binary task, scored on ``eval_split``
            only; ``predictions.csv`` gains a ``split`` column.
        eval_split: the split that is scored when ``threshold_split`` is set.
        n_overlays: segmentation: overlay PNGs (prediction vs truth, the task's first region) of this many
            lowest-Dice cases per task, in ``<task>_overlays/``. ``metrics.json`` also holds ``dice_ci`` (bootstrap
            CI of the mean per-case Dice) and, for classification tasks of 3+ classes, the quadratic-weighted
            ``kappa`` with ``kappa_ci``.
        mask_regions: segmentation task -> region name -> the classes it joins, e.g. nested optic disc / cup
            ``{"cup": {"cup": [2], "disc": [1, 2]}}``; metrics are per region (columns ``dice_<region>``) and a
            case's Dice is their mean. Default: one region per foreground class, named by its index (``dice_1``).
        original_masks: segmentation task -> how to map its predictions back to the original images:
            ``geometry_key`` (batch key of each case's geometry), ``restore`` (callable
            ``(probabilities (K, h, w), geometry) -> (K, H, W)``, e.g.
            ``medmoe.transforms.RestoreFundusGeometry(mode="bilinear")``; the mask is the ``argmax`` of its output)
            and, for metrics, ``truth_key`` (batch key of each case's ground-truth file, ``""`` when none) and
            ``load_truth`` (callable path -> ``(1, H, W)`` or ``(H, W)`` label map in the task's classes).

    Raises:
        ValueError: ``modalities`` that do not match the network's modalities in number (or none given for a
            network with the ``modality_task_joint`` interpretation); a ``mask_palette`` /
            ``mask_regions`` / ``original_masks`` entry that does not fit its segmentation task; while writing, a
            case whose original ground truth is missing or differs in size from its restored prediction (naming
            the case).
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
        segmentation_tasks: Mapping[str, Mapping] | None = None,
        mask_palette: Mapping[str, Sequence[int]] | None = None,
        split_key: str | None = None,
        threshold_split: str | None = None,
        eval_split: str = "test",
        n_overlays: int = 3,
        mask_regions: Mapping[str, Mapping[str, Sequence[int]]] | None = None,
        original_masks: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.output_dir, self.tasks, self.id_key = Path(output_dir), dict(tasks), id_key
        self.network = getattr(network, "module", network)
        self.modalities, self.with_metrics = list(modalities), with_metrics
        self.interpret = self.network is not None and "modality_task_joint" in declared_interpretations(self.network)
        if self.interpret:
            own = list(self.network.modalities)
            self.modalities = self.modalities or own
            if len(own) != len(self.modalities):
                raise ValueError(
                    f"modalities must name the network's {len(own) or 'input'} modalities {own} for the modality "
                    f"contributions, got {list(modalities)}"
                )
        self.n_bootstrap, self.ci, self.seed, self.title = int(n_bootstrap), float(ci), int(seed), title
        self.segmentation_tasks = {k: dict(v) for k, v in (segmentation_tasks or {}).items()}
        self.tasks = {k: v for k, v in self.tasks.items() if k not in self.segmentation_tasks}
        self.mask_palette = {k: [int(g) for g in v] for k, v in (mask_palette or {}).items()}
        if threshold_split and not split_key:
            raise ValueError("threshold_split needs split_key (the batch key holding each sample's split)")
        self.split_key, self.threshold_split, self.eval_split = split_key, threshold_split, eval_split
        self.n_overlays = int(n_overlays)
        self.file_names: dict[Path, FileNames] = {}  # ids become file names only through these (issue 22)
        for task, palette in self.mask_palette.items():
            if task not in self.segmentation_tasks or len(palette) != int(self.segmentation_tasks[task]["classes"]):
                raise ValueError(f"mask_palette['{task}'] needs one grey level per class of a segmentation task")
        self.mask_regions = {
            t: mask_regions_of(t, spec, (mask_regions or {}).get(t)) for t, spec in self.segmentation_tasks.items()
        }
        unknown = sorted(set(mask_regions or {}) - set(self.segmentation_tasks))
        if unknown:
            raise ValueError(f"mask_regions names {unknown}, which are not segmentation tasks")
        self.original_masks = {
            t: original_mask_spec(t, self.segmentation_tasks, v) for t, v in (original_masks or {}).items()
        }
        for task, spec in self.original_masks.items():
            if with_metrics and "truth_key" not in spec:
                raise ValueError(
                    f"original_masks['{task}'] needs 'truth_key' and 'load_truth' to score at the original resolution"
                    " (or with_metrics=False)"
                )

    def _reset(self, _: Engine) -> None:
        self.ids: list[str] = []
        self.splits: list[str] = []
        self.probs: dict[str, list[np.ndarray]] = {t: [] for t in self.tasks}
        self.labels: dict[str, list[np.ndarray]] = {t: [] for t in self.tasks}
        self.joints: list[np.ndarray] = []
        self.expert_joints: list[np.ndarray] = []
        self.segmentation_rows: list[dict] = []
        self.segmentation_cases: dict[str, list[tuple[float, str, np.ndarray, np.ndarray]]] = {}
        self.network_dice: dict[str, list[float]] = {}

    def _collect(self, engine: Engine) -> None:
        ids = engine.state.batch[self.id_key]
        self.ids += [str(i) for i in ids]
        if self.split_key:
            self.splits += [str(v) for v in engine.state.batch[self.split_key]]
        preds, labels = engine.state.output["pred"], engine.state.output["label"]
        for t in self.tasks:
            self.probs[t].append(preds[t].detach().float().softmax(-1).cpu().numpy())
            self.labels[t].append(labels[t].detach().cpu().numpy())
        batch_ids = [str(i) for i in ids]
        for t in self.segmentation_tasks:
            self._collect_masks(t, batch_ids, preds[t], labels, engine.state.batch)
        if self.interpret:
            joint = preds.interpret["modality_task_joint"].cpu().numpy()  # b M T, absent modalities 0
            self.joints.append(joint)
            if "modality_expert_task_joint" in preds.interpret:
                pi = preds.interpret["modality_expert_task_joint"].float().cpu().numpy()  # b M E T
                self.expert_joints.append(expert_task_joint(pi, modality_presence(joint)))

    def _collect_masks(
        self,
        task: str,
        ids: list[str],
        logits: torch.Tensor,
        labels: Mapping[str, torch.Tensor],
        batch: Mapping[str, Any],
    ) -> None:
        probs = logits.detach().float().softmax(1).cpu()  # b K h w
        network_pred = probs.argmax(1).numpy()  # b h w
        original = self.original_masks.get(task)
        if original is None:
            pred = list(network_pred)
        else:
            geometry = per_case(batch, original["geometry_key"], len(ids), task)
            pred = [np.asarray(original["restore"](p, g)).argmax(0) for p, g in zip(probs, geometry)]
        if task in self.mask_palette:
            palette = np.asarray(self.mask_palette[task], dtype=np.uint8)
            folder = self.output_dir / f"{task}_masks"
            folder.mkdir(parents=True, exist_ok=True)
            for sample_id, mask in zip(ids, pred):
                image = Image.fromarray(palette[mask])
                path = folder / f"{self._file_stem(folder, sample_id)}.png"
                atomic_write(path, lambda tmp, im=image: im.save(tmp, format="PNG"))
        if not self.with_metrics or task not in labels:
            return
        network_truth = labels[task].detach().cpu().numpy().reshape(network_pred.shape[0], -1)
        present = labels.get(present_key(task))
        present = np.ones(len(ids), bool) if present is None else present.detach().cpu().numpy().astype(bool)
        truth_paths = per_case(batch, original["truth_key"], len(ids), task) if original else None
        regions = self.mask_regions[task]
        for i, sample_id in enumerate(ids):
            if not present[i]:
                continue
            if network_truth[i].size != network_pred[i].size:
                raise ValueError(
                    f"'{task}' mask of {sample_id} has {network_truth[i].size} pixels, "
                    f"prediction {network_pred[i].size}"
                )
            network_mask = network_truth[i].reshape(network_pred[i].shape)
            true_mask = network_mask if original is None else self._original_truth(task, sample_id, truth_paths[i])
            if true_mask.shape != pred[i].shape:
                raise ValueError(
                    f"'{task}' ground truth of {sample_id} is {true_mask.shape}, "
                    f"its restored prediction {pred[i].shape}"
                )
            row = {"id": sample_id, "task": task}
            for name, classes in regions.items():
                p, t = np.isin(pred[i], classes), np.isin(true_mask, classes)
                values = case_metrics(p.astype(np.uint8), t.astype(np.uint8), [1])[1]
                row.update({f"{m}_{name}": values[m] for m in ("dice", "iou", "hd95")})
            if original is not None:
                for name, classes in regions.items():
                    p, t = np.isin(network_pred[i], classes), np.isin(network_mask, classes)
                    row[f"network_dice_{name}"] = binary_dice(p, t)
                self.network_dice.setdefault(task, []).append(np.nanmean([row[f"network_dice_{n}"] for n in regions]))
            self.segmentation_rows.append(row)
            dice = np.nanmean([row[f"dice_{name}"] for name in regions])
            first = next(iter(regions.values()))
            self.segmentation_cases.setdefault(task, []).append(
                (float(dice), sample_id, np.isin(pred[i], first), np.isin(true_mask, first))
            )

    def _original_truth(self, task: str, sample_id: str, path: str) -> np.ndarray:
        """The case's ground truth at the original resolution, ``(H, W)`` integer labels."""
        if not path:
            raise ValueError(
                f"'{task}' mask of {sample_id} is flagged present but '{self.original_masks[task]['truth_key']}' "
                "names no file"
            )
        truth = np.asarray(self.original_masks[task]["load_truth"](path))
        if truth.ndim == 3 and truth.shape[0] == 1:
            truth = truth[0]
        if truth.ndim != 2:
            raise ValueError(f"'{task}' ground truth of {sample_id} ({path}) has shape {truth.shape}, expected (H, W)")
        return truth

    def _write(self, _: Engine) -> None:
        table = pd.DataFrame({"id": self.ids})
        for t, classes in self.tasks.items():
            probs, labels = np.concatenate(self.probs[t]), np.concatenate(self.labels[t])
            for k in range(classes):
                table[f"{t}_prob_{k}"] = probs[:, k]
            table[f"{t}_pred"], table[f"{t}_label"] = probs.argmax(1), labels
        if self.split_key:
            table["split"] = self.splits
        atomic_write_csv(self.output_dir / "predictions.csv", table, index=False)
        if self.with_metrics:
            self._write_metrics(table)
        if self.joints:
            self._write_interpretation()
        logger.info(f"wrote evaluation outputs to {self.output_dir}")

    def _write_interpretation(self) -> None:
        """Modality contributions P(M|T) and expert-task assignment P(E|T): per sample, over the dataset, plots."""
        joints, tasks = np.concatenate(self.joints), [*self.tasks, *self.segmentation_tasks]
        if len(tasks) == 1:
            logger.warning(
                "one task: P(modality | task) is uniform over the present modalities by construction, so the "
                "modality contributions carry no information beyond which modalities were present"
            )
        out = self.output_dir
        long = contributions_table(self.ids, joints, self.modalities, tasks)
        atomic_write_csv(out / "modality_contributions.csv", long, index=False)
        summary = contributions_summary(joints, self.modalities, tasks)
        atomic_write_csv(out / "modality_contributions_dataset.csv", summary, index=False)
        counts = modality_presence(joints).sum(0).tolist()
        plot_contributions(
            dataset_contributions(joints), self.modalities, tasks, out / "modality_contributions.png", counts
        )
        if not self.expert_joints:
            logger.warning(
                "the model output has no modality_expert_task_joint (an M4oE MToE joint): no expert_task files"
            )
            return
        experts = np.concatenate(self.expert_joints)  # n E T
        per_sample = expert_task_table(self.ids, experts, tasks)
        atomic_write_csv(out / "expert_task.csv", per_sample, index=False)
        dataset = expert_task_summary(experts, tasks)
        atomic_write_csv(out / "expert_task_dataset.csv", dataset, index=False)
        n = int(dataset["n"].iloc[0]) if len(dataset) else 0
        plot_expert_task(dataset_expert_task(experts), tasks, out / "expert_task.png", n=n)

    def _write_metrics(self, table: pd.DataFrame) -> None:
        """``metrics.json`` (values + bootstrap CIs from :mod:`medmoe.metrics`) and the ``report/`` folder."""
        labels = pd.DataFrame({"id": table["id"]})
        for t in self.tasks:
            labels[t] = table[f"{t}_label"].where(table[f"{t}_label"] >= 0).astype("Int64")
        labelled = [t for t in self.tasks if labels[t].notna().any()]
        metrics: dict[str, dict] = {t: _empty_task(self.tasks[t]) for t in self.tasks}
        if labelled:
            predictions = table.drop(columns=[c for c in table if c.endswith(("_pred", "_label"))])
            splits = {"threshold_split": self.threshold_split, "eval_split": self.eval_split} if self.split_key else {}
            result = evaluate_classification(
                predictions, labels, labelled, n_bootstrap=self.n_bootstrap, seed=self.seed, ci=self.ci, **splits
            )
            scored = ("auroc", "accuracy", "balanced_accuracy") if self.threshold_split else ("auroc", "accuracy")
            for spec in result["tasks"] if self.threshold_split else []:
                if spec["kind"] == "binary":
                    metrics[spec["name"]]["threshold"] = _finite(spec["thresholds"].get("1"))
            for entry in result["metrics"]:
                if entry["class"] is None and entry["group"] is None and entry["metric"] in scored:
                    task = metrics[entry["task"]]
                    task[entry["metric"]] = _finite(entry["value"])
                    task[f"{entry['metric']}_ci"] = [_finite(entry["ci_low"]), _finite(entry["ci_high"])]
                    task["n"] = int(entry["n"])
            self._add_kappa(table, metrics)
            write_report(result, self.output_dir / "report", title=self.title)
        metrics.update(self._segmentation_metrics())
        text = json.dumps({"ci_level": self.ci, "n_bootstrap": self.n_bootstrap, "tasks": metrics}, indent=2)
        atomic_write_text(self.output_dir / "metrics.json", text)
        for t, m in metrics.items():
            if t in self.segmentation_tasks:
                logger.info(
                    f"{t}: Dice {_fmt(m['dice'], m['dice_ci'])} at the {m['resolution']} resolution (n={m['n']})"
                )
                continue
            logger.info(
                f"{t}: AUROC {_fmt(m['auroc'], m['auroc_ci'])}, accuracy {_fmt(m['accuracy'], m['accuracy_ci'])}"
                f" (n={m['n']})"
            )

    def _add_kappa(self, table: pd.DataFrame, metrics: dict[str, dict]) -> None:
        """Quadratic-weighted kappa (with a bootstrap CI) of the arg-max prediction for tasks of 3+ classes."""
        rows = table["split"] == self.eval_split if self.split_key else np.ones(len(table), bool)
        for t, classes in self.tasks.items():
            labels, preds = table[f"{t}_label"].to_numpy(), table[f"{t}_pred"].to_numpy()
            use = np.asarray(rows) & (labels >= 0)
            if classes < 3 or not use.any():
                continue
            y, p = labels[use], preds[use]

            def kappa(w: np.ndarray, y: np.ndarray = y, p: np.ndarray = p, k: int = classes) -> dict:
                return {"kappa": weighted_quadratic_kappa(y, p, k, w)}

            value, low, high = bootstrap(kappa, y.size, None, self.n_bootstrap, self.seed, self.ci)["kappa"]
            metrics[t].update(kappa=_finite(value), kappa_ci=[_finite(low), _finite(high)])

    def _segmentation_metrics(self) -> dict[str, dict]:
        """Per segmentation task: mean / std of the per-case Dice per foreground class; writes segmentation.csv."""
        if not self.segmentation_tasks:
            return {}
        table = pd.DataFrame(self.segmentation_rows, columns=["id", "task"])
        if self.segmentation_rows:
            table = pd.DataFrame(self.segmentation_rows)
        atomic_write_csv(self.output_dir / "segmentation.csv", table, index=False)
        out = {}
        for t in self.segmentation_tasks:
            rows = table[table["task"] == t]
            dice = {}
            for name in self.mask_regions[t]:
                values = rows.get(f"dice_{name}", pd.Series(dtype=float)).dropna()
                dice[name] = {
                    "mean": _finite(values.mean()) if len(values) else None,
                    "std": _finite(values.std(ddof=0)) if len(values) else None,
                    "ci": self._mean_ci(values.to_numpy(np.float64)),
                    "n": int(len(values)),
                }
            case_dice = np.array([c[0] for c in self.segmentation_cases.get(t, [])], np.float64)
            scored = case_dice[np.isfinite(case_dice)]  # a case's Dice: the mean over its scored regions
            out[t] = {
                "dice": float(scored.mean()) if scored.size else None,  # the statistic dice_ci is an interval of
                "dice_ci": self._mean_ci(case_dice),
                "dice_per_region": dice,
                "n": int(len(rows)),
                "resolution": "original" if t in self.original_masks else "network",
            }
            if t in self.original_masks:
                network = np.array(self.network_dice.get(t, []), np.float64)
                out[t]["dice_network"] = _finite(np.nanmean(network)) if np.isfinite(network).any() else None
            self._overlays(t)
        return out

    def _mean_ci(self, values: np.ndarray) -> list[float | None]:
        """Percentile bootstrap interval of the mean over cases (``n_bootstrap`` resamples, seeded)."""
        values = values[np.isfinite(values)]
        if self.n_bootstrap <= 0 or values.size < 2:
            return [None, None]

        def mean(w: np.ndarray) -> dict:
            return {"mean": weighted_mean(w, values)}

        _, low, high = bootstrap(mean, values.size, None, self.n_bootstrap, self.seed, self.ci)["mean"]
        return [_finite(low), _finite(high)]

    def _overlays(self, task: str) -> None:
        """Prediction vs truth PNGs of the ``n_overlays`` cases with the lowest Dice: ``<task>_overlays/<id>.png``."""
        worst = sorted(self.segmentation_cases.get(task, []), key=lambda c: (np.nan_to_num(c[0], nan=-1.0), c[1]))
        for dice, sample_id, pred, truth in worst[: self.n_overlays]:
            title = f"{task} {sample_id}: Dice {dice:.3f}"
            folder = self.output_dir / f"{task}_overlays"
            plot_overlay(pred, truth, (1.0, 1.0), title, folder / f"{self._file_stem(folder, sample_id)}.png")

    def _file_stem(self, folder: Path, sample_id: str) -> str:
        """The file name of ``sample_id`` in ``folder``: safe, unique per folder (:class:`~medmoe.utils.FileNames`)."""
        return self.file_names.setdefault(folder, FileNames(folder))(sample_id)


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
