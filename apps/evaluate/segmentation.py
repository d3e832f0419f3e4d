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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.ndimage import binary_erosion
from scipy.spatial import KDTree

from .bootstrap import bootstrap, weighted_mean
from .io import format_ids

__all__ = [
    "SEG_METRICS",
    "case_metrics",
    "evaluate_segmentation",
    "load_mask",
    "load_pair",
    "pairs_from_csv",
    "pairs_from_folders",
    "surface_distances",
]

SEG_METRICS = ("dice", "iou", "hd95", "assd")
_EXTS = (".nii.gz", ".nii", ".png")


def _strip_ext(name: str) -> str | None:
    for ext in _EXTS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return None


def load_mask(path: str | Path, spacing: Sequence[float] | None = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read an integer label mask from NIfTI (``.nii``/``.nii.gz``) or PNG.

    Args:
        path: mask file.
        spacing: override the spacing (PNG has none: default 1 per axis; NIfTI: the header's pixdim).

    Returns:
        ``(mask, spacing)``: an int64 array (2D or 3D) and one spacing value per axis.

    Raises:
        ValueError: unknown extension, non-integer values (probabilities), negative labels, or colour PNGs.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        while data.ndim > 3 and data.shape[-1] == 1:
            data = data[..., 0]
        file_spacing = tuple(float(s) for s in img.header.get_zooms()[: data.ndim])
    elif name.endswith(".png"):
        from PIL import Image

        with Image.open(path) as im:
            data = np.asarray(im)  # palette PNGs give their indices
        if data.ndim == 3:
            if not all(np.array_equal(data[..., 0], data[..., c]) for c in range(1, min(data.shape[-1], 3))):
                raise ValueError(f"{path}: colour PNG; a mask must be single-channel (grey or palette indices)")
            data = data[..., 0]
        file_spacing = (1.0,) * data.ndim
    else:
        raise ValueError(f"{path}: unsupported mask format (use .nii, .nii.gz or .png)")
    if data.ndim not in (2, 3):
        raise ValueError(f"{path}: expected a 2D or 3D mask, got shape {data.shape}")
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.mod(data, 1) == 0):
        raise ValueError(f"{path}: non-integer mask values (probabilities?); threshold / argmax the prediction first")
    data = data.astype(np.int64)
    if data.min(initial=0) < 0:
        raise ValueError(f"{path}: negative label values")
    sp = tuple(float(s) for s in spacing) if spacing is not None else file_spacing
    if len(sp) != data.ndim:
        raise ValueError(f"{path}: spacing {sp} does not match the mask dimensions {data.shape}")
    return data, sp


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


def pairs_from_folders(pred_dir: str | Path, truth_dir: str | Path) -> pd.DataFrame:
    """Match masks of two folders by file name (without ``.nii.gz``/``.nii``/``.png``).

    Returns:
        A table with columns ``id, prediction, truth``.

    Raises:
        ValueError: a folder is missing or empty, or ids are present on one side only (listed).
    """
    found = []
    for d in (pred_dir, truth_dir):
        d = Path(d)
        if not d.is_dir():
            raise ValueError(f"not a folder: {d}")
        files = {_strip_ext(f.name): f for f in sorted(d.iterdir()) if f.is_file() and _strip_ext(f.name)}
        if not files:
            raise ValueError(f"no .nii, .nii.gz or .png masks in {d}")
        found.append(files)
    pred, truth = found
    only_p, only_t = sorted(set(pred) - set(truth)), sorted(set(truth) - set(pred))
    if only_p or only_t:
        raise ValueError(
            "masks do not match; "
            + "; ".join(
                s
                for s in (
                    f"{len(only_p)} only in {pred_dir}: {format_ids(only_p)}" if only_p else "",
                    f"{len(only_t)} only in {truth_dir}: {format_ids(only_t)}" if only_t else "",
                )
                if s
            )
        )
    ids = sorted(pred)
    return pd.DataFrame({"id": ids, "prediction": [str(pred[i]) for i in ids], "truth": [str(truth[i]) for i in ids]})


def pairs_from_csv(
    path: str | Path, id_column: str = "id", pred_column: str = "prediction", truth_column: str = "truth"
) -> pd.DataFrame:
    """Read a pairs CSV (id, prediction path, truth path, optional subgroup columns).

    Relative paths are resolved against the CSV's folder. Returns the table with columns renamed to
    ``id, prediction, truth`` (other columns kept).

    Raises:
        ValueError: missing columns, duplicate ids, empty paths or missing files (listed).
    """
    path = Path(path)
    df = pd.read_csv(path, dtype={id_column: str})
    miss = [c for c in (id_column, pred_column, truth_column) if c not in df.columns]
    if miss:
        raise ValueError(f"{path}: missing column(s) {miss} (columns: {list(df.columns)})")
    df = df.rename(columns={id_column: "id", pred_column: "prediction", truth_column: "truth"})
    dup = df["id"][df["id"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{path}: duplicate ids {format_ids(dup)}")
    for col in ("prediction", "truth"):
        df[col] = [str(p if Path(str(p)).is_absolute() else path.parent / str(p)) for p in df[col]]
        absent = df.loc[df[col].isna() | ~df[col].map(lambda p: Path(p).is_file()), "id"].tolist()
        if absent:
            raise ValueError(f"{path}: {col} file missing for ids {format_ids(absent)}")
    return df


def load_pair(
    case_id: str,
    pred_path: str | Path,
    truth_path: str | Path,
    spacing: Sequence[float] | None = None,
    tolerance: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read a prediction / truth mask pair and check that shape and spacing agree.

    Returns:
        ``(pred, truth, spacing)``.

    Raises:
        ValueError: naming the case, if the shapes or spacings (relative ``tolerance``) differ.
    """
    pred, sp_p = load_mask(pred_path, spacing)
    truth, sp_t = load_mask(truth_path, spacing)
    if pred.shape != truth.shape:
        raise ValueError(f"case {case_id!r}: prediction shape {pred.shape} != truth shape {truth.shape}")
    if not np.allclose(sp_p, sp_t, rtol=tolerance, atol=0):
        raise ValueError(f"case {case_id!r}: prediction spacing {sp_p} != truth spacing {sp_t}")
    return pred, truth, sp_t


def _run_case(args: tuple) -> tuple[str, dict[int, dict[str, float]], list[int]]:
    case_id, p_path, t_path, spacing, tol, labels = args
    pred, truth, sp = load_pair(case_id, p_path, t_path, spacing, tol)
    present = sorted((set(np.unique(pred).tolist()) | set(np.unique(truth).tolist())) - {0})
    return case_id, case_metrics(pred, truth, labels if labels is not None else present, sp), present


def evaluate_segmentation(
    pairs: pd.DataFrame,
    labels: Sequence[int] | None = None,
    *,
    spacing: Sequence[float] | None = None,
    group_by: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    workers: int = 1,
    spacing_tolerance: float = 1e-4,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate segmentation masks: per-case, per-label metrics and a summary with bootstrap CIs.

    Args:
        pairs: table with ``id, prediction, truth`` (paths) and optional subgroup columns.
        labels: label values to evaluate (default: every non-zero value found in any mask).
        spacing: override the spacing of every mask (e.g. PNG pixel size in mm).
        group_by: column of ``pairs`` defining subgroups.
        n_bootstrap: bootstrap resamples of cases (0 = no CIs).
        seed: bootstrap seed.
        ci: confidence level.
        workers: processes reading and scoring cases in parallel.
        spacing_tolerance: relative tolerance when comparing prediction and truth spacing.
        progress: optional callback ``progress(label, done, total)``.

    Returns:
        ``{"kind": "segmentation", "config", "labels", "per_case", "metrics", "worst"}``: ``per_case`` is a
        table (id, label, dice, iou, hd95, assd, voxel counts, group), ``metrics`` entries
        ``{"task": "segmentation", "metric", "class" (label, None = mean over labels), "group", "value",
        "ci_low", "ci_high", "n", "n_undefined"}`` and ``worst`` the ids sorted by mean Dice (worst first).

    Raises:
        ValueError: masks of different shape or spacing, labels outside ``labels``, unreadable masks.
    """
    if group_by and group_by not in pairs.columns:
        raise ValueError(f"--group-by column {group_by!r} not in the pairs table (columns: {list(pairs.columns)})")
    jobs = [(str(r.id), r.prediction, r.truth, spacing, spacing_tolerance, None) for r in pairs.itertuples()]
    results = []
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            for i, res in enumerate(ex.map(_run_case, jobs, chunksize=max(1, len(jobs) // (4 * workers)))):
                results.append(res)
                if progress:
                    progress("cases", i + 1, len(jobs))
    else:
        for i, job in enumerate(jobs):
            results.append(_run_case(job))
            if progress:
                progress("cases", i + 1, len(jobs))
    found = sorted(set().union(*[set(r[2]) for r in results])) if results else []
    if labels is not None:
        bad = [(r[0], sorted(set(r[2]) - set(labels))) for r in results if set(r[2]) - set(labels)]
        if bad:
            raise ValueError(
                "labels outside the expected set "
                + str(sorted(labels))
                + ": "
                + "; ".join(f"{cid}: {v}" for cid, v in bad[:20])
            )
    use = sorted(int(v) for v in (labels if labels is not None else found))
    rows = []
    for case_id, per_label, _ in results:
        for lab in use:
            m = per_label.get(lab) or {k: float("nan") for k in SEG_METRICS} | {"truth_voxels": 0.0, "pred_voxels": 0.0}
            rows.append({"id": case_id, "label": lab, **m})
    per_case = pd.DataFrame(rows, columns=["id", "label", *SEG_METRICS, "truth_voxels", "pred_voxels"])
    if group_by:
        per_case[group_by] = per_case["id"].map(dict(zip(pairs["id"].astype(str), pairs[group_by].astype(str))))
    mean_dice = per_case.groupby("id", sort=False)["dice"].mean()
    result: dict[str, Any] = {
        "kind": "segmentation",
        "config": {
            "n_bootstrap": n_bootstrap,
            "seed": seed,
            "ci": ci,
            "group_by": group_by,
            "spacing": spacing,
            "ci_method": "percentile bootstrap over cases",
        },
        "labels": use,
        "per_case": per_case,
        "metrics": [],
        "worst": mean_dice.fillna(np.inf).sort_values(kind="stable").index.tolist(),
        "paths": {str(r.id): (r.prediction, r.truth) for r in pairs.itertuples()},
    }
    subsets: list[tuple[str | None, np.ndarray]] = [(None, np.ones(len(per_case), bool))]
    if group_by:
        subsets += [(f"{group_by}={g}", (per_case[group_by] == g).to_numpy()) for g in sorted(set(per_case[group_by]))]
    for group, mask in subsets:
        sub = per_case[mask]
        for lab in [*use, None]:
            if lab is None:
                vals = sub.groupby("id", sort=False)[list(SEG_METRICS)].mean()  # NaN-skipping mean over labels
            else:
                vals = sub[sub["label"] == lab].set_index("id")[list(SEG_METRICS)]
            v = vals.to_numpy(np.float64)
            fn = _summary_fn(v)
            name = f"label {lab if lab is not None else 'mean'}" + (f" [{group}]" if group else "")
            cb = (lambda d, t, _n=name: progress(_n, d, t)) if progress else None
            stats = bootstrap(fn, len(v), None, n_bootstrap, seed, ci, cb)
            absent = (sub[sub["label"] == lab][["truth_voxels", "pred_voxels"]].sum(1) == 0).sum() if lab else 0
            for j, metric in enumerate(SEG_METRICS):
                value, lo, hi = stats[metric]
                n = int(np.isfinite(v[:, j]).sum())
                result["metrics"].append(
                    {
                        "task": "segmentation",
                        "metric": metric,
                        "class": lab,
                        "group": group,
                        "value": value,
                        "ci_low": lo,
                        "ci_high": hi,
                        "n": n,
                        "n_undefined": int(len(v) - n - absent),
                    }
                )
    return result


def _summary_fn(values: np.ndarray) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    finite = np.isfinite(values)

    def fn(w: np.ndarray) -> dict[str, np.ndarray]:
        return {m: weighted_mean(w[:, finite[:, j]], values[finite[:, j], j]) for j, m in enumerate(SEG_METRICS)}

    return fn
