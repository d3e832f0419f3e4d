"""Segmentation evaluation: per-label Dice, IoU, Hausdorff-95 and average symmetric surface distance.

Distances are in physical units (the image spacing) and follow MONAI's definitions exactly: surface voxels are
``mask XOR binary_erosion(mask)`` inside the bounding box of ``pred | truth`` (margin 1), directed distances go
from each surface voxel to the nearest surface voxel of the other mask,

- ``hd95 = max(P95(d(pred -> truth)), P95(d(truth -> pred)))`` (``HausdorffDistanceMetric(percentile=95)``),
- ``assd = mean(concat(d(pred -> truth), d(truth -> pred)))`` (``SurfaceDistanceMetric(symmetric=True)``).

Empty masks: truth and prediction both empty for a label -> every metric NaN (label absent, not counted);
exactly one empty -> Dice = IoU = 0 and the distances NaN (undefined), counted in ``n_undefined``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.ndimage import binary_erosion
from scipy.spatial import KDTree

from .bootstrap import weighted_mean

__all__ = ["SEG_METRICS", "case_metrics", "summary_metric_fn", "surface_distances"]

SEG_METRICS = ("dice", "iou", "hd95", "assd")


def _edges(mask: np.ndarray) -> np.ndarray:
    return binary_erosion(mask) ^ mask


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances ``pred -> truth`` and ``truth -> pred`` of two non-empty boolean masks.

    Args:
        pred: boolean mask.
        truth: boolean mask of the same shape.
        spacing: physical size of a voxel along each axis.

    Returns:
        ``(d_pred_to_truth, d_truth_to_pred)``: one distance per surface voxel of each mask.
    """
    union = pred | truth
    box = []
    for ax in range(union.ndim):
        hit = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != ax)))
        box.append(slice(max(hit[0] - 1, 0), min(hit[-1] + 2, union.shape[ax])))
    box_t = tuple(box)
    scale = np.asarray(spacing, np.float64)
    ep, et = _edges(pred[box_t]), _edges(truth[box_t])
    cp, ct = np.argwhere(ep) * scale, np.argwhere(et) * scale
    d_pt = KDTree(ct, leafsize=32).query(cp, k=1)[0]
    d_tp = KDTree(cp, leafsize=32).query(ct, k=1)[0]
    return d_pt, d_tp


def case_metrics(
    pred: np.ndarray, truth: np.ndarray, labels: Sequence[int], spacing: Sequence[float] | None = None
) -> dict[int, dict[str, float]]:
    """Dice, IoU, HD95 and ASSD of one case for each label.

    Args:
        pred: integer label mask (2D or 3D).
        truth: integer label mask of the same shape.
        labels: label values to evaluate (0 = background is usually left out).
        spacing: voxel spacing per axis (default 1).

    Returns:
        ``{label: {"dice", "iou", "hd95", "assd", "truth_voxels", "pred_voxels"}}``.

    Raises:
        ValueError: if the shapes differ.

    Example:
        >>> t = np.zeros((8, 8), int); t[2:6, 2:6] = 1
        >>> p = np.zeros((8, 8), int); p[2:6, 3:7] = 1
        >>> case_metrics(p, t, [1])[1]["dice"]
        0.75
    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {truth.shape}")
    spacing = tuple(spacing) if spacing is not None else (1.0,) * pred.ndim
    out: dict[int, dict[str, float]] = {}
    for lab in labels:
        p, t = pred == lab, truth == lab
        n_p, n_t = int(p.sum()), int(t.sum())
        inter = int(np.count_nonzero(p & t))
        row = {"truth_voxels": float(n_t), "pred_voxels": float(n_p)}
        if n_p == 0 and n_t == 0:
            row.update(dict.fromkeys(SEG_METRICS, float("nan")))
        elif n_p == 0 or n_t == 0:
            row.update({"dice": 0.0, "iou": 0.0, "hd95": float("nan"), "assd": float("nan")})
        else:
            d_pt, d_tp = surface_distances(p, t, spacing)
            row.update(
                {
                    "dice": 2.0 * inter / (n_p + n_t),
                    "iou": inter / (n_p + n_t - inter),
                    "hd95": float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95))),
                    "assd": float(np.concatenate([d_pt, d_tp]).mean()),
                }
            )
        out[int(lab)] = row
    return out


def summary_metric_fn(values: np.ndarray) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """The weighted mean over cases of each of :data:`SEG_METRICS`, NaN cases skipped (for :func:`.bootstrap`).

    Args:
        values: ``(N, 4)`` per-case dice, iou, hd95, assd (NaN = undefined / absent).

    Returns:
        ``fn(W) -> {metric: (R,) weighted means}``.
    """
    finite = np.isfinite(values)

    def fn(w: np.ndarray) -> dict[str, np.ndarray]:
        return {m: weighted_mean(w[:, finite[:, j]], values[finite[:, j], j]) for j, m in enumerate(SEG_METRICS)}

    return fn
