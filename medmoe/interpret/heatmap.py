"""Shared heat map of a conditional distribution (rows: tasks) with colours diverging from its uniform value."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..utils.figures import new_figure, save_figure

__all__ = ["diverging_heatmap"]


def diverging_heatmap(
    values: np.ndarray,
    rows: Sequence[str],
    columns: Sequence[str],
    path: str | Path,
    title: str,
    uniform: float,
    min_spread: float = 0.1,
    colorbar_label: str = "",
    xlabel: str = "",
    decimals: int = 3,
) -> Path:
    """Heat map of ``values`` ``(rows, columns)``, white at ``uniform``, written atomically as PNG.

    The colour scale spans ``uniform +- max(largest deviation, min_spread)`` (not below 0), so small differences
    stay pale instead of filling the whole colour range. NaN cells are left blank and marked ``n/a``. The figure is at
    least wide enough for ``title`` (use line breaks for long titles).

    Raises:
        ValueError: if ``values`` is not ``(len(rows), len(columns))`` or either is empty.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(rows), len(columns)) or not values.size:
        raise ValueError(
            f"values must be (rows, columns) = ({len(rows)}, {len(columns)}) and non-empty, got {values.shape}"
        )
    finite = values[np.isfinite(values)]
    deviation = float(np.abs(finite - uniform).max()) if finite.size else 0.0
    spread = max(deviation, float(min_spread), 1e-6)
    title_chars = max(len(line) for line in title.splitlines())
    cell = 1.3 if decimals >= 3 and len(columns) <= 8 else 0.55
    width = max(1.8 + cell * len(columns), 0.075 * title_chars + 1.0)
    fig, ax = new_figure((width, 1.4 + 0.15 * title.count("\n") * 2 + 0.6 * len(rows)))
    from matplotlib.colors import TwoSlopeNorm

    # probabilities: the scale stops at 0 below and stays white at the uniform value
    norm = TwoSlopeNorm(vcenter=uniform, vmin=max(uniform - spread, 0.0), vmax=uniform + spread)
    image = ax.imshow(values, cmap="RdBu_r", norm=norm, aspect="auto")
    ax.set_xticks(range(len(columns)), labels=list(columns), fontsize=8 if len(columns) > 8 else 10)
    ax.set_yticks(range(len(rows)), labels=list(rows))
    font = 7 if len(columns) > 8 else 10
    for (i, j), value in np.ndenumerate(values):
        if not np.isfinite(value):
            ax.text(j, i, "n/a", ha="center", va="center", color="grey", fontsize=font)
            continue
        dark = abs(value - uniform) > 0.6 * spread
        ax.text(j, i, f"{value:.{decimals}f}", ha="center", va="center", color="w" if dark else "k", fontsize=font)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label=colorbar_label)
    fig.tight_layout()
    save_figure(fig, path)
    return Path(path)
