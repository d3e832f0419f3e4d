"""I2MoE expert weights (papers/i2moe_paper.txt, Sec. 3.5): local (per sample) and global (per dataset).

Local interpretation: a sample's reweighting weights ``(n + 2,)`` say how much each interaction
expert (``unique_<modality>``, ``synergy``, ``redundancy``) contributes to its prediction. Global: the
distribution of each expert's weight over a dataset (the paper's violin plots, Fig. 4).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..utils.figures import new_figure, save_figure

__all__ = ["collect_expert_weights", "expert_weight_summary", "plot_expert_weights", "plot_sample_weights"]


@torch.no_grad()
def collect_expert_weights(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> np.ndarray:
    """Run ``model`` in eval mode over ``batches``; stack its outputs' ``interpret["expert_weights"]``, ``(N, n + 2)``.

    The model's training mode is restored afterwards.

    Raises:
        ValueError: if ``batches`` is empty.
    """
    was_training = model.training
    model.eval()
    try:
        weights = []
        for batch in batches:
            weights.append(model(batch).interpret["expert_weights"].float().cpu().numpy())
    finally:
        model.train(was_training)
    if not weights:
        raise ValueError("no batches to collect expert weights from")
    return np.concatenate(weights, 0)


def _finite_rows(weights: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``weights`` as float ``(N, E)`` and the mask of its rows without NaN / inf; ValueError if none."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[1] != len(names) or not len(names):
        raise ValueError(
            f"weights must be (samples, {len(names)}) with one column per expert name, got {weights.shape}"
        )
    finite = np.isfinite(weights).all(1)
    if not finite.any():
        problem = "no samples" if not len(weights) else f"no sample with finite weights (of {len(weights)})"
        raise ValueError(f"expert weights: {problem}")
    return weights, finite


def expert_weight_summary(weights: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
    """Dataset-level distribution of each expert's weight.

    Args:
        weights: ``(N, E)`` per-sample expert weights (rows sum to 1).
        names: ``E`` expert names.

    Returns:
        One row per expert: ``mean, std, median, q05, q95`` of its weight, ``top1`` (fraction of samples for
        which it has the largest weight) and ``n`` (samples summarised). Samples with a non-finite weight (NaN,
        inf) are left out of every statistic, ``top1`` included.

    Raises:
        ValueError: if ``weights`` is not ``(N, len(names))`` or has no row of finite weights (e.g. ``N = 0``).

    Example:
        >>> expert_weight_summary(np.array([[0.7, 0.3], [0.4, 0.6], [np.nan, 0.5]]), ["a", "b"])["top1"].tolist()
        [0.5, 0.5]
    """
    weights, finite = _finite_rows(weights, names)
    weights = weights[finite]
    top = np.bincount(weights.argmax(1), minlength=len(names)) / len(weights)
    return pd.DataFrame(
        {
            "mean": weights.mean(0),
            "std": weights.std(0),
            "median": np.median(weights, 0),
            "q05": np.quantile(weights, 0.05, axis=0),
            "q95": np.quantile(weights, 0.95, axis=0),
            "top1": top,
            "n": len(weights),
        },
        index=pd.Index(list(names), name="expert"),
    )


def plot_expert_weights(weights: np.ndarray, names: Sequence[str], path: str | Path, title: str | None = None) -> Path:
    """Violin plot of each expert's weight over a dataset (means marked), written atomically as PNG.

    Samples with a non-finite weight are left out.

    Raises:
        ValueError: as :func:`expert_weight_summary`.
    """
    weights, finite = _finite_rows(weights, names)
    weights = weights[finite]
    fig, ax = new_figure((1.6 + 1.2 * len(names), 3.2))
    ax.violinplot([weights[:, i] for i in range(len(names))], showmeans=True, showextrema=True)
    ax.set_xticks(range(1, len(names) + 1), labels=list(names), rotation=20)
    ax.axhline(1.0 / len(names), color="grey", lw=0.8, ls="--", label="uniform")
    ax.set_ylabel("expert weight")
    ax.set_ylim(0, 1)
    ax.set_title(title or f"I2MoE expert weights over {len(weights)} samples")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return Path(path)


def plot_sample_weights(
    weights: np.ndarray,
    names: Sequence[str],
    path: str | Path,
    ids: Sequence[str] | None = None,
    max_samples: int = 16,
) -> Path:
    """Stacked bars of the expert weights of the first ``max_samples`` samples (local interpretation), PNG.

    A sample with a non-finite weight gets no bar.

    Args:
        weights: ``(N, E)`` per-sample expert weights.
        names: ``E`` expert names.
        path: PNG file.
        ids: ``N`` sample ids for the bar labels (default: row numbers).
        max_samples: bars drawn (the first samples).

    Raises:
        ValueError: if ``weights`` is not ``(N, len(names))``, none of the drawn samples has finite weights,
            ``ids`` does not have ``N`` entries, or ``max_samples < 1``.
    """
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    weights = np.asarray(weights, dtype=np.float64)
    if ids is not None and len(ids) != len(weights):
        raise ValueError(f"ids has {len(ids)} entries for {len(weights)} samples of weights")
    weights, finite = _finite_rows(weights[:max_samples], names)
    weights = np.where(finite[:, None], weights, 0.0)
    ids = [str(i) for i in (ids if ids is not None else range(len(weights)))][: len(weights)]
    fig, ax = new_figure((2.0 + 0.45 * len(weights), 3.2))
    bottom = np.zeros(len(weights))
    for i, name in enumerate(names):
        ax.bar(range(len(weights)), weights[:, i], bottom=bottom, label=name)
        bottom += weights[:, i]
    ax.set_xticks(range(len(weights)), labels=ids, rotation=60, fontsize=7)
    ax.set_ylabel("expert weight")
    ax.set_ylim(0, 1)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    ax.set_title("Per-sample expert weights")
    fig.tight_layout()
    save_figure(fig, path)
    return Path(path)
