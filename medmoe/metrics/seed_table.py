"""Model vs baseline over k seeds: the mean and spread of each, and the paired difference on the same cases.

Each model is trained ``k`` times (seeds ``0..k-1``) and scored on one test split. Two readings are reported,
because they answer different questions:

* **over seeds** - every seed's AUROC (or mean Dice) of each model, and the seed-matched difference
  ``model_s - baseline_s``: mean and standard deviation over the ``k`` seeds (the papers' "mean +- sd over 3
  seeds"). The spread says how much a single training run can be trusted.
* **on the cases** - the ``k`` seeds' predictions of each model averaged per case (a seed ensemble), then the
  paired comparison of :mod:`medmoe.metrics.compare`: the difference with its paired bootstrap interval and
  DeLong's p-value (Wilcoxon for Dice), and the verdict ("no evidence of a difference" when the interval covers 0).
  The interval says whether the test split is large enough to tell the two apart.

Rows follow :func:`~medmoe.metrics.compare_classification`: one per binary task, one per class (one-vs-rest) of a
multi-class task; segmentation rows one per ``dice_*`` column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .compare import compare_classification, compare_segmentation, comparison_report

__all__ = ["average_over_seeds", "seed_comparison", "seed_table_markdown"]


def average_over_seeds(frames: Sequence[pd.DataFrame], id_column: str) -> pd.DataFrame:
    """Per-case mean of the numeric prediction / metric columns over seeds (a seed ensemble); labels kept as is.

    Raises:
        ValueError: if the seeds' tables do not hold the same ids, or disagree on a label column.
    """
    if not frames:
        raise ValueError("no prediction tables to average")
    first = frames[0].set_index(id_column)
    for i, df in enumerate(frames[1:], 1):
        other = df.set_index(id_column)
        if set(other.index) != set(first.index):
            raise ValueError(f"seed run {i} scored other cases than seed run 0 ({len(other)} vs {len(first)} ids)")
    stacked = [df.set_index(id_column).loc[first.index] for df in frames]
    out = first.copy()
    for col in first.columns:
        if col.endswith("_label") or not pd.api.types.is_numeric_dtype(first[col]):
            if any(not s[col].equals(first[col]) for s in stacked[1:]):
                raise ValueError(f"column {col!r} differs between seed runs; the runs must share one test split")
            continue
        out[col] = np.mean([s[col].to_numpy(np.float64) for s in stacked], axis=0)
    return out.reset_index()


def _key(row: dict) -> str:
    if "metric" in row:
        return row["metric"]
    return row["task"] + ("" if row["class"] is None else f" class {row['class']}")


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def seed_comparison(
    model: Sequence[pd.DataFrame],
    baseline: Sequence[pd.DataFrame],
    id_column: str,
    names: tuple[str, str],
    segmentation: tuple[Sequence[pd.DataFrame], Sequence[pd.DataFrame]] | None = None,
    n_resamples: int = 2000,
    ci: float = 0.95,
    report_dir: str | Path | None = None,
) -> list[dict]:
    """Model vs baseline over seed-matched runs: per row the seeds' values and the paired test on the ensemble.

    Args:
        model: the model's ``predictions.csv`` tables, one per seed (with ``<task>_label`` columns).
        baseline: the baseline's, the same seeds in the same order.
        id_column: the id column of the tables.
        names: ``(model name, baseline name)``.
        segmentation: optional ``(model tables, baseline tables)`` of per-case ``segmentation.csv``, per seed.
        n_resamples, ci: the paired bootstrap of the ensemble comparison.
        report_dir: where to write the ensembles' :func:`~medmoe.metrics.comparison_report` (``comparison.csv``,
            ``comparison.md`` and one plot per task / class with both models' ROC curves); None: nothing written.

    Returns:
        one dict per row: ``row``, ``kind`` ("auroc" / "segmentation"), ``model_seeds`` / ``baseline_seeds`` (values per
        seed), ``model_mean``, ``model_sd``, ``baseline_mean``, ``baseline_sd``, ``difference_mean``,
        ``difference_sd`` (seed-matched), and of the seed ensembles ``ensemble_model``, ``ensemble_baseline``,
        ``difference``, ``ci_low``, ``ci_high``, ``p_value``, ``n``, ``verdict``.

    Raises:
        ValueError: different numbers of seeds, or tables that do not match.
    """
    if len(model) != len(baseline) or not model:
        raise ValueError(f"need the same number of seed runs for both models, got {len(model)} and {len(baseline)}")
    opts = dict(id_column=id_column, names=names, n_resamples=n_resamples, ci=ci)
    kinds: list[tuple[str, Sequence[pd.DataFrame], Sequence[pd.DataFrame]]] = []
    if any(c.endswith("_label") for c in model[0].columns):
        kinds.append(("auroc", model, baseline))
    if segmentation is not None:
        if not (len(segmentation[0]) == len(segmentation[1]) == len(model)):
            raise ValueError("segmentation tables must come from the same seed runs as the predictions")
        kinds.append(("segmentation", *segmentation))
    rows: list[dict] = []
    ensembles: dict[str, dict] = {}
    for kind, runs_a, runs_b in kinds:
        compare = compare_classification if kind == "auroc" else compare_segmentation
        value_a, value_b = ("auroc_a", "auroc_b") if kind == "auroc" else ("mean_a", "mean_b")  # AUROC, per-case mean
        per_seed = [compare(a, b, **opts)["rows"] for a, b in zip(runs_a, runs_b, strict=True)]
        ensemble = compare(average_over_seeds(runs_a, id_column), average_over_seeds(runs_b, id_column), **opts)
        ensembles[kind] = ensemble
        for r in ensemble["rows"]:
            if r.get("group") is not None:
                continue
            key = _key(r)
            seeds = [next((s for s in rs if _key(s) == key and s.get("group") is None), None) for rs in per_seed]
            if any(s is None for s in seeds):
                continue  # a class absent from one seed's comparison: only the ensemble has it; skip the row
            va, vb = [s[value_a] for s in seeds], [s[value_b] for s in seeds]
            (ma, sa), (mb, sb) = _mean_sd(va), _mean_sd(vb)
            md, sd = _mean_sd([a - b for a, b in zip(va, vb, strict=True)])
            rows.append({"row": key, "kind": kind, "model_seeds": va, "baseline_seeds": vb,
                         "model_mean": ma, "model_sd": sa, "baseline_mean": mb, "baseline_sd": sb,
                         "difference_mean": md, "difference_sd": sd,
                         "ensemble_model": r[value_a], "ensemble_baseline": r[value_b],
                         "difference": r["difference"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                         "p_value": r["p_value"], "n": r["n"], "verdict": r["verdict"]})  # fmt: skip
    if report_dir is not None:
        comparison_report(ensembles.get("auroc"), ensembles.get("segmentation"), report_dir, ci)
    return rows


def _reading(r: dict, alpha: float) -> str:
    """The verdict of the interval; marked weak where the test on the same cases does not reach ``alpha``."""
    if r["verdict"].endswith(" higher") and not r["p_value"] < alpha:
        return f"{r['verdict']} (weak: interval excludes 0, p >= {alpha:g})"
    return r["verdict"]


def seed_table_markdown(
    results: Mapping[str, list[dict]], names: Mapping[str, tuple[str, str]], k: int, alpha: float = 0.05
) -> str:
    """A markdown table of :func:`seed_comparison` results, one block per baseline, plus a plain summary line.

    The reading follows the paired bootstrap interval; where DeLong's (Wilcoxon's) p-value on the same cases is not
    below ``alpha`` the two disagree near the boundary, and the reading says "weak" (the summary lists such rows
    apart), so a borderline interval is not read as a firm difference.

    Args:
        results: ``{baseline config: rows}``.
        names: ``{baseline config: (model name, baseline name)}``.
        k: number of seeds.
    """
    lines = [
        f"| comparison | metric | model (mean ± sd, k = {k}) | baseline (mean ± sd) | difference per seed "
        "(mean ± sd) | difference of the seed ensembles [95 % CI] | p | reading |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for config, rows in results.items():
        model_name, base_name = names[config]
        for r in rows:
            metric = "AUROC" if r["kind"] == "auroc" else ("IoU" if r["row"].startswith("iou_") else "Dice")
            test = "DeLong" if r["kind"] == "auroc" else "Wilcoxon"  # segmentation: per-case Dice / IoU
            lines.append(
                f"| {model_name} vs {base_name} | {r['row']} {metric} | {r['model_mean']:.3f} ± {r['model_sd']:.3f} "
                f"| {r['baseline_mean']:.3f} ± {r['baseline_sd']:.3f} | {r['difference_mean']:+.3f} ± "
                f"{r['difference_sd']:.3f} | {r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] "
                f"| {r['p_value']:.3g} ({test}) | {_reading(r, alpha)} |"
            )
        firm = [r for r in rows if r["verdict"].endswith(" higher") and r["p_value"] < alpha]
        weak = [r["row"] for r in rows if r["verdict"].endswith(" higher") and not r["p_value"] < alpha]
        higher = [r["row"] for r in firm if r["verdict"] == f"{model_name} higher"]
        lower = [r["row"] for r in firm if r["verdict"] == f"{base_name} higher"]
        line = f"{model_name} vs {base_name}: "
        if not higher and not lower:
            line += "no evidence of a difference on any row"
        else:
            line += (f"{model_name} higher on {', '.join(higher) or 'no row'}; {base_name} higher on "
                     f"{', '.join(lower) or 'no row'}; no evidence of a difference elsewhere")  # fmt: skip
        summary.append(
            line + (f"; borderline (interval excludes 0, p >= {alpha:g}): {', '.join(weak)}." if weak else ".")
        )
    return "\n".join(lines + [""] + summary) + "\n"
