"""Robustness sweeps: run one evaluator over the same cases at several corruption levels."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from monai.data import DataLoader
from monai.engines import Evaluator
from monai.utils import set_determinism
from torch.utils.data import Dataset

from ..utils import atomic_write_text
from ..utils.figures import new_figure, save_figure

__all__ = ["corruption_sweep"]

logger = logging.getLogger(__name__)


def corruption_sweep(
    evaluator: Evaluator,
    make_dataset: Callable[[float], Dataset],
    levels: Sequence[float],
    tasks: Mapping[str, int] | Sequence[str],
    output_dir: str | Path,
    batch_size: int = 16,
    seed: int = 0,
    level_name: str = "noise level (% of max |image|)",
) -> dict:
    """AUROC per task at every corruption level, written as ``robustness.json`` and ``robustness.png``.

    For each level the evaluator runs over ``make_dataset(level)`` (same cases, seeded, so every level draws
    its noise reproducibly). The evaluator must compute ``<task>_auroc`` metrics
    (:func:`medmoe.engines.task_metrics`).

    Args:
        evaluator: a MONAI evaluator whose data loader is replaced per level.
        make_dataset: level -> dataset of the evaluated cases with that corruption in its transforms.
        levels: corruption levels, e.g. ``[0, 10, 20, 30, 40, 50]`` percent.
        tasks: task names (or task -> classes).
        output_dir: folder for ``robustness.json`` and ``robustness.png``.
        batch_size: evaluation batch size.
        seed: seed set before every level.
        level_name: x-axis label of the plot.

    Returns:
        ``{"levels": [...], "auroc": {task: [...]}, "mean_auroc": [...]}`` (``None`` where AUROC is undefined).

    Raises:
        KeyError: if the evaluator does not compute ``<task>_auroc`` for a task.
    """
    names, levels = list(tasks), [float(level) for level in levels]
    curves: dict[str, list[float | None]] = {t: [] for t in names}
    for level in levels:
        set_determinism(seed=seed)
        loader = DataLoader(make_dataset(level), batch_size=batch_size, shuffle=False)
        evaluator.data_loader = loader
        evaluator.state.epoch_length = len(loader)  # the engine keeps the length of the loader it was built with
        evaluator.run()
        for task in names:
            key = f"{task}_auroc"
            if key not in evaluator.state.metrics:
                raise KeyError(f"the evaluator computes no '{key}' (has {sorted(evaluator.state.metrics)})")
            value = float(evaluator.state.metrics[key])
            curves[task].append(value if np.isfinite(value) else None)
        logger.info(f"{level_name} {level:g}: " + ", ".join(f"{t} AUROC {_fmt(curves[t][-1])}" for t in names))
    mean = [_mean([curves[t][i] for t in names]) for i in range(len(levels))]
    result = {"level_name": level_name, "levels": levels, "auroc": curves, "mean_auroc": mean}
    out = Path(output_dir)
    atomic_write_text(out / "robustness.json", json.dumps(result, indent=2))
    _plot(result, out / "robustness.png")
    logger.info(f"wrote {out / 'robustness.json'} and robustness.png")
    return result


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return float(np.mean(finite)) if finite else None


def _plot(result: dict, path: Path) -> None:
    fig, ax = new_figure((6, 4))
    nan = float("nan")
    for task, values in result["auroc"].items():
        ax.plot(result["levels"], [nan if v is None else v for v in values], marker="o", label=task)
    ax.plot(result["levels"], [nan if v is None else v for v in result["mean_auroc"]], "k--", label="mean")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlabel(result["level_name"])
    ax.set_ylabel("AUROC")
    ax.set_ylim(0.0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("AUROC under corruption")
    fig.tight_layout()
    save_figure(fig, path)
