"""CSV cells that a spreadsheet cannot run: text starting with ``= + - @`` (or tab / CR) gets a leading ``'``.

Ids, paths and labels come from the cohort, so they are data the toolkit does not control. A spreadsheet that
opens a CSV reads a cell such as ``=HYPERLINK("http://…")`` or ``@SUM(…)`` as a formula (CSV / formula injection).
As the OWASP "CSV Injection" page advises, every *text* cell that starts with one of ``= + - @``, a tab or a
carriage return is written with a single quote in front, so the spreadsheet shows it as text.

Numbers are not text: a float or int column (``-0.5``, ``-1`` for a missing label) is written as it is, and so is a
text cell that is a plain negative decimal number (``"-0.5"``, ``"-3e2"``; a tabular cohort column read as text),
which every spreadsheet reads as a number, never as a formula. Column names and text index labels are escaped like
cells.

Every CSV writer of medmoe goes through :func:`escape_frame` (``atomic_write_csv``) or :func:`escape_cell`
(``atomic_write_rows``); :func:`unescape_cell` undoes it for a reader that must match ids with another file.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["FORMULA_PREFIXES", "csv_quoting", "escape_cell", "escape_frame", "frame_cells", "unescape_cell"]

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_NEGATIVE_NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def escape_cell(value: Any) -> Any:
    """``value`` with a leading ``'`` if it is text a spreadsheet would read as a formula; anything else unchanged.

    Example:
        >>> escape_cell("=HYPERLINK(1)"), escape_cell("-0.5"), escape_cell(-0.5), escape_cell("case-1")
        ("'=HYPERLINK(1)", '-0.5', -0.5, 'case-1')
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) and not _NEGATIVE_NUMBER.fullmatch(value):
        return "'" + value
    return value


def unescape_cell(value: Any) -> Any:
    """Undo :func:`escape_cell`: ``"'=x"`` -> ``"=x"``; other values unchanged.

    Example:
        >>> unescape_cell("'=x"), unescape_cell("'quoted"), unescape_cell(3)
        ('=x', "'quoted", 3)
    """
    if isinstance(value, str) and value[:1] == "'" and value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
    return value


def _is_text(series: Any) -> bool:
    import pandas as pd

    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        dtype = dtype.categories.dtype
    return pd.api.types.is_string_dtype(dtype)


def escape_frame(frame: Any) -> Any:
    """A copy of a pandas DataFrame (or Series) whose text cells, column names and index labels are escaped.

    Only text columns are touched (``object`` / ``string`` / categorical of text); numeric columns and non-text
    values inside a text column (NaN, numbers) keep their type.
    """
    import pandas as pd

    if isinstance(frame, pd.Series):
        return escape_frame(frame.to_frame()).iloc[:, 0].rename(escape_cell(frame.name))
    out = frame.copy()
    for i in range(out.shape[1]):
        column = out.iloc[:, i]
        if _is_text(column):
            out.isetitem(i, column.astype(object).map(escape_cell))
    out.columns = out.columns.map(escape_cell) if _is_text(out.columns) else out.columns
    out.index = out.index.map(escape_cell) if _is_text(out.index) else out.index
    return out


def csv_quoting(cells: Iterable[Any]) -> int:
    """``csv.QUOTE_NONNUMERIC`` if a text cell holds a carriage return, else ``csv.QUOTE_MINIMAL``.

    Python's ``csv`` writer quotes a field holding ``\\n`` (the line terminator) but not one holding a lone
    ``\\r``, which readers (pandas, spreadsheets) take for the end of the row; quoting every text cell keeps the row
    whole. Files without one keep the minimal quoting.
    """
    has_cr = any(isinstance(c, str) and "\r" in c for c in cells)
    return csv.QUOTE_NONNUMERIC if has_cr else csv.QUOTE_MINIMAL


def frame_cells(frame: Any) -> Iterable[Any]:
    """Every text cell, column name and index label of a DataFrame (for :func:`csv_quoting`)."""
    yield from frame.columns
    yield from frame.index
    for i in range(frame.shape[1]):
        column = frame.iloc[:, i]
        if _is_text(column):
            yield from column
