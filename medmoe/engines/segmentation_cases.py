"""Per-case segmentation helpers of :class:`medmoe.engines.writers.EvaluationWriter`: named mask regions, the
``original_masks`` option, per-case batch entries and the Dice of two binary masks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["binary_dice", "mask_regions_of", "original_mask_spec", "per_case"]


def mask_regions_of(task: str, spec: Mapping, regions: Mapping[str, Sequence[int]] | None) -> dict[str, list[int]]:
    """Named regions of a segmentation task (default: one per foreground class), checked against its classes."""
    classes = int(spec["classes"])
    if regions is None:
        return {str(k): [k] for k in range(1, classes)}
    out = {str(name): [int(k) for k in members] for name, members in regions.items()}
    if not out or any(not m or min(m) < 1 or max(m) >= classes for m in out.values()):
        raise ValueError(
            f"mask_regions['{task}'] must map region names to non-empty lists of foreground classes 1..{classes - 1},"
            f" got {dict(regions)}"
        )
    return out


def original_mask_spec(task: str, segmentation_tasks: Mapping, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Check one ``original_masks`` entry: geometry key and restore callable, truth key and loader together."""
    if task not in segmentation_tasks:
        raise ValueError(f"original_masks names '{task}', which is not a segmentation task")
    spec = dict(spec)
    unknown = sorted(set(spec) - {"geometry_key", "restore", "truth_key", "load_truth"})
    if unknown or "geometry_key" not in spec or not callable(spec.get("restore")):
        raise ValueError(
            f"original_masks['{task}'] needs 'geometry_key' and a callable 'restore' (optional 'truth_key' with a "
            f"callable 'load_truth'); got keys {sorted(spec)}"
        )
    if ("truth_key" in spec) != callable(spec.get("load_truth")):
        raise ValueError(f"original_masks['{task}']: give 'truth_key' and a callable 'load_truth' together")
    return spec


def per_case(batch: Mapping[str, Any], key: str | None, n: int, task: str) -> list:
    """``batch[key]`` as one entry per case, with a clear error when the batch lacks it."""
    if key is None or key not in batch:
        raise ValueError(
            f"original_masks['{task}']: the batch has no key '{key}' (keys: {sorted(map(str, batch))}); "
            "add it in the preprocessing"
        )
    values = batch[key]
    values = list(values) if not torch.is_tensor(values) else list(values.cpu())
    if len(values) != n:
        raise ValueError(f"batch key '{key}' holds {len(values)} entries for {n} cases")
    return values


def binary_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty."""
    total = int(pred.sum()) + int(truth.sum())
    return 2.0 * int(np.count_nonzero(pred & truth)) / total if total else float("nan")
