"""Small shared helpers: atomic file writing, the cache folder, a headless matplotlib."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_text", "default_cache_root", "headless_pyplot"]


def default_cache_root() -> Path:
    """Cache root: ``$MEDMOE_CACHE`` if set, else ``~/.cache/medmoe``.

    Returns:
        the folder (not created).

    Example:
        >>> isinstance(default_cache_root(), Path)
        True
    """
    env = os.environ.get("MEDMOE_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medmoe"


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it over ``path``.

    A crash or an exception never leaves a half-written ``path``; the temp file is removed. The file gets the
    permissions of a normal ``open()`` (``0o666`` minus the umask), not ``mkstemp``'s private ``0o600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def headless_pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (plots are only written to files).

    Imported on first use, so modules that plot do not import matplotlib at import time.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
