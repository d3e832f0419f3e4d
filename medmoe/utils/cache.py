"""The cache folder shared by demo cohorts and compiled kernels."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_root"]


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
