"""Classification evaluation of a cohort: AUROC, AUPRC, accuracy, balanced accuracy, sensitivity / specificity, ECE.

Every metric comes with a seeded percentile bootstrap CI: stratified by class for the metrics that condition on
the true class (AUROC, sensitivity, specificity, balanced accuracy), over plain resamples of the cases for the
ones that depend on the case mix (accuracy, AUPRC, ECE; stratifying would hide that variance). Binary,
multi-class (one-vs-rest per class + macro) and multi-label tasks; several tasks at once; ``group_by`` repeats
everything per subgroup; ``df_pred_compare`` adds DeLong's test against a second model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .bootstrap import bootstrap
from .calibration import reliability_curve
from .classification import CASE_MIX_METRICS, precision_recall_curve, roc_curve, task_metric_fn
from .delong import delong_test
from .tables import TaskSpec, discover_tasks, format_ids, join_predictions
from .thresholds import choose_threshold

__all__ = ["evaluate_classification"]

Progress = Callable[[str, int, int], None]


def _validate(df: pd.DataFrame, spec: TaskSpec, id_column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels ``(N, L)`` float (NaN = missing: empty or -1, as in the cohort CSVs), scores, and the labelled rows."""
    raw = df[spec.label_columns]
    numeric = raw.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad_text = raw.notna().to_numpy() & ~np.isfinite(numeric)
    labels = np.where(numeric == -1, np.nan, numeric)
    allowed = np.arange(len(spec.classes)) if spec.kind == "multiclass" else np.array([0, 1])
    finite = np.isfinite(labels)
    bad_value = finite & ~np.isin(np.where(finite, labels, -1), allowed)
    bad = (bad_text | bad_value).any(1)
    if bad.any():
        vals = sorted({str(v) for v in raw.to_numpy()[bad_text | bad_value]})
        raise ValueError(
            f"task {spec.name!r}: labels outside the expected set {allowed.tolist()} (values {vals[:10]}) for ids "
            f"{format_ids(df.loc[bad, id_column].tolist())}"
        )
    used = finite.any(1)
    scores = _finite_scores(df, spec.score_columns, used, id_column, f"task {spec.name!r}")
    return labels, scores, used


def _finite_scores(df: pd.DataFrame, columns: list[str], rows: np.ndarray, id_column: str, where: str) -> np.ndarray:
    """Score columns as float ``(N, C)``; raise ``ValueError`` naming the ids where a used row is not finite."""
    scores = df[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = rows & ~np.isfinite(scores).all(1)
    if bad.any():
        raise ValueError(
            f"{where}: non-finite or non-numeric scores in {columns} for ids "
            f"{format_ids(df.loc[bad, id_column].tolist())}"
        )
    return scores


def _thresholds(
    spec: TaskSpec, scores: np.ndarray, labels: np.ndarray, val: np.ndarray, given: float | None, rule: str
) -> tuple[dict[str, float | None], str, list[str]]:
    """Decision threshold per class name, where it came from, and notes (``None``: none could be chosen)."""
    names = ["1"] if spec.kind == "binary" else spec.classes
    if spec.kind == "multiclass":
        return {}, "argmax", []
    if given is not None:
        return {n: float(given) for n in names}, "given", []
    if val is None:
        return {n: 0.5 for n in names}, "default 0.5", []
    out: dict[str, float | None] = {}
    notes = []
    for j, n in enumerate(names):
        ok = val & np.isfinite(labels[:, j])
        try:
            out[n] = choose_threshold(scores[ok, j], labels[ok, j].astype(bool), rule)
        except ValueError as e:  # e.g. one class only on validation: threshold metrics are not reported
            out[n] = None
            label = "" if spec.kind == "binary" else f" label {n}"
            notes.append(f"{spec.name}{label}: no threshold ({e}); accuracy, sensitivity and specificity not reported")
    return out, f"{rule} on validation split", notes


def _curves(spec: TaskSpec, scores: np.ndarray, labels: np.ndarray, n_bins: int) -> dict[str, Any]:
    """ROC / PR / reliability data per class (binary: class '1') for plotting."""
    if spec.kind == "multiclass":
        y = labels[:, 0].astype(np.int64)
        items = [(c, scores[:, k], y == k) for k, c in enumerate(spec.classes)]
        conf, hit = scores.max(1), scores.argmax(1) == y
    else:
        cols = ["1"] if spec.kind == "binary" else spec.classes
        items = []
        for j, c in enumerate(cols):
            ok = np.isfinite(labels[:, j])
            items.append((c, scores[ok, j], labels[ok, j].astype(bool)))
        conf, hit = items[0][1], items[0][2]
    out: dict[str, Any] = {"roc": {}, "pr": {}}
    for c, s, pos in items:
        if pos.all() or not pos.any():
            continue
        fpr, tpr, _ = roc_curve(s, pos)
        out["roc"][c] = (fpr, tpr)
        out["pr"][c] = precision_recall_curve(s, pos)
    if spec.kind != "multilabel" and np.all((conf >= 0) & (conf <= 1)):
        label = "P(class 1)" if spec.kind == "binary" else "top-label confidence"
        out["reliability"] = {**reliability_curve(conf, hit, n_bins), "label": label}
    return out


def evaluate_classification(
    df_pred: pd.DataFrame,
    df_true: pd.DataFrame | None = None,
    tasks: Sequence[str] | None = None,
    *,
    id_column: str = "id",
    multilabel: dict[str, list[str]] | None = None,
    threshold: float | dict[str, float] | None = None,
    split_column: str = "split",
    threshold_split: str | None = None,
    eval_split: str | None = None,
    threshold_rule: str = "youden",
    group_by: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    n_bins: int = 10,
    df_pred_compare: pd.DataFrame | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Evaluate classification predictions against labels, with bootstrap CIs, subgroups and DeLong comparison.

    Args:
        df_pred: predictions (``<task>_prob_<k>`` or ``<task>_score`` columns) and an id column.
        df_true: labels (column ``<task>``, integer class, empty = missing); ``None`` if ``df_pred`` has them.
        tasks: task names (default: every task found, see :func:`.io.discover_tasks`).
        id_column: id column joining the tables.
        multilabel: ``{task: [label names]}`` for multi-label tasks (labels ``T_a``, predictions ``T_prob_a``).
        threshold: decision threshold for binary / multi-label tasks, one for all or per task name.
        split_column: column holding the split names.
        threshold_split: split on which thresholds are chosen with ``threshold_rule`` (e.g. ``"val"``).
        eval_split: split evaluated (default: every row not in ``threshold_split``).
        threshold_rule: ``youden``, ``sensitivity=0.9`` or ``specificity=0.9``.
        group_by: column whose values define subgroups; metrics repeat per subgroup with counts.
        n_bootstrap: bootstrap resamples per task and group (0 = no CIs).
        seed: bootstrap seed.
        ci: confidence level.
        n_bins: calibration bins for ECE and the reliability plot.
        df_pred_compare: predictions of a second model (same columns) for DeLong's test of AUROC.
        progress: optional callback ``progress(label, done, total)`` during bootstraps.

    Returns:
        ``{"kind": "classification", "config", "tasks", "metrics", "comparisons", "curves"}`` where ``metrics``
        is a list of ``{"task", "metric", "class", "group", "value", "ci_low", "ci_high", "n", "n_positive"}``
        (``class`` None = the task-level value, ``group`` None = all cases) and ``curves`` holds arrays for plots.

    Raises:
        ValueError: ids missing on one side, duplicate ids, labels outside the expected set, non-finite scores,
            missing columns. A task with a single class does not raise: its AUROC is NaN with a note.

    Example:
        >>> df = pd.DataFrame({"id": range(6), "t": [0, 1, 0, 1, 1, 0], "t_score": [.1, .9, .3, .6, .4, .5]})
        >>> res = evaluate_classification(df, n_bootstrap=0)
        >>> [m["value"] for m in res["metrics"] if m["metric"] == "auroc"]
        [0.8888888888888888]
    """
    df = join_predictions(df_pred, df_true, id_column)
    label_cols = df.columns if df_true is None else df_true.columns
    specs = discover_tasks(list(df_pred.columns), list(label_cols), tasks, multilabel)
    for col in [c for c in (group_by, split_column if (threshold_split or eval_split) else None) if c]:
        if col not in df.columns:
            raise ValueError(f"column {col!r} not found in the predictions or labels CSV (columns: {list(df.columns)})")
    cmp = None
    if df_pred_compare is not None:
        cmp = join_predictions(df, df_pred_compare, id_column, ("first model", "second model (--compare-with)"))
    split = df[split_column].astype(str).to_numpy() if (threshold_split or eval_split) else None
    val = split == threshold_split if threshold_split else None
    evaluated = (split == eval_split) if eval_split else (~val if val is not None else np.ones(len(df), bool))
    groups = df[group_by].astype("string").fillna("missing").to_numpy() if group_by else None
    result: dict[str, Any] = {
        "kind": "classification",
        "config": {
            "n_bootstrap": n_bootstrap,
            "seed": seed,
            "ci": ci,
            "n_bins": n_bins,
            "id_column": id_column,
            "group_by": group_by,
            "threshold_split": threshold_split,
            "eval_split": eval_split,
            "threshold_rule": threshold_rule,
            "ci_method": "percentile bootstrap; stratified by class except accuracy, AUPRC and ECE (plain)",
        },
        "tasks": [],
        "metrics": [],
        "comparisons": [],
        "curves": {},
    }
    for spec in specs:
        labels, scores, used = _validate(df, spec, id_column)
        given = threshold.get(spec.name) if isinstance(threshold, dict) else threshold
        thr, source, notes = _thresholds(spec, scores, labels, val, given, threshold_rule)
        rows = used & evaluated
        result["curves"][spec.name] = _curves(spec, scores[rows], labels[rows], n_bins)
        subsets = [(None, rows)]
        if groups is not None:
            subsets += [(f"{group_by}={g}", rows & (groups == g)) for g in sorted(set(groups[rows]))]
        for group, mask in subsets:
            if not mask.any():
                continue
            lab, sc = labels[mask], scores[mask]
            notes += _single_class_notes(spec, lab, group)
            fn = task_metric_fn(spec, sc, lab, thr, n_bins)
            strata = _strata(lab)
            label = f"{spec.name}" + (f" [{group}]" if group else "")
            cb = (lambda d, t, _l=label: progress(_l, d, t)) if progress else None
            stats = bootstrap(fn, int(mask.sum()), strata, n_bootstrap, seed, ci, cb)
            if n_bootstrap > 0 and len(np.unique(strata)) > 1:  # one stratum: the same resamples already
                case_mix_fn = task_metric_fn(spec, sc, lab, thr, n_bins, metrics=CASE_MIX_METRICS)  # no AUROC again
                plain = bootstrap(case_mix_fn, int(mask.sum()), None, n_bootstrap, seed, ci)
                stats.update({key: plain[key] for key in stats if key[0] in CASE_MIX_METRICS})
            for (metric, cls), (v, lo, hi) in stats.items():
                n, n_pos = _counts(spec, lab, cls)
                result["metrics"].append(
                    {
                        "task": spec.name,
                        "metric": metric,
                        "class": cls,
                        "group": group,
                        "value": v,
                        "ci_low": lo,
                        "ci_high": hi,
                        "n": n,
                        "n_positive": n_pos,
                    }
                )
        if cmp is not None:
            result["comparisons"] += _compare(spec, cmp, labels, scores, rows, ci, id_column)
        result["tasks"].append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "classes": spec.classes,
                "label_columns": spec.label_columns,
                "score_columns": spec.score_columns,
                "thresholds": thr,
                "threshold_source": source,
                "n": int(rows.sum()),
                "n_missing_label": int((~used & evaluated).sum()),
                "notes": notes,
            }
        )
    return result


def _strata(labels: np.ndarray) -> np.ndarray:
    """Class (or multi-label pattern, missing = -1) per case, for the stratified bootstrap."""
    codes = np.where(np.isfinite(labels), labels, -1).astype(np.int64)
    return np.unique(codes, axis=0, return_inverse=True)[1].ravel()


def _counts(spec: TaskSpec, labels: np.ndarray, cls: str | None) -> tuple[int, int | None]:
    if spec.kind == "multilabel" and cls is not None:
        col = labels[:, spec.classes.index(cls)]
        return int(np.isfinite(col).sum()), int((col == 1).sum())
    if spec.kind == "multilabel":
        return int(np.isfinite(labels).any(1).sum()), None
    if spec.kind == "binary":
        return len(labels), int((labels[:, 0] == 1).sum())
    if cls is None:
        return len(labels), None
    return len(labels), int((labels[:, 0] == spec.classes.index(cls)).sum())


def _single_class_notes(spec: TaskSpec, labels: np.ndarray, group: str | None) -> list[str]:
    where = f" in group {group}" if group else ""
    cols = ["task"] if spec.kind != "multilabel" else spec.classes
    notes = []
    for j, c in enumerate(cols):
        vals = np.unique(labels[np.isfinite(labels[:, j]), j]).astype(int).tolist()
        name = spec.name if spec.kind != "multilabel" else f"{spec.name}/{c}"
        if len(vals) < 2:
            notes.append(f"{name}: AUROC undefined{where}: only class {vals} present (n={len(labels)})")
        elif spec.kind == "multiclass" and len(vals) < len(spec.classes):
            absent = [k for k in spec.classes if int(k) not in vals]
            notes.append(f"{name}: class(es) {absent} absent{where}; macro averages use the present classes")
    return notes


def _compare(
    spec: TaskSpec,
    cmp: pd.DataFrame,
    labels: np.ndarray,
    scores: np.ndarray,
    rows: np.ndarray,
    ci: float,
    id_column: str,
) -> list[dict[str, Any]]:
    missing = [c for c in spec.score_columns if c not in cmp.columns]
    if missing:
        raise ValueError(f"--compare-with: the second predictions CSV lacks column(s) {missing}")
    other = _finite_scores(cmp, spec.score_columns, rows, id_column, f"--compare-with, task {spec.name!r}")
    out = []
    cols = ["1"] if spec.kind == "binary" else spec.classes
    for j, c in enumerate(cols):
        if spec.kind == "multiclass":
            ok, pos = rows, labels[rows, 0] == j
        else:
            ok = rows & np.isfinite(labels[:, j])
            pos = labels[ok, j] == 1
        if pos.all() or not pos.any():
            continue
        res = delong_test(pos, scores[ok, j], other[ok, j], ci)
        out.append({"task": spec.name, "class": None if spec.kind == "binary" else c, "test": "delong", **res})
    return out
