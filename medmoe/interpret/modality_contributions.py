"""Modality contributions P(M | T) (M4oE, Sec. 3.3): per sample, over a dataset, and as a plot.

Inputs are per-sample joints ``P(M, T)`` ``(n, M, T)`` as returned by ``M4oE.modality_task_joint()``: an absent
modality has joint 0 for every task, a present one a positive joint (every token spreads a combine weight of 1),
so a modality is *present* in a sample exactly where its joint sums to more than 0 over tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .heatmap import diverging_heatmap

__all__ = [
    "contributions_summary",
    "contributions_table",
    "dataset_contributions",
    "modality_presence",
    "plot_contributions",
]


def _check_joints(joints: np.ndarray, ids: Sequence[str] | None, modalities: Sequence[str], tasks: Sequence[str]):
    joints = np.asarray(joints, dtype=np.float64)
    n = joints.shape[0] if joints.ndim == 3 else -1
    expected = (len(ids) if ids is not None else n, len(modalities), len(tasks))
    if joints.ndim != 3 or joints.shape != expected:
        raise ValueError(
            f"joints must be (samples, modalities, tasks) = {expected} to match the given "
            f"{'ids, ' if ids is not None else ''}modalities and tasks, got {joints.shape}"
        )
    if not np.isfinite(joints).all() or (joints < 0).any():
        raise ValueError("joints must be finite and non-negative")
    return joints


def modality_presence(joints: np.ndarray) -> np.ndarray:
    """Which modalities each sample had, ``(n, M)`` bool: those whose joint ``P(M, T)`` is positive for some task.

    Example:
        >>> modality_presence(np.array([[[0.3, 0.2], [0.0, 0.0], [0.25, 0.25]]])).tolist()
        [[True, False, True]]
    """
    return np.asarray(joints, dtype=np.float64).sum(-1) > 0


def _sample_conditionals(joints: np.ndarray) -> np.ndarray:
    """Per-sample P(M | T) ``(n, M, T)``; NaN for a sample with no modality present."""
    total = joints.sum(1, keepdims=True)  # n 1 T
    out = np.full_like(joints, np.nan)
    np.divide(joints, total, out=out, where=total > 0)
    return out


def dataset_contributions(joints: np.ndarray, max_iter: int = 1000, tol: float = 1e-12) -> np.ndarray:
    """Dataset-level P(M | T), each modality pooled only over the samples in which it is present.

    A sample's P_i(M | T) is read as the dataset-level P(M | T) restricted to the views ``S_i`` it had and
    renormalised (the model drops an absent view's share the same way): ``P_i(M | T) = p_M / sum_{j in S_i} p_j``.
    ``p`` (per task) is the maximum-likelihood fit of this choice model (Luce), found by the MM iteration
    ``p_M <- sum_i P_i(M | T) / sum_{i: M in S_i} (1 / sum_{j in S_i} p_j)`` over the samples with at least two
    views (Hunter, 2004), normalised to sum to 1. With every modality present in every sample this is exactly the
    mean of the per-sample P(M | T). A missing view therefore neither counts as 0 for itself nor inflates the
    others, and a sample with a single view (P = 1 by construction) carries no information and is ignored. A
    modality never present together with another one gets NaN (with a single modality, 1). Values of modalities
    that are never present in the same sample as each other, directly or through others, are not comparable.

    Args:
        joints: ``(n, M, T)`` per-sample P(M, T) (absent modalities 0).
        max_iter, tol: iteration limit and convergence tolerance (largest change of any value).

    Returns:
        ``(T, M)``: each row sums to 1 over the modalities with a value.

    Raises:
        ValueError: if ``joints`` is not 3-D or holds negative or non-finite values.

    Example:
        >>> joints = np.array([[[0.3, 0.2], [0.2, 0.3]], [[0.5, 0.5], [0.0, 0.0]]])  # sample 2 lacks modality 2
        >>> dataset_contributions(joints).round(2).tolist()  # sample 2 (one view) says nothing about preference
        [[0.6, 0.4], [0.4, 0.6]]
    """
    joints = np.asarray(joints, dtype=np.float64)
    _check_joints(joints, None, range(joints.shape[1]) if joints.ndim == 3 else (), range(joints.shape[-1]))
    num_m, num_t = joints.shape[1:]
    present = modality_presence(joints)  # n M
    if num_m == 1:
        return np.where(present.any(), 1.0, np.nan) * np.ones((num_t, 1))
    compared = present.sum(1) >= 2
    mask = present[compared].astype(np.float64)  # n' M
    wins = np.nan_to_num(_sample_conditionals(joints[compared])).sum(0)  # M T
    seen = mask.sum(0) > 0  # M
    p = np.where(seen[:, None], 1.0 / max(int(seen.sum()), 1), 0.0) * np.ones((1, num_t))  # M T
    for _ in range(max_iter):
        denominator = mask.T @ (1.0 / np.clip(mask @ p, 1e-300, None))  # M T
        update = np.divide(wins, denominator, out=np.zeros_like(p), where=seen[:, None])
        update /= np.clip(update.sum(0, keepdims=True), 1e-300, None)
        change, p = float(np.abs(update - p).max(initial=0.0)), update
        if change < tol:
            break
    return np.where(seen[:, None], p, np.nan).T


def contributions_summary(joints: np.ndarray, modalities: Sequence[str], tasks: Sequence[str]) -> pd.DataFrame:
    """Dataset-level P(M | T) (:func:`dataset_contributions`) as a long table with presence counts.

    Returns:
        One row per (task, modality): ``task``, ``modality``, ``contribution`` (P(M | T)), ``n_present`` (samples
        in which the modality is present) and ``n_compared`` (those of them with at least one other modality
        present: the samples the value is estimated from).

    Raises:
        ValueError: if ``joints`` is not ``(n, len(modalities), len(tasks))``.
    """
    joints = _check_joints(joints, None, modalities, tasks)
    present = modality_presence(joints)
    contrib, counts = dataset_contributions(joints), present.sum(0)
    compared = present[present.sum(1) >= 2].sum(0) if len(modalities) > 1 else counts
    rows = [
        {
            "task": task,
            "modality": m,
            "contribution": contrib[k, j],
            "n_present": int(counts[j]),
            "n_compared": int(compared[j]),
        }
        for k, task in enumerate(tasks)
        for j, m in enumerate(modalities)
    ]
    return pd.DataFrame(rows, columns=["task", "modality", "contribution", "n_present", "n_compared"])


def contributions_table(
    ids: Sequence[str], joints: np.ndarray, modalities: Sequence[str], tasks: Sequence[str]
) -> pd.DataFrame:
    """Long table: one row per (sample, task) with P(M | T) per modality column.

    A row sums to 1 over the modalities; an absent modality has 0. A sample with no modality present has NaN in
    every modality column.

    Raises:
        ValueError: if ``joints`` is not ``(len(ids), len(modalities), len(tasks))``, or not finite and
            non-negative.

    Example:
        >>> joints = np.array([[[0.3, 0.2], [0.2, 0.3]]])
        >>> contributions_table(["s1"], joints, ["cc", "mlo"], ["risk", "density"]).round(2).values.tolist()
        [['s1', 'risk', 0.6, 0.4], ['s1', 'density', 0.4, 0.6]]
    """
    joints = _check_joints(joints, ids, modalities, tasks)
    cond = _sample_conditionals(joints)  # n M T
    rows = [
        {"id": sid, "task": task, **{m: cond[i, j, k] for j, m in enumerate(modalities)}}
        for i, sid in enumerate(ids)
        for k, task in enumerate(tasks)
    ]
    return pd.DataFrame(rows, columns=["id", "task", *modalities])


def plot_contributions(
    contrib: np.ndarray,
    modalities: Sequence[str],
    tasks: Sequence[str],
    path: str | Path,
    counts: Sequence[int] | None = None,
) -> Path:
    """Heat map of dataset-level P(M | T) (tasks x modalities), written atomically as PNG.

    Colours diverge from the uniform value ``1 / M`` (white): red = the task leans on that modality more than
    uniform, blue = less. The scale spans at least ``1/M +- 0.1``, so differences of a few thousandths stay pale.
    With ``counts`` (samples in which each modality is present, e.g. ``n_present`` of :func:`contributions_summary`)
    the modality labels show ``n=...``. With a
    single task the title says that P(M | T) is uniform by construction.

    Raises:
        ValueError: if ``contrib`` is not ``(len(tasks), len(modalities))`` or ``counts`` has another length.
    """
    contrib = np.asarray(contrib, dtype=np.float64)
    if contrib.shape != (len(tasks), len(modalities)) or not contrib.size:
        raise ValueError(
            f"contrib must be non-empty (tasks, modalities) = ({len(tasks)}, {len(modalities)}), got {contrib.shape}"
        )
    labels = list(modalities)
    if counts is not None:
        if len(counts) != len(modalities):
            raise ValueError(f"counts needs one entry per modality ({len(modalities)}), got {len(counts)}")
        labels = [f"{m}\n(n={int(c)})" for m, c in zip(modalities, counts, strict=True)]
    uniform = 1.0 / len(modalities)
    title = "P(modality | task) over the dataset"
    if counts is not None:
        title += "\nn = samples with the modality present"
    if len(tasks) == 1:
        title += "\none task: uniform by construction"
    return diverging_heatmap(
        contrib,
        list(tasks),
        labels,
        path,
        title,
        uniform,
        colorbar_label=f"P(M | T); white = 1/M = {uniform:.3f}",
    )
