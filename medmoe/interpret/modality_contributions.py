"""Modality contributions P(M | T) (M4oE, Sec. 3.3): per sample, over a dataset, and as a plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..utils import atomic_write, headless_pyplot

__all__ = ["dataset_contributions", "contributions_table", "plot_contributions"]


def dataset_contributions(joints: np.ndarray) -> np.ndarray:
    """Dataset-level P(M | T) from per-sample joints ``(n, M, T)``: pool the joints, then condition.

    Returns:
        ``(T, M)``: each row sums to 1.
    """
    pooled = np.asarray(joints, dtype=np.float64).sum(0)  # M T
    return (pooled / np.clip(pooled.sum(0, keepdims=True), 1e-12, None)).T


def contributions_table(
    ids: Sequence[str], joints: np.ndarray, modalities: Sequence[str], tasks: Sequence[str]
) -> pd.DataFrame:
    """Long table: one row per (sample, task) with P(M | T) per modality column."""
    joints = np.asarray(joints, dtype=np.float64)
    cond = joints / np.clip(joints.sum(1, keepdims=True), 1e-12, None)  # n M T
    rows = [
        {"id": sid, "task": task, **{m: cond[i, j, k] for j, m in enumerate(modalities)}}
        for i, sid in enumerate(ids)
        for k, task in enumerate(tasks)
    ]
    return pd.DataFrame(rows, columns=["id", "task", *modalities])


def plot_contributions(contrib: np.ndarray, modalities: Sequence[str], tasks: Sequence[str], path: str | Path) -> Path:
    """Heat map of dataset-level P(M | T) (tasks x modalities), written atomically as PNG.

    Colours diverge from the uniform value ``1 / M`` (white): red = the task leans on that modality more than
    uniform, blue = less.
    """
    plt = headless_pyplot()

    uniform = 1.0 / contrib.shape[1]
    spread = max(float(np.abs(contrib - uniform).max()), 1e-3)  # colours centred on "no preference" = 1/M
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(modalities), 1.2 + 0.6 * len(tasks)))
    im = ax.imshow(contrib, cmap="RdBu_r", vmin=uniform - spread, vmax=uniform + spread)
    ax.set_xticks(range(len(modalities)), labels=list(modalities))
    ax.set_yticks(range(len(tasks)), labels=list(tasks))
    for (k, j), value in np.ndenumerate(contrib):
        dark = abs(value - uniform) > 0.6 * spread
        ax.text(j, k, f"{value:.3f}", ha="center", va="center", color="w" if dark else "k")
    ax.set_title(f"Modality contribution P(modality | task); uniform = {uniform:.3f}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return Path(path)
