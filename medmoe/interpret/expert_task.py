"""Expert-task assignment P(E | T) of the M4oE MToE (papers/m4oe_paper.txt, Sec. 3.3): per sample, over a dataset.

The MToE combine weights ``(b, tokens, E, T)`` give the per-sample joint ``pi[M, E, T]``
(:func:`medmoe.losses.modality_expert_task_joint`). Summed over the modalities the sample had, and renormalised,
they give its expert-task joint ``P(E, T)`` ``(E, T)``; conditioning on the task gives P(E | T): how task ``T``'s
slots spread over the experts. Uniform is ``1 / E``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .heatmap import diverging_heatmap

__all__ = ["dataset_expert_task", "expert_task_joint", "expert_task_summary", "expert_task_table", "plot_expert_task"]


def expert_task_joint(joints: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """Per-sample P(E, T) ``(n, E, T)`` from per-sample ``pi[M, E, T]``, over the present modalities only.

    Absent modalities' (placeholder) tokens are dropped and the rest renormalised to sum to 1, as
    ``M4oE.modality_task_joint()`` does for P(M, T). A sample with no modality present gets NaN.

    Args:
        joints: ``(n, M, E, T)``, e.g. ``modality_expert_task_joint(model.mtoe.combine, M)``.
        present: ``(n, M)`` bool modality mask; None = all present.

    Raises:
        ValueError: if ``joints`` is not 4-D, finite and non-negative, or ``present`` is not ``(n, M)``.

    Example:
        >>> pi = np.full((1, 2, 2, 1), 0.25)  # 2 modalities, 2 experts, 1 task
        >>> expert_task_joint(pi, np.array([[True, False]]))[0, :, 0].tolist()
        [0.5, 0.5]
    """
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 4 or not np.isfinite(joints).all() or (joints < 0).any():
        raise ValueError(f"joints must be finite, non-negative (samples, M, E, T), got shape {joints.shape}")
    mask = np.ones(joints.shape[:2], bool) if present is None else np.asarray(present, bool)
    if mask.shape != joints.shape[:2]:
        raise ValueError(f"present must be (samples, M) = {joints.shape[:2]}, got {mask.shape}")
    p_et = (joints * mask[:, :, None, None]).sum(1)  # n E T
    total = p_et.sum((1, 2), keepdims=True)
    out = np.full_like(p_et, np.nan)
    np.divide(p_et, total, out=out, where=total > 0)
    return out


def _check(joints: np.ndarray, n: int | None, experts: Sequence[str], tasks: Sequence[str]) -> np.ndarray:
    joints = np.asarray(joints, dtype=np.float64)
    expected = (joints.shape[0] if n is None and joints.ndim == 3 else n, len(experts), len(tasks))
    if joints.ndim != 3 or joints.shape != expected:
        raise ValueError(f"joints must be (samples, experts, tasks) = {expected}, got {joints.shape}")
    if (joints[np.isfinite(joints)] < 0).any():
        raise ValueError("joints must be non-negative")
    return joints


def _conditionals(joints: np.ndarray) -> np.ndarray:
    """Per-sample P(E | T) ``(n, E, T)``; NaN for a sample whose joint is NaN or 0."""
    total = joints.sum(1, keepdims=True)
    out = np.full_like(joints, np.nan)
    np.divide(joints, total, out=out, where=np.isfinite(total) & (total > 0))
    return out


def _names(experts: Sequence[str] | None, joints: np.ndarray) -> list[str]:
    num_e = np.asarray(joints).shape[1] if np.asarray(joints).ndim == 3 else 0
    return [f"expert_{e}" for e in range(num_e)] if experts is None else list(experts)


def expert_task_table(
    ids: Sequence[str], joints: np.ndarray, tasks: Sequence[str], experts: Sequence[str] | None = None
) -> pd.DataFrame:
    """Long table: one row per (sample, task) with P(E | T) per expert column (``expert_<e>`` by default).

    A row sums to 1; a sample with no modality present (NaN joint) has NaN in every expert column.

    Args:
        ids: ``n`` sample ids.
        joints: ``(n, E, T)`` per-sample P(E, T) (:func:`expert_task_joint`).
        tasks: ``T`` task names.
        experts: ``E`` expert names; default ``expert_0 ... expert_{E-1}``.

    Raises:
        ValueError: if ``joints`` is not ``(len(ids), len(experts), len(tasks))`` or has negative values.

    Example:
        >>> joints = np.array([[[0.3, 0.1], [0.3, 0.3]]])  # 1 sample, 2 experts, 2 tasks
        >>> expert_task_table(["s1"], joints, ["a", "b"]).round(2).values.tolist()
        [['s1', 'a', 0.5, 0.5], ['s1', 'b', 0.25, 0.75]]
    """
    names = _names(experts, joints)
    cond = _conditionals(_check(joints, len(ids), names, tasks))
    rows = [
        {"id": sid, "task": task, **{e: cond[i, j, k] for j, e in enumerate(names)}}
        for i, sid in enumerate(ids)
        for k, task in enumerate(tasks)
    ]
    return pd.DataFrame(rows, columns=["id", "task", *names])


def dataset_expert_task(joints: np.ndarray) -> np.ndarray:
    """Dataset-level P(E | T) ``(T, E)``: the mean of the per-sample P(E | T) over the samples with a value.

    Every sample weighs the same; samples with a NaN joint (no modality present) are left out. Rows sum to 1
    (NaN when no sample has a value).

    Example:
        >>> joints = np.array([[[0.3, 0.1], [0.3, 0.3]], [[0.1, 0.2], [0.3, 0.4]]])
        >>> dataset_expert_task(joints).round(3).tolist()
        [[0.375, 0.625], [0.292, 0.708]]
    """
    joints = np.asarray(joints, dtype=np.float64)
    _check(joints, None, range(joints.shape[1]) if joints.ndim == 3 else (), range(joints.shape[-1]))
    cond = _conditionals(joints)
    valid = np.isfinite(cond).all((1, 2))
    if not valid.any():
        return np.full(joints.shape[:0:-1], np.nan)
    return cond[valid].mean(0).T


def expert_task_summary(joints: np.ndarray, tasks: Sequence[str], experts: Sequence[str] | None = None) -> pd.DataFrame:
    """Dataset-level P(E | T) (:func:`dataset_expert_task`) as a long table.

    Returns:
        One row per (task, expert): ``task``, ``expert``, ``probability`` and ``n`` (samples averaged over).
    """
    names = _names(experts, joints)
    joints = _check(joints, None, names, tasks)
    values = dataset_expert_task(joints)
    n = int(np.isfinite(_conditionals(joints)).all((1, 2)).sum())
    rows = [
        {"task": task, "expert": e, "probability": values[k, j], "n": n}
        for k, task in enumerate(tasks)
        for j, e in enumerate(names)
    ]
    return pd.DataFrame(rows, columns=["task", "expert", "probability", "n"])


def plot_expert_task(
    values: np.ndarray,
    tasks: Sequence[str],
    path: str | Path,
    experts: Sequence[str] | None = None,
    n: int | None = None,
) -> Path:
    """Heat map of dataset-level P(E | T) (tasks x experts), written atomically as PNG.

    Colours diverge from the uniform value ``1 / E`` (white): red = the task's slots use that expert more than
    uniform. The scale spans at least ``1/E +- 0.1``.

    Args:
        values: ``(T, E)`` from :func:`dataset_expert_task`.
        tasks: ``T`` task names.
        path: PNG file.
        experts: ``E`` expert labels; default their indices.
        n: samples averaged over, for the title.

    Raises:
        ValueError: if ``values`` is not ``(len(tasks), len(experts))``.
    """
    values = np.asarray(values, dtype=np.float64)
    labels = [str(e) for e in range(values.shape[-1])] if experts is None else list(experts)
    if values.ndim != 2 or values.shape != (len(tasks), len(labels)) or not values.size:
        raise ValueError(f"values must be (tasks, experts) = ({len(tasks)}, {len(labels)}), got {values.shape}")
    uniform = 1.0 / len(labels)
    title = "MToE expert-task assignment P(expert | task)"
    if n is not None:
        title += f"\nmean over {n} samples"
    return diverging_heatmap(
        values,
        list(tasks),
        labels,
        path,
        title,
        uniform,
        colorbar_label=f"P(E | T); white = 1/E = {uniform:.3f}",
        xlabel="expert",
        decimals=3,
    )
