"""``model_options.json``: what inference needs from training, written beside ``model.pt`` and checked by inference.

A state dict says nothing about the order of the modalities (M4oE's modality embeddings are one ``(M, d)`` tensor),
and its shapes tell tasks and mask classes only through a size mismatch. So :class:`~medmoe.engines.CheckpointHandler`
writes, with every ``model.pt``, a small JSON of the network's own options::

    {"network": "M4oE", "modalities": [...], "tasks": {"density": 4, ...},
     "segmentation_tasks": {"cup": {"modality": "fundus", "classes": 2}}}

and a bundle's ``inference.json`` (and :mod:`medmoe.export`) calls :func:`check_model_options` before loading the
weights: an option that differs is named (``modalities``, ``tasks``, ``mask_classes``) with both values. Options that
change tensor shapes only (``hidden_size``, experts) are named by :func:`medmoe.engines.checkpoint_io.explain_mismatch`
when the weights are loaded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..utils import atomic_write_text

__all__ = [
    "OPTIONS_FILENAME",
    "check_model_options",
    "check_tabular",
    "model_options",
    "options_path",
    "saved_option",
    "write_model_options",
]

logger = logging.getLogger(__name__)

OPTIONS_FILENAME = "model_options.json"


def options_path(ckpt_path: str | Path) -> Path:
    """The options file beside checkpoint ``ckpt_path`` (``models/model.pt`` -> ``models/model_options.json``)."""
    ckpt_path = Path(ckpt_path)
    return ckpt_path.with_name(OPTIONS_FILENAME if ckpt_path.stem == "model" else f"{ckpt_path.stem}_options.json")


def model_options(network: nn.Module) -> dict[str, Any]:
    """The options of ``network`` (a DDP wrapper unwrapped) that inference must match: its class, ``modalities``
    (``modality_mask`` order), classification ``tasks`` and ``segmentation_tasks`` (with their classes)."""
    module = getattr(network, "module", network)
    options: dict[str, Any] = {"network": type(module).__name__, "modalities": list(module.modalities)}
    options["tasks"] = {k: int(v) for k, v in getattr(module, "tasks", {}).items()}
    segmentation = getattr(module, "segmentation_tasks", {})
    if segmentation:
        options["segmentation_tasks"] = {k: dict(v) for k, v in segmentation.items()}
    embedder = getattr(module, "embedder", None)
    if hasattr(embedder, "shared_backbone"):  # a timm embedder: one backbone for all views, or one per view
        options["shared_backbone"] = bool(embedder.shared_backbone)
    return options


def saved_option(ckpt_path: str | Path, key: str, default: Any = None) -> Any:
    """One option from the ``model_options.json`` beside ``ckpt_path`` (``default`` without the file or the key).

    Inference configs take structural options the weights depend on from it, e.g. ``shared_backbone`` (which the
    training run may have chosen by default from its pretrained weights, a file inference does not need).
    """
    path = options_path(ckpt_path)
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text()).get(key, default)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); copy it again from the training run") from err


def write_model_options(ckpt_path: str | Path, network: nn.Module) -> Path | None:
    """Write :func:`model_options` of ``network`` beside ``ckpt_path`` (atomically); return the file's path.

    A module without ``modalities`` (not a medmoe model, e.g. in a unit test of the checkpoint handler) gets no file:
    None is returned.
    """
    if not hasattr(getattr(network, "module", network), "modalities"):
        return None
    path = options_path(ckpt_path)
    atomic_write_text(path, json.dumps(model_options(network), indent=2) + "\n")
    return path


def _differences(saved: Mapping[str, Any], given: Mapping[str, Any]) -> list[str]:
    lines = []
    for key, value in given.items():
        if key == "segmentation_tasks":
            saved_seg, value = saved.get(key, {}), {k: dict(v) for k, v in (value or {}).items()}
            if set(saved_seg) != set(value):
                lines.append(f"segmentation_tasks: {sorted(saved_seg)} in the checkpoint, {sorted(value)} here")
            for task in set(saved_seg) & set(value):
                a, b = saved_seg[task], value[task]
                if int(a.get("classes", 0)) != int(b.get("classes", 0)):
                    lines.append(
                        f"mask_classes ({task}): {a.get('classes')} in the checkpoint, {b.get('classes')} here"
                    )
                if a.get("modality") != b.get("modality"):
                    lines.append(
                        f"segmentation_tasks ({task}): modality {a.get('modality')!r} in the checkpoint, "
                        f"{b.get('modality')!r} here"
                    )
            continue
        if key == "tasks":
            value = {k: int(v) for k, v in value.items()}
        elif key == "modalities":
            value = list(value)
        if saved.get(key) != value:
            lines.append(f"{key}: {saved.get(key)!r} in the checkpoint, {value!r} here")
    return lines


def check_model_options(ckpt_path: str | Path, **options: Any) -> dict[str, Any]:
    """Compare ``options`` (``modalities``, ``tasks``, ``segmentation_tasks`` as the config gives them) with the
    ``model_options.json`` beside ``ckpt_path``; return the saved options.

    A checkpoint without the file (written before medmoe wrote it, or copied alone) is logged as a warning: its tasks
    and mask classes are then checked by tensor shapes only, and the modality order not at all.

    Raises:
        ValueError: naming each option that differs, both values, and the file.
    """
    path = options_path(ckpt_path)
    if not path.is_file():
        logger.warning(
            f"{path} not found beside the checkpoint: modality order, tasks and mask classes are not checked against "
            "the config (copy it with the checkpoint; medmoe's training writes it with every model.pt)"
        )
        return {}
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); copy it again from the training run") from err
    compare_options(saved, f"the training run of {ckpt_path} (saved in {path})", **options)
    return saved


def compare_options(saved: Mapping[str, Any], source: str, **options: Any) -> None:
    """Raise if ``options`` differ from the ``saved`` model options (read from ``source``, named in the message).

    Raises:
        ValueError: naming each option that differs and both values.
    """
    problems = _differences(saved, options)
    if problems:
        raise ValueError(
            f"the config differs from {source}:\n  "
            + "\n  ".join(problems)
            + "\n  set these options as in training (on the command line, e.g. --tasks ...), or pass the matching "
            "--ckpt_path"
        )


def check_tabular(preprocessor: Any, blocks: Mapping[str, Mapping[str, list[str]]], path: str | Path) -> Any:
    """``preprocessor`` (a fitted :class:`~medmoe.data.TabularPreprocessor` loaded from ``path``) if its blocks are
    the config's ``tabular_blocks``.

    Raises:
        ValueError: naming ``tabular_blocks``, both values and the file.
    """
    given = {
        name: {"numeric": list(spec.get("numeric", [])), "categorical": list(spec.get("categorical", []))}
        for name, spec in blocks.items()
    }
    if preprocessor.blocks != given:
        raise ValueError(
            f"tabular_blocks: {preprocessor.blocks} in {path} (the training run's fitted preprocessing), {given} here; "
            "set tabular_blocks as in training, or pass the matching --ckpt_path"
        )
    return preprocessor
