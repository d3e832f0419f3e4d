"""Matplotlib figures without pyplot: no global figure registry and no backend switch.

A ``matplotlib.figure.Figure`` made directly is not registered with pyplot (nothing to close, no leak in long
runs) and renders with the Agg canvas when saved to PNG, whatever backend the user's session (a notebook, a
GUI) has selected: importing or calling medmoe's plotting code never calls ``matplotlib.use``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .atomic import atomic_save_figure

__all__ = ["new_figure", "save_figure"]


def new_figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **subplots_kwargs: Any):
    """A detached ``Figure`` and its axes, like ``plt.subplots`` but without pyplot's state.

    Args:
        figsize: ``(width, height)`` in inches.
        nrows: rows of axes.
        ncols: columns of axes.
        **subplots_kwargs: passed to ``Figure.subplots`` (``sharex``, ``gridspec_kw``, ...).

    Returns:
        ``(figure, axes)``: one ``Axes`` for ``1 x 1``, else an array of them.

    Example:
        >>> fig, ax = new_figure((4, 3))
        >>> _ = ax.plot([0, 1], [0, 1])
    """
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(nrows, ncols, **subplots_kwargs)


def save_figure(figure: Figure, path: str | Path, dpi: int = 120, **savefig_kwargs: Any) -> Path:
    """Write ``figure`` atomically (format from the extension, PNG by default); returns ``path``."""
    return atomic_save_figure(path, figure, dpi=dpi, **savefig_kwargs)
