"""Segmentation evaluation of a set of mask pairs: per-case metrics and a summary with bootstrap CIs.

Metric definitions (Dice, IoU, HD95, ASSD; empty masks) are in :mod:`.segmentation`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from .bootstrap import bootstrap
from .masks import load_pair
from .segmentation import SEG_METRICS, case_metrics, summary_metric_fn

__all__ = ["evaluate_segmentation"]


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
            fn = summary_metric_fn(v)
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
