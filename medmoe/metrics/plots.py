"""Evaluation plots: ROC, PR, reliability, subgroups, mask overlays.

Drawn on detached ``matplotlib.figure.Figure`` objects (:func:`medmoe.utils.figures.new_figure`), never through
pyplot, so importing or calling this module does not switch the backend of a notebook or GUI session.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..utils.figures import new_figure, save_figure

__all__ = ["plot_groups", "plot_overlay", "plot_pr", "plot_reliability", "plot_roc", "plot_roc_pair", "safe_name"]

_DPI = 100


def safe_name(text: str) -> str:
    """File-name-safe version of a task name or case id."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


def _save(fig: Figure, path: Path) -> Path:
    return save_figure(fig, path, dpi=_DPI, format="png", bbox_inches="tight")


def _label(task: str, cls: str, kind: str, value: dict[str, float] | None) -> str:
    name = task if kind == "binary" else f"{task} {'class ' if kind == 'multiclass' else ''}{cls}"
    if value and np.isfinite(value.get("value", np.nan)):
        name += f" ({value['value']:.3f} [{value['ci_low']:.3f}, {value['ci_high']:.3f}])"
    return name


def plot_roc(task: str, kind: str, curves: dict[str, Any], values: dict[str, dict], path: Path) -> Path:
    """ROC curve(s) of one task, one line per class (binary: one), AUROC with CI in the legend."""
    fig, ax = new_figure((4.6, 4.2))
    for cls, (fpr, tpr) in curves.get("roc", {}).items():
        ax.plot(fpr, tpr, lw=1.5, label=_label(task, cls, kind, values.get(cls)))
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC: {task}", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=7, title="AUROC [CI]", title_fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_roc_pair(title: str, curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """Two (or more) models' ROC curves on the same cases, one line each: ``curves = {model: (fpr, tpr)}``."""
    fig, ax = new_figure((4.6, 4.2))
    for name, (fpr, tpr) in curves.items():
        auc = float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))
        ax.plot(fpr, tpr, lw=1.5, label=f"{name} ({auc:.3f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC: {title}", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=7, title="model (AUROC)", title_fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_pr(task: str, kind: str, curves: dict[str, Any], values: dict[str, dict], path: Path) -> Path:
    """Precision-recall step curve(s) of one task, AUPRC with CI in the legend."""
    fig, ax = new_figure((4.6, 4.2))
    for cls, (recall, precision) in curves.get("pr", {}).items():
        ax.step(recall, precision, where="post", lw=1.5, label=_label(task, cls, kind, values.get(cls)))
    ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall: {task}", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left", fontsize=7, title="AUPRC [CI]", title_fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_reliability(task: str, rel: dict[str, Any], ece: dict[str, float] | None, path: Path) -> Path:
    """Reliability diagram: observed frequency vs mean confidence per bin, with a histogram of counts."""
    fig, (ax, axh) = new_figure((4.6, 5.0), 2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    n_bins = len(rel["count"])
    edges = np.linspace(0, 1, n_bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    ok = rel["count"] > 0
    ax.bar(centers[ok], rel["observed"][ok], width=1 / n_bins, edgecolor="k", alpha=0.6, label="observed")
    ax.plot(rel["confidence"][ok], rel["observed"][ok], "o-", c="C3", ms=3, lw=1, label="mean confidence")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    title = f"Calibration: {task}"
    if ece and np.isfinite(ece.get("value", np.nan)):
        title += f"\nECE {ece['value']:.3f} [{ece['ci_low']:.3f}, {ece['ci_high']:.3f}]"
    ax.set(ylabel="observed frequency", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="upper left")
    axh.bar(centers, rel["count"], width=1 / n_bins, edgecolor="k", color="grey")
    axh.set(xlabel=rel.get("label", "confidence"), ylabel="cases")
    return _save(fig, path)


def plot_groups(title: str, entries: Sequence[dict[str, Any]], metric: str, path: Path) -> Path:
    """Point estimate and CI of ``metric`` per subgroup (a forest plot), with counts in the labels."""
    entries = [e for e in entries if e["value"] is not None and np.isfinite(e["value"])]
    fig, ax = new_figure((4.6, 0.45 * len(entries) + 1.2))
    for i, e in enumerate(entries):
        lo = e["ci_low"] if np.isfinite(e["ci_low"]) else e["value"]
        hi = e["ci_high"] if np.isfinite(e["ci_high"]) else e["value"]
        ax.errorbar(
            e["value"],
            i,
            xerr=[[e["value"] - lo], [hi - e["value"]]],
            fmt="o",
            c="C0" if e["group"] else "k",
            capsize=3,
        )
    ax.set_yticks(range(len(entries)), [f"{e['group'] or 'all'} (n={e['n']})" for e in entries], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel=metric, title=title)
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def plot_overlay(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], title: str, path: Path) -> Path:
    """Overlay of prediction vs truth (any non-zero label): TP yellow, FN (missed) green, FP red.

    For a 3D mask, the slice along the last axis with the largest ``pred | truth`` area is shown.
    """
    p, t = pred > 0, truth > 0
    aspect = 1.0
    if p.ndim == 3:
        k = int(np.argmax((p | t).sum(axis=(0, 1))))  # the slice where the objects are largest
        p, t, title = p[..., k], t[..., k], f"{title} (slice {k})"
    if len(spacing) >= 2:
        aspect = float(spacing[0]) / float(spacing[1])
    rgb = np.zeros(p.shape + (3,), np.float32)
    rgb[p & t] = (1.0, 0.85, 0.1)
    rgb[t & ~p] = (0.1, 0.8, 0.2)
    rgb[p & ~t] = (0.9, 0.15, 0.15)
    fig, ax = new_figure((4.2, 4.4))
    ax.imshow(rgb, interpolation="nearest", aspect=aspect)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    handles = [
        Patch(color=c, label=n)
        for c, n in (((1.0, 0.85, 0.1), "both"), ((0.1, 0.8, 0.2), "missed (FN)"), ((0.9, 0.15, 0.15), "FP"))
    ]
    ax.legend(handles=handles, fontsize=7, loc="lower right", framealpha=0.8)
    return _save(fig, path)
