"""Atomic file writing: every output file is written to a temp file beside it, synced, then renamed over it.

A crash, an exception or a full disk never leaves a half-written file at the destination: readers see the old
file or the complete new one. The temp file lives in the destination's folder (``os.replace`` is atomic only
within one file system), is flushed to disk with ``fsync`` before the rename, gets the permissions of a normal
``open()`` (``0o666`` minus the umask, not ``mkstemp``'s private ``0o600``) and is removed when writing fails.

One core, :func:`atomic_path`; everything else is a thin use of it:

==========================  ======================================================
``atomic_path(path)``       context manager yielding the temp path (any writer)
``atomic_open(path, mode)`` context manager yielding an open file handle
``atomic_write(path, fn)``  ``fn(tmp_path)`` writes the file
``atomic_write_bytes``      bytes
``atomic_write_text``       text (UTF-8 by default)
``atomic_write_csv``        a pandas DataFrame (``DataFrame.to_csv`` keywords), formula cells escaped
``atomic_write_rows``       dict rows with ``csv.DictWriter``, formula cells escaped
``atomic_save_figure``      a matplotlib Figure (``Figure.savefig`` keywords)
``atomic_torch_save``       a torch object (checkpoint, state dict)
``remove_stale_temp_files`` the temp files a killed process left in a folder
==========================  ======================================================

Temp files are named ``.<name>.<8 random>.tmp-medmoe<ext>`` (e.g. ``.last.pt.k2x9_a0q.tmp-medmoe.pt``), so
:func:`remove_stale_temp_files` recognises them and touches nothing else.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .csv_cells import csv_quoting, escape_cell, escape_frame, frame_cells

__all__ = [
    "atomic_open",
    "atomic_path",
    "atomic_save_figure",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_rows",
    "atomic_write_text",
    "is_temp_name",
    "remove_stale_temp_files",
]

logger = logging.getLogger(__name__)

_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
_TEMP_MARK = ".tmp-medmoe"
# .<target>.<mkstemp's 8 characters>.tmp-medmoe<ext of the target>
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp-medmoe(?P<ext>(?:\.[A-Za-z0-9]+){0,2})")


def _suffix(path: Path) -> str:
    """The extension a writer may infer the format from: ``.csv``, ``.png`` or a double one like ``.nii.gz``."""
    if path.suffix.lower() in _COMPRESSED and len(path.suffixes) >= 2:
        return "".join(path.suffixes[-2:])
    return path.suffix


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: str) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX; Windows cannot open a folder, and commits renames itself)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on normal exit it is synced and renamed over ``path``.

    The temp name is hidden (starts with ``.``) and keeps the extension of ``path`` (``.nii.gz`` included), so
    writers that infer the format from the name (nibabel, ``savefig``) work. The parent folder is created.

    Args:
        path: the destination.

    Yields:
        The temp file's path (the file exists and is empty; a writer may truncate or recreate it).

    Raises:
        Whatever the body raises; the temp file is then removed and ``path`` is left as it was.

    Example:
        >>> import h5py  # doctest: +SKIP
        >>> with atomic_path("kspace/vol1.h5") as tmp, h5py.File(tmp, "w") as f:  # doctest: +SKIP
        ...     f.create_dataset("kspace", data=data)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_TEMP_MARK + _suffix(path))
    os.close(fd)
    try:
        yield Path(name)
        os.chmod(name, 0o666 & ~_umask())
        _fsync_file(name)
        os.replace(name, path)
    finally:
        if os.path.exists(name):
            os.remove(name)
    _fsync_dir(path.parent)


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """``open()`` for writing, atomically: the handle writes a temp file that replaces ``path`` on success.

    Args:
        path: the destination.
        mode: a write mode (``"w"``, ``"wb"``, ``"wt"``, ...).
        **open_kwargs: passed to ``open`` (``encoding``, ``newline``, ...).

    Raises:
        ValueError: for a mode that does not write a new file (``"r"``, ``"a"``, ``"r+"``).

    Example:
        >>> with atomic_open(tmp_dir / "cohort.csv", newline="") as handle:  # doctest: +SKIP
        ...     csv.writer(handle).writerows(rows)
    """
    if "w" not in mode or "+" in mode:
        raise ValueError(f"atomic_open writes a new file: use mode 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as handle:
        yield handle


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` to write a temp file beside ``path``, then rename it over ``path``.

    Args:
        path: the destination.
        write: writes the complete file to the path (a ``str``) it is given.

    Returns:
        ``path`` as a ``Path``.

    Example:
        >>> atomic_write(out / "table.parquet", lambda tmp: frame.to_parquet(tmp))  # doctest: +SKIP
    """
    with atomic_path(path) as tmp:
        write(str(tmp))
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (newlines as given); returns ``path``.

    Example:
        >>> atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))  # doctest: +SKIP
    """
    with atomic_open(path, "w", encoding=encoding, newline="") as handle:
        handle.write(text)
    return Path(path)


def atomic_write_csv(path: str | Path, frame: Any, **to_csv_kwargs: Any) -> Path:
    """Write a pandas DataFrame with ``frame.to_csv(tmp, **to_csv_kwargs)`` atomically; returns ``path``.

    Text cells a spreadsheet would run as a formula (``=…``, ``+…``, ``-…``, ``@…``, tab, CR) are written with a
    leading ``'`` (:func:`medmoe.utils.csv_cells.escape_frame`); numbers are written as they are.

    Example:
        >>> atomic_write_csv(out / "predictions.csv", table, index=False)  # doctest: +SKIP
    """
    safe = escape_frame(frame)
    if "quoting" not in to_csv_kwargs:
        to_csv_kwargs["quoting"] = csv_quoting(frame_cells(safe if hasattr(safe, "columns") else safe.to_frame()))
    return atomic_write(path, lambda tmp: safe.to_csv(tmp, **to_csv_kwargs))


def atomic_write_rows(
    path: str | Path, rows: Iterable[Mapping[str, Any]], fieldnames: Sequence[str], lineterminator: str = "\n"
) -> Path:
    """Write dict rows with ``csv.DictWriter`` atomically, formula cells escaped like :func:`atomic_write_csv`.

    Example:
        >>> atomic_write_rows(root / "cohort.csv", records, ["id", "image", "label"])  # doctest: +SKIP
    """
    header = [escape_cell(f) for f in fieldnames]
    safe = [{escape_cell(k): escape_cell(v) for k, v in row.items()} for row in rows]
    quoting = csv_quoting([*header, *(v for row in safe for v in row.values())])
    with atomic_open(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, lineterminator=lineterminator, quoting=quoting)
        writer.writeheader()
        writer.writerows(safe)
    return Path(path)


def atomic_save_figure(path: str | Path, figure: Any, **savefig_kwargs: Any) -> Path:
    """Save a matplotlib ``Figure`` with ``figure.savefig(tmp, **savefig_kwargs)`` atomically; returns ``path``.

    The format comes from ``savefig_kwargs["format"]`` or, by default, the extension of ``path``.
    """
    savefig_kwargs.setdefault("format", Path(path).suffix.lstrip(".").lower() or "png")
    return atomic_write(path, lambda tmp: figure.savefig(tmp, **savefig_kwargs))


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """``torch.save(obj, tmp)`` then rename: a checkpoint is complete or absent, never truncated."""
    import torch  # not at import: the cohort and evaluation command lines do not need torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def is_temp_name(name: str) -> bool:
    """Whether a file name is an :func:`atomic_path` temp file (``.last.pt.k2x9_a0q.tmp-medmoe.pt``).

    Example:
        >>> is_temp_name(".last.pt.k2x9_a0q.tmp-medmoe.pt"), is_temp_name(".last.pt.swp"), is_temp_name("last.pt")
        (True, False, False)
    """
    match = _TEMP_NAME.fullmatch(name)
    return bool(match) and _suffix(Path(match["target"])) == match["ext"]


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Remove the temp files that a process killed while writing (``kill -9``, power loss) left in ``folder``.

    Only names of :func:`is_temp_name` directly in ``folder`` are touched; each removal is logged as a warning.
    Call it when a run starts, before anything writes into ``folder`` (no other process may be writing there).

    Returns:
        The removed files (empty when ``folder`` does not exist).

    Example:
        >>> remove_stale_temp_files(bundle / "models")  # doctest: +SKIP
        [PosixPath('.../models/.last.pt.k2x9_a0q.tmp-medmoe.pt')]
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if is_temp_name(p.name) and p.is_file())
    for path in stale:
        size = path.stat().st_size
        path.unlink(missing_ok=True)
        logger.warning(f"removed {path} ({size} bytes): a temp file left by an earlier run killed while saving")
    return stale
