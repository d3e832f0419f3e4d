"""Prediction and label tables: the CSV conventions, task discovery and joining on the id column.

CSV conventions (see docs/evaluation.md):

- one id column (``id`` by default) in every CSV; ids are compared as strings;
- labels of a single-label task ``T``: column ``T`` holding an integer class, empty = missing (ignored);
- predictions of task ``T``: ``T_prob_<k>`` per class ``k`` (``k = 0 .. K-1``) or, for a binary task,
  a single ``T_score`` (any real-valued score, larger = more likely class 1);
- a multi-label task ``T`` with labels ``a, b, c`` (``--multilabel T:a,b,c``): label columns
  ``T_a, T_b, T_c`` holding 0/1 and prediction columns ``T_prob_a, T_prob_b, T_prob_c``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = [
    "TaskSpec",
    "discover_tasks",
    "format_ids",
    "join_predictions",
]

_MAX_LISTED = 20


def format_ids(ids: Sequence[Any], limit: int = _MAX_LISTED) -> str:
    """Format a list of ids for an error message: the first ``limit`` ids and how many more."""
    ids = [str(i) for i in ids]
    shown = ", ".join(ids[:limit])
    return shown + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")


@dataclass
class TaskSpec:
    """One evaluated task.

    Attributes:
        name: task name (``T``).
        kind: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        label_columns: label column(s): ``[T]`` for binary / multi-class, ``[T_a, T_b, ...]`` for multi-label.
        score_columns: prediction column(s): ``[T_score]`` or ``[T_prob_1]`` for binary, ``[T_prob_0 ..]`` otherwise.
        classes: class names (``["0", "1", ...]``) or multi-label label names.
    """

    name: str
    kind: str
    label_columns: list[str]
    score_columns: list[str]
    classes: list[str] = field(default_factory=list)


_PROB = re.compile(r"^(?P<task>.+)_prob_(?P<k>[^_]+)$")


def discover_tasks(
    pred_columns: Sequence[str],
    label_columns: Sequence[str],
    tasks: Sequence[str] | None = None,
    multilabel: dict[str, list[str]] | None = None,
) -> list[TaskSpec]:
    """Find the tasks present in the prediction / label columns following the CSV conventions.

    Args:
        pred_columns: columns of the predictions table.
        label_columns: columns of the labels table.
        tasks: restrict to these task names (default: every task with both predictions and labels).
        multilabel: multi-label tasks, ``{task: [label names]}``.

    Returns:
        One :class:`TaskSpec` per task, in a stable order.

    Raises:
        ValueError: a requested task lacks its label or prediction columns, or class columns are not ``0..K-1``.
    """
    multilabel = dict(multilabel or {})
    pred_set, label_set = set(pred_columns), set(label_columns)
    probs: dict[str, list[str]] = {}
    for c in pred_columns:
        m = _PROB.match(c)
        if m:
            probs.setdefault(m["task"], []).append(m["k"])
    scores = [c[: -len("_score")] for c in pred_columns if c.endswith("_score")]
    candidates = list(dict.fromkeys(list(multilabel) + [t for t in probs if t not in multilabel] + scores))
    if tasks:
        missing = [t for t in tasks if t not in candidates]
        if missing:
            raise ValueError(
                f"no prediction columns for task(s) {missing}: expected '<task>_prob_<k>' or '<task>_score' columns"
                f" in the predictions CSV (columns: {list(pred_columns)})"
            )
        candidates = list(tasks)
    specs: list[TaskSpec] = []
    for t in candidates:
        if t in multilabel:
            labels = multilabel[t]
            want_pred = [f"{t}_prob_{a}" for a in labels]
            want_lab = [f"{t}_{a}" for a in labels]
            miss = [c for c in want_pred if c not in pred_set] + [c for c in want_lab if c not in label_set]
            if miss:
                raise ValueError(f"multi-label task {t!r}: missing column(s) {miss}")
            specs.append(TaskSpec(t, "multilabel", want_lab, want_pred, list(labels)))
            continue
        if t not in label_set:
            if tasks:
                raise ValueError(f"task {t!r}: no label column {t!r} in the labels CSV")
            continue  # a prediction without labels (e.g. an auxiliary output): skip silently
        if t in probs:
            ks = probs[t]
            try:
                ints = sorted(int(k) for k in ks)
            except ValueError:
                raise ValueError(f"task {t!r}: class columns must be '{t}_prob_<integer>', got {ks}") from None
            if ints != list(range(len(ints))) or len(ints) < 2:
                raise ValueError(f"task {t!r}: expected columns {t}_prob_0 .. {t}_prob_<K-1> (K >= 2), got {ints}")
            cols = [f"{t}_prob_{k}" for k in ints]
            if len(ints) == 2:
                specs.append(TaskSpec(t, "binary", [t], [cols[1]], ["0", "1"]))
            else:
                specs.append(TaskSpec(t, "multiclass", [t], cols, [str(k) for k in ints]))
        else:
            specs.append(TaskSpec(t, "binary", [t], [f"{t}_score"], ["0", "1"]))
    if not specs:
        raise ValueError(
            "no task found: predictions need '<task>_prob_<k>' or '<task>_score' columns and the labels a '<task>'"
            f" column (prediction columns: {list(pred_columns)}; label columns: {list(label_columns)})"
        )
    return specs


def join_predictions(
    df_pred: pd.DataFrame,
    df_true: pd.DataFrame | None,
    id_column: str = "id",
    what: tuple[str, str] = ("predictions", "labels"),
) -> pd.DataFrame:
    """Join predictions and labels on the id column, refusing duplicates and ids present on one side only.

    Args:
        df_pred: predictions table.
        df_true: labels table, or ``None`` when ``df_pred`` holds both.
        id_column: name of the id column.
        what: names of the two sides used in error messages.

    Returns:
        The joined table (rows in the order of ``df_pred``), ids as strings.

    Raises:
        ValueError: missing id column, duplicate ids, or ids present on one side only (listed).
    """
    tables = [df_pred] if df_true is None else [df_pred, df_true]
    for name, df in zip(what, tables):
        if id_column not in df.columns:
            raise ValueError(
                f"the {name} CSV has no id column {id_column!r} (columns: {list(df.columns)}); set it with --id-column"
            )
        dup = df[id_column].astype(str)
        dup = dup[dup.duplicated()].unique().tolist()
        if dup:
            raise ValueError(f"duplicate ids in the {name} CSV: {format_ids(dup)}")
    df_pred = df_pred.assign(**{id_column: df_pred[id_column].astype(str)})
    if df_true is None:
        return df_pred.reset_index(drop=True)
    df_true = df_true.assign(**{id_column: df_true[id_column].astype(str)})
    a, b = set(df_pred[id_column]), set(df_true[id_column])
    only_pred = [i for i in df_pred[id_column] if i not in b]
    only_true = [i for i in df_true[id_column] if i not in a]
    if only_pred or only_true:
        parts = []
        if only_pred:
            parts.append(f"{len(only_pred)} id(s) in the {what[0]} but not in the {what[1]}: {format_ids(only_pred)}")
        if only_true:
            parts.append(f"{len(only_true)} id(s) in the {what[1]} but not in the {what[0]}: {format_ids(only_true)}")
        raise ValueError("ids do not match; " + "; ".join(parts))
    # a column present on both sides (e.g. labels echoed into the predictions) is taken from the labels side
    overlap = [c for c in df_true.columns if c in df_pred.columns and c != id_column]
    return df_pred.drop(columns=overlap).merge(df_true, on=id_column, how="left", validate="one_to_one")
