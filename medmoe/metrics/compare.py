"""Compare two models' predictions on the same cases: per task (and subgroup) the paired difference.

Reads the CSV conventions of :mod:`medmoe.metrics.tables` and the bundles' own ``predictions.csv`` (labels in
``<task>_label``, -1 = missing) and ``segmentation.csv`` (one row per case, ``dice_<region>`` columns). Both
tables must hold the same ids; a case missing from either side is an error that lists it.

Classification: for a binary task the AUROC difference of the positive class; for a multi-class task one
one-vs-rest difference per class. Segmentation: the mean per-case difference of every ``dice_*`` / ``iou_*``
column. Each comes with its paired bootstrap interval, a p-value (DeLong / Wilcoxon) and a verdict
(:func:`medmoe.metrics.paired.verdict`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..utils.atomic import atomic_write_csv, atomic_write_text
from .classification import roc_curve
from .paired import paired_auroc_difference, paired_mean_difference
from .plots import plot_roc_pair, safe_name
from .tables import discover_tasks, format_ids, join_predictions

__all__ = ["compare_classification", "compare_segmentation", "comparison_report"]


def _labels_from(df: pd.DataFrame) -> pd.DataFrame:
    """Label columns ``T`` from a bundle's ``T_label`` columns (-1 -> missing); other columns unchanged."""
    renamed = {c: c[: -len("_label")] for c in df.columns if c.endswith("_label")}
    out = df.rename(columns=renamed)
    for c in renamed.values():
        out[c] = out[c].where(out[c] >= 0)
    return out


def _aligned(df_a: pd.DataFrame, df_b: pd.DataFrame, id_column: str, names: tuple[str, str]) -> pd.DataFrame:
    """``df_b`` reordered to the ids of ``df_a``; both must hold exactly the same ids."""
    ids_a = join_predictions(df_a, None, id_column)[id_column]
    ids_b = join_predictions(df_b, None, id_column)[id_column]
    only_a, only_b = sorted(set(ids_a) - set(ids_b)), sorted(set(ids_b) - set(ids_a))
    if only_a or only_b:
        raise ValueError(
            f"the two prediction sets must cover the same cases: only in {names[0]}: {format_ids(only_a) or '-'}; "
            f"only in {names[1]}: {format_ids(only_b) or '-'}"
        )
    return df_b.assign(**{id_column: ids_b.values}).set_index(id_column).loc[ids_a.values].reset_index()


def compare_classification(
    df_a: pd.DataFrame,
    df_b: pd.DataFrame,
    df_labels: pd.DataFrame | None = None,
    tasks: Sequence[str] | None = None,
    id_column: str = "id",
    group_by: str | None = None,
    names: tuple[str, str] = ("A", "B"),
    n_resamples: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Paired AUROC differences ``A - B`` per task / class (and per subgroup of ``group_by``).

    Args:
        df_a: predictions of model A (``<task>_prob_<k>`` or ``<task>_score`` columns); may hold the labels.
        df_b: predictions of model B on the same ids.
        df_labels: labels (``<task>`` columns); default: the labels in ``df_a`` (``<task>`` or a bundle's
            ``<task>_label``).
        tasks: tasks to compare (default: every task with predictions on both sides and labels).
        id_column: the id column of every table.
        group_by: optional column (in the labels or ``df_a``) whose values are compared separately too.
        names: the two models' names, used in verdicts and plots.
        n_resamples, seed, ci: the paired bootstrap.

    Returns:
        ``{"names", "rows": [{"task", "class", "group", **paired_auroc_difference(...)}], "notes", "curves"}``;
        ``curves[(task, class)] = {name: (fpr, tpr)}`` on all cases.

    Raises:
        ValueError: different ids, missing columns, or a labels table that disagrees with ``df_a``'s labels.
    """
    b = _aligned(df_a, df_b, id_column, names)
    if df_labels is None:  # labels echoed into A's predictions (a bundle's predictions.csv: <task>_label)
        table = _labels_from(join_predictions(df_a, None, id_column))
    else:
        table = join_predictions(df_a, _labels_from(df_labels), id_column, (f"predictions of {names[0]}", "labels"))
    shared = [c for c in df_a.columns if c in set(b.columns)]
    specs = discover_tasks(shared, list(table.columns), tasks)  # only tasks both models predict
    groups = [None] if group_by is None else [None, *sorted(table[group_by].dropna().astype(str).unique())]
    if group_by is not None and group_by not in table.columns:
        raise ValueError(f"--group-by column {group_by!r} is in neither the labels nor the predictions of {names[0]}")
    rows, notes, curves = [], [], {}
    for spec in specs:
        if spec.kind == "multilabel":
            notes.append(f"{spec.name}: multi-label tasks are not compared (compare each label as a binary task)")
            continue
        y = table[spec.label_columns[0]].to_numpy(np.float64)
        classes = ["1"] if spec.kind == "binary" else spec.classes
        for j, cls in enumerate(classes):
            col = spec.score_columns[j]
            sa, sb = table[col].to_numpy(np.float64), b[col].to_numpy(np.float64)
            target = 1 if spec.kind == "binary" else int(cls)
            for group in groups:
                keep = np.isfinite(y) & np.isfinite(sa) & np.isfinite(sb)
                if group is not None:
                    keep &= table[group_by].astype(str).to_numpy() == group
                pos = y[keep] == target
                where = f"{spec.name}" + ("" if spec.kind == "binary" else f" class {cls}")
                where += "" if group is None else f" ({group_by} = {group})"
                if pos.all() or not pos.any():
                    notes.append(f"{where}: one class only among {int(keep.sum())} cases, not compared")
                    continue
                res = paired_auroc_difference(pos, sa[keep], sb[keep], n_resamples, seed, ci, names)
                rows.append({"task": spec.name, "class": None if spec.kind == "binary" else cls, "group": group,
                             **res})  # fmt: skip
                if group is None:
                    curves[(spec.name, rows[-1]["class"])] = {
                        names[0]: roc_curve(sa[keep], pos)[:2],
                        names[1]: roc_curve(sb[keep], pos)[:2],
                    }
    return {"names": list(names), "rows": rows, "notes": notes, "curves": curves}


def compare_segmentation(
    df_a: pd.DataFrame,
    df_b: pd.DataFrame,
    id_column: str = "id",
    metrics: Sequence[str] | None = None,
    names: tuple[str, str] = ("A", "B"),
    n_resamples: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Paired per-case differences ``A - B`` of segmentation metrics (one row per case in each table).

    Args:
        df_a: per-case metrics of model A (e.g. a bundle's ``segmentation.csv``).
        df_b: the same for model B, same ids.
        id_column: the id column.
        metrics: columns to compare (default: every ``dice_*`` and ``iou_*`` column present in both).
        names, n_resamples, seed, ci: as :func:`compare_classification`.

    Returns:
        ``{"names", "rows": [{"metric", **paired_mean_difference(...)}], "notes"}``.
    """
    b = _aligned(df_a, df_b, id_column, names)
    a = join_predictions(df_a, None, id_column)
    if metrics is None:
        metrics = [c for c in a.columns if c.startswith(("dice_", "iou_")) and c in b.columns]
    missing = [c for c in metrics if c not in a.columns or c not in b.columns]
    if missing or not metrics:
        raise ValueError(f"segmentation metric column(s) {missing or '(none found)'} must be in both tables")
    rows = []
    for m in metrics:
        res = paired_mean_difference(a[m].to_numpy(np.float64), b[m].to_numpy(np.float64), n_resamples, seed, ci,
                                     names)  # fmt: skip
        rows.append({"metric": m, **res})
    notes = [f"{r['metric']}: {r['n_dropped']} case(s) without a value on one side left out" for r in rows
             if r["n_dropped"]]  # fmt: skip
    return {"names": list(names), "rows": rows, "notes": notes}


def _line(label: str, r: dict, a: str, b: str, ci: float) -> str:
    what = (f"{a} {r['auroc_a']:.3f} vs {b} {r['auroc_b']:.3f}" if "auroc_a" in r
            else f"{a} {r['mean_a']:.3f} vs {b} {r['mean_b']:.3f}")  # fmt: skip
    return (
        f"{label}: {what}, difference {r['difference']:+.3f} ({ci:.0%} CI {r['ci_low']:+.3f} to {r['ci_high']:+.3f}), "
        f"p = {r['p_value']:.3g}, n = {r['n']}: {r['verdict']}"
    )


def comparison_report(
    classification: dict | None, segmentation: dict | None, out_dir: str | Path, ci: float = 0.95
) -> dict[str, Path]:
    """Write ``comparison.csv`` (one row per difference), ``comparison.md`` (one line each) and ROC plots.

    Returns:
        ``{"csv", "report", "plots": [paths]}``; the report's lines are also in ``report_lines``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines, table, plots = [], [], []
    for result, kind in ((classification, "auroc"), (segmentation, "segmentation")):
        if not result:
            continue
        a, b = result["names"]
        for r in result["rows"]:
            if kind == "auroc":
                label = r["task"] + ("" if r["class"] is None else f" class {r['class']}")
                label += "" if r["group"] is None else f" [{r['group']}]"
                label += " AUROC"
            else:
                label = r["metric"]
            lines.append(_line(label, r, a, b, ci))
            table.append({"comparison": label, "model_a": a, "model_b": b, **r})
        lines += [f"note: {n}" for n in result["notes"]]
        for (task, cls), curves in result.get("curves", {}).items():
            name = safe_name(task if cls is None else f"{task}_class_{cls}")
            plots.append(plot_roc_pair(task if cls is None else f"{task} class {cls}", curves, out / f"roc_{name}.png"))
    csv_path = atomic_write_csv(out / "comparison.csv", pd.DataFrame(table), index=False)
    report = atomic_write_text(
        out / "comparison.md", "# Paired comparison\n\n" + "\n".join(f"- {s}" for s in lines) + "\n"
    )
    return {"csv": csv_path, "report": report, "plots": plots, "report_lines": lines}
