"""One door to the three ways a bundle keeps its preprocessed samples: not at all, in RAM, or on disk.

``cache="ram"`` (medmoe's :class:`~medmoe.data.CacheDataset`) runs the deterministic transforms of the whole cohort
once and keeps the results in memory: fastest, but a few thousand full-resolution exams do not fit.
``cache="disk"`` (MONAI's ``PersistentDataset``) writes each sample's deterministic result to ``cache_dir`` the
first time it is read and loads it from there afterwards, in this run and the next ones: memory stays flat in
cohort size and no DICOM is decoded twice. ``cache="none"`` (MONAI's ``Dataset``) transforms every sample on every
read. In every mode the random transforms (those after the first ``Randomizable`` one) run on every read, so
augmentation still differs between epochs.

The disk cache key of a sample is the hash of its record (file paths, labels, ...) joined with a fingerprint of the
deterministic transforms (:func:`transform_fingerprint`): their classes, arguments and state, and medmoe's
version. A changed transform chain (another image size, crop, normalisation, fitted tabular statistics) writes new
files instead of reading stale ones; the old files stay until the folder is deleted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import Dataset, PersistentDataset

from .cache_dataset import CacheDataset

__all__ = ["CACHE_MODES", "make_dataset", "transform_fingerprint"]

CACHE_MODES = ("none", "ram", "disk")


def _describe(value: Any, seen: set[int]) -> Any:
    """A JSON-able description of ``value`` that changes when its content changes (stable across processes)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return hashlib.sha256(value).hexdigest()
    if isinstance(value, (torch.Tensor, np.ndarray)):
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        return {
            "array": str(array.dtype),
            "shape": list(array.shape),
            "sha": hashlib.sha256(array.tobytes()).hexdigest(),
        }
    if isinstance(value, (np.generic, torch.dtype, torch.device, Path, type)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return [_describe(v, seen) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_describe(v, seen) for v in value), key=repr)
    if isinstance(value, dict):
        return {repr(k): _describe(v, seen) for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))}
    if isinstance(value, (types.FunctionType, types.MethodType)):
        function = value.__func__ if isinstance(value, types.MethodType) else value
        code = function.__code__
        return {
            "function": f"{function.__module__}.{function.__qualname__}",
            "code": hashlib.sha256(code.co_code).hexdigest(),
            "consts": [_describe(c, seen) for c in code.co_consts if not isinstance(c, types.CodeType)],
            "closure": [_describe(c.cell_contents, seen) for c in function.__closure__ or ()],
            "defaults": _describe(function.__defaults__, seen),
        }
    if isinstance(value, types.ModuleType):
        return {"module": value.__name__}
    if isinstance(value, functools.partial):
        return {"partial": _describe([value.func, value.args, value.keywords], seen)}
    if isinstance(value, types.BuiltinFunctionType):
        return {"builtin": f"{getattr(value, '__module__', '')}.{value.__qualname__}"}
    if isinstance(value, np.random.RandomState):  # a transform's own generator is not part of what it computes
        return "RandomState"
    if id(value) in seen:
        return "<cycle>"
    seen = seen | {id(value)}
    cls = type(value)
    state = vars(value) if hasattr(value, "__dict__") else {}
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "state": _describe(state, seen)}


def transform_fingerprint(transforms: Sequence[Callable]) -> bytes:
    """A sha256 key of ``transforms``' classes, arguments and state and of medmoe's version.

    Used as MONAI ``PersistentDataset``'s ``hash_transform`` (it passes the deterministic transforms up to the first
    random one), so that a changed transform chain reads and writes other cache files.

    Args:
        transforms: the transforms (instances) to fingerprint.

    Returns:
        The hex digest as bytes, as MONAI's hashing functions return it.

    Example:
        >>> from monai.transforms import ScaleIntensityd
        >>> transform_fingerprint([ScaleIntensityd("x", minv=0.0)]) != transform_fingerprint([ScaleIntensityd("x")])
        True
    """
    from medmoe import __version__

    text = json.dumps({"medmoe": __version__, "transforms": _describe(list(transforms), set())}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest().encode("utf-8")


def make_dataset(
    data: Sequence[dict],
    transform: Callable,
    cache: str = "ram",
    cache_dir: str | Path | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    cache_rate: float = 1.0,
) -> Dataset:
    """The dataset of ``data`` under ``transform`` with the chosen cache.

    Args:
        data: the sample records (dicts of file paths, labels, ids), e.g. ``cohort.records("train")``.
        transform: the whole transform chain (a ``Compose``): deterministic preprocessing, then random augmentation.
        cache: ``"none"`` (transform on every read), ``"ram"`` (the deterministic part of every sample kept in
            memory, filled before training), ``"disk"`` (kept as one file per sample under ``cache_dir``, filled on
            first read and reused by later runs).
        cache_dir: folder of the disk cache (created when missing); required for ``cache="disk"``. Several datasets
            (train, validation) may share one folder: a file's name is the hash of its record and transform chain.
        num_workers: threads that fill the RAM cache (None: one per CPU); unused by the other modes (the
            DataLoader's ``num_workers`` fills the disk cache).
        progress: show a progress bar while the RAM cache fills.
        cache_rate: fraction of the samples the RAM cache keeps.

    Returns:
        a MONAI ``Dataset``, medmoe ``CacheDataset`` or MONAI ``PersistentDataset``.

    Raises:
        ValueError: for an unknown ``cache`` or ``cache="disk"`` without ``cache_dir``.

    Example:
        >>> ds = make_dataset(cohort.records("train"), transform, cache="disk", cache_dir="cache")  # doctest: +SKIP
        # in a bundle config: {"_target_": "medmoe.data.make_dataset", "data": ..., "transform": ...,
        #                      "cache": "@cache", "cache_dir": "@cache_dir"}
    """
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {', '.join(CACHE_MODES)} (bundle option --cache), got {cache!r}")
    if cache == "none":
        return Dataset(data, transform)
    if cache == "ram":
        return CacheDataset(data, transform, cache_rate=cache_rate, num_workers=num_workers, progress=progress)
    if cache_dir is None or str(cache_dir) == "":
        raise ValueError("cache='disk' needs a cache folder: set cache_dir (bundle option --cache_dir PATH)")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    return PersistentDataset(data, transform, cache_dir=cache_dir, hash_transform=transform_fingerprint)
