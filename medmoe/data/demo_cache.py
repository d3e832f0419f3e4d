"""Shared cache for the generated demo cohorts: one folder per demo and parameter set, written atomically."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from medmoe.utils import default_cache_root

__all__ = ["cached_demo", "default_cache_root", "demo_folder"]


def demo_folder(
    cache_dir: str | os.PathLike | None, name: str, defaults: dict[str, int], kwargs: dict
) -> tuple[Path, dict[str, int]]:
    """Check a demo's keyword arguments (integers) and return its cache folder and full parameter set.

    The folder is ``<cache root>/demo/<name>`` for the defaults and a parameter-suffixed sibling otherwise.

    Raises:
        ValueError: for keyword arguments not in ``defaults``.
    """
    unknown = set(kwargs) - set(defaults)
    if unknown:
        raise ValueError(f"unknown argument(s) {sorted(unknown)}; expected some of {sorted(defaults)}")
    params = {**defaults, **{k: int(v) for k, v in kwargs.items()}}
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root()
    if params != defaults:
        name += "_" + "_".join(f"{k}{v}" for k, v in params.items())
    return root / "demo" / name, params


def cached_demo(target: Path, make: Callable[[Path], Path], info: dict, description: str) -> Path:
    """``target/cohort.csv``, generating the demo into ``target`` on first use and reusing it afterwards.

    Generation goes into a temp folder next to ``target`` that is renamed into place when complete, so an
    interrupted run never leaves a half cohort, and concurrent callers (e.g. DDP ranks) end up with one copy.

    Args:
        target: the demo's cache folder (``<cache root>/demo/<name>[_<params>]``).
        make: writes the demo into the folder it is given and returns the path of its ``cohort.csv`` there.
        info: written as ``demo_info.json`` next to the CSV (name and parameters).
        description: what is generated, for the one-line message on stderr.

    Returns:
        path of ``cohort.csv``; its folder is the ``data_root``.

    Raises:
        RuntimeError: if ``target`` exists but holds no ``cohort.csv`` (delete it to regenerate).

    Example:
        >>> csv_path = cached_demo(Path("/tmp/demo/x"), make_x, {"name": "x"}, "the X demo")  # doctest: +SKIP
    """
    csv_path = target / "cohort.csv"
    if csv_path.is_file():
        return csv_path
    if target.exists():
        raise RuntimeError(f"demo cache folder {target} exists but has no cohort.csv; delete it to regenerate")
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"medmoe: generating {description} into {target} ...", flush=True, file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        make(tmp)
        (tmp / "demo_info.json").write_text(json.dumps(info, indent=2) + "\n")
        try:
            os.rename(tmp, target)
        except OSError:
            if not csv_path.is_file():  # someone else won the race only if the target is complete
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return csv_path
