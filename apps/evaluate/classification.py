"""Classification evaluation: AUROC, AUPRC, accuracy, balanced accuracy, sensitivity / specificity, ECE.

Every metric comes with a seeded percentile bootstrap CI: stratified by class for the metrics that condition on
the true class (AUROC, sensitivity, specificity, balanced accuracy), over plain resamples of the cases for the
ones that depend on the case mix (accuracy, AUPRC, ECE; stratifying would hide that variance). Binary,
multi-class (one-vs-rest per class + macro) and multi-label tasks; several tasks at once; ``group_by`` repeats
everything per subgroup; ``df_pred_compare`` adds DeLong's test against a second model.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .bootstrap import bootstrap, weighted_auroc, weighted_average_precision, weighted_ece, weighted_mean
from .delong import delong_test
from .io import TaskSpec, discover_tasks, format_ids, join_predictions

__all__ = ["choose_threshold", "evaluate_classification", "roc_curve", "task_metric_fn"]

CASE_MIX_METRICS = frozenset({"accuracy", "auprc", "ece"})
"""Metrics whose value depends on the class proportions: their CIs resample cases without stratification."""

Progress = Callable[[str, int, int], None]
MetricFn = Callable[[np.ndarray], dict[Any, np.ndarray]]


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve at every distinct threshold: ``(fpr, tpr, thresholds)``, starting at ``(0, 0)`` (threshold +inf)."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], np.asarray(positive, bool)[order]
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tps, fps = np.cumsum(y)[ends], np.cumsum(~y)[ends]
    tpr = np.r_[0.0, tps / max(tps[-1], 1)] if s.size else np.zeros(1)
    fpr = np.r_[0.0, fps / max(fps[-1], 1)] if s.size else np.zeros(1)
    return fpr, tpr, np.r_[np.inf, s[ends]]


def choose_threshold(scores: np.ndarray, positive: np.ndarray, rule: str = "youden") -> float:
    """Choose a decision threshold (predict positive when ``score >= threshold``) on validation cases.

    Args:
        scores: ``(N,)`` validation scores.
        positive: ``(N,)`` bool validation labels (both classes needed).
        rule: ``"youden"`` (max sensitivity + specificity - 1), ``"sensitivity=0.9"`` (the highest threshold
            with sensitivity >= 0.9) or ``"specificity=0.9"`` (the lowest threshold with specificity >= 0.9).

    Returns:
        The threshold.

    Raises:
        ValueError: unknown rule, or a validation set without both classes.
    """
    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        raise ValueError(f"cannot choose a threshold on validation cases with a single class (n={positive.size})")
    fpr, tpr, thr = roc_curve(scores, positive)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]  # drop the +inf start
    name, _, target = rule.partition("=")
    if name == "youden" and not target:
        return float(thr[np.argmax(tpr - fpr)])
    try:
        goal = float(target)
    except ValueError:
        raise ValueError(f"unknown threshold rule {rule!r}: use youden, sensitivity=0.9 or specificity=0.9") from None
    if name == "sensitivity":
        return float(thr[np.flatnonzero(tpr >= goal)[0]])
    if name == "specificity":
        ok = np.flatnonzero(1 - fpr >= goal)
        return float(thr[ok[-1]]) if ok.size else float(thr[0])
    raise ValueError(f"unknown threshold rule {rule!r}: use youden, sensitivity=0.9 or specificity=0.9")


def _binary_fn(
    scores: np.ndarray, y: np.ndarray, threshold: float | None, n_bins: int, cls: str | None, want: Callable
) -> MetricFn:
    """Metrics of one binary column; without a threshold (none could be chosen) only the threshold-free ones."""
    pos = y.astype(bool)
    pred = None if threshold is None else scores >= threshold
    calibrate = bool(np.all((scores >= 0) & (scores <= 1)))

    def fn(w: np.ndarray) -> dict[Any, np.ndarray]:
        out = {}
        if want("auroc"):
            out[("auroc", cls)] = weighted_auroc(scores, pos, w)
        if want("auprc"):
            out[("auprc", cls)] = weighted_average_precision(scores, pos, w)
        if pred is not None:
            sens, spec = weighted_mean(w[:, pos], pred[pos]), weighted_mean(w[:, ~pos], ~pred[~pos])
            out[("accuracy", cls)] = weighted_mean(w, pred == pos)
            out[("balanced_accuracy", cls)] = 0.5 * (sens + spec)
            out[("sensitivity", cls)] = sens
            out[("specificity", cls)] = spec
        if calibrate and want("ece"):
            out[("ece", cls)] = weighted_ece(scores, pos, w, n_bins)
        return out

    return fn


def _multiclass_fn(probs: np.ndarray, y: np.ndarray, classes: list[str], n_bins: int, want: Callable) -> MetricFn:
    pred = probs.argmax(1)
    conf = probs.max(1)
    calibrate = bool(np.all((probs >= 0) & (probs <= 1)))
    present = [k for k in range(len(classes)) if (y == k).any()]

    def fn(w: np.ndarray) -> dict[Any, np.ndarray]:
        out: dict[Any, np.ndarray] = {}
        recalls = []
        for k, c in enumerate(classes):
            pos = y == k
            if want("auroc"):
                out[("auroc", c)] = weighted_auroc(probs[:, k], pos, w)
            if want("auprc"):
                out[("auprc", c)] = weighted_average_precision(probs[:, k], pos, w)
            out[("sensitivity", c)] = weighted_mean(w[:, pos], pred[pos] == k)
            out[("specificity", c)] = weighted_mean(w[:, ~pos], pred[~pos] != k)
            if k in present:
                recalls.append(out[("sensitivity", c)])
        nan = np.full(w.shape[0], np.nan)
        for metric in ("auroc", "auprc"):
            if want(metric):
                macro = [out[(metric, classes[k])] for k in present]
                out[(metric, None)] = np.mean(macro, axis=0) if len(present) > 1 else nan
        out[("accuracy", None)] = weighted_mean(w, pred == y)
        out[("balanced_accuracy", None)] = np.mean(recalls, axis=0) if recalls else nan
        if calibrate and want("ece"):
            out[("ece", None)] = weighted_ece(conf, pred == y, w, n_bins)
        return out

    return fn


def task_metric_fn(
    spec: TaskSpec,
    scores: np.ndarray,
    labels: np.ndarray,
    thresholds: dict[str, float],
    n_bins: int = 10,
    metrics: Collection[str] | None = None,
) -> MetricFn:
    """Build the weighted metric function of one task (see :mod:`.bootstrap`).

    Args:
        spec: the task.
        scores: ``(N, C)`` prediction columns of the task (``C = 1`` for binary).
        labels: ``(N, L)`` labels (``L = 1`` unless multi-label; NaN = missing, multi-label only here).
        thresholds: decision threshold per class name (binary: ``"1"``; multi-label: each label name).
        n_bins: calibration bins.
        metrics: compute only the rank and calibration metrics named here (``auroc``, ``auprc``, ``ece``; the
            cheap threshold metrics always come along); None = all.

    Returns:
        ``fn(W) -> {(metric, class or None): (R,) values}``.
    """

    def want(metric: str) -> bool:
        return metrics is None or metric in metrics

    if spec.kind == "binary":
        return _binary_fn(scores[:, 0], labels[:, 0], thresholds["1"], n_bins, None, want)
    if spec.kind == "multiclass":
        return _multiclass_fn(scores, labels[:, 0].astype(np.int64), spec.classes, n_bins, want)
    parts = []
    for j, name in enumerate(spec.classes):
        valid = np.isfinite(labels[:, j])
        parts.append((valid, _binary_fn(scores[valid, j], labels[valid, j], thresholds[name], n_bins, name, want)))

    def fn(w: np.ndarray) -> dict[Any, np.ndarray]:
        out: dict[Any, np.ndarray] = {}
        for valid, f in parts:
            out.update(f(w[:, valid]))
        for metric in ("auroc", "auprc"):
            if not want(metric):
                continue
            vals = np.array([out[(metric, c)] for c in spec.classes])
            ok = np.isfinite(vals).any(axis=1) if vals.size else np.zeros(0, bool)
            out[(metric, None)] = vals[ok].mean(0) if ok.any() else np.full(w.shape[0], np.nan)
        return out

    return fn


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
    scores = df[spec.score_columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    nonfinite = used & ~np.isfinite(scores).all(1)
    if nonfinite.any():
        raise ValueError(
            f"task {spec.name!r}: non-finite or non-numeric scores in {spec.score_columns} for ids "
            f"{format_ids(df.loc[nonfinite, id_column].tolist())}"
        )
    return labels, scores, used


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
        order = np.argsort(-s, kind="stable")
        tp = np.cumsum(pos[order])
        ends = np.r_[np.flatnonzero(np.diff(s[order]) != 0), s.size - 1]
        out["pr"][c] = (np.r_[0.0, tp[ends] / tp[-1]], np.r_[1.0, tp[ends] / (ends + 1)])
    if spec.kind != "multilabel" and np.all((conf >= 0) & (conf <= 1)):
        bins = np.clip((conf * n_bins).astype(int), 0, n_bins - 1)
        count = np.bincount(bins, minlength=n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["reliability"] = {
                "confidence": np.bincount(bins, conf, n_bins) / count,
                "observed": np.bincount(bins, hit.astype(float), n_bins) / count,
                "count": count,
                "label": "P(class 1)" if spec.kind == "binary" else "top-label confidence",
            }
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
    other = cmp[spec.score_columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = rows & ~np.isfinite(other).all(1)
    if bad.any():
        raise ValueError(
            f"--compare-with, task {spec.name!r}: non-finite scores for ids "
            f"{format_ids(cmp.loc[bad, id_column].tolist())}"
        )
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
