"""Reading checkpoints with errors that name the file and, where it can be told, the config option that differs.

PyTorch's own errors (``size mismatch for msoe.blocks.0.norm1.weight``, ``failed finding central directory``,
``[Errno 22] Invalid argument``) name neither the checkpoint nor the bundle option behind them. :func:`read_checkpoint`
and :func:`load_model_state` raise ``ValueError`` instead, saying which file, which tensors, their shapes, and the
likely option: ``hidden_size`` (one width differs across many tensors), ``missing_modality`` (the missing-view fill's
tensors differ: ``learned`` keeps ``missing_fill.missing_tokens``, ``retriever`` a ``missing_fill.retriever``,
``zero`` neither), ``tasks`` (a classification head), ``segmentation_tasks`` / ``mask_classes`` (a segmentation
head), the number of experts, or another model altogether.
"""

from __future__ import annotations

import pickle
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["explain_mismatch", "load_model_state", "read_checkpoint"]

_SHOWN = 3  # tensors listed per kind of difference
_MOE = re.compile(r"\.(experts|router|gate)\.")
_MOE_BLOCKS = ("msoe", "mtoe", "fusion")  # M4oE's options msoe_experts, mtoe_experts, fusion_experts


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with errors that name ``path``.

    Raises:
        FileNotFoundError: naming the checkpoint when it does not exist.
        ValueError: ``checkpoint <path> is truncated or not a PyTorch file`` (a save killed mid-write by an older
            version, a partial copy, another format), or ``... holds objects other than tensors`` (refused, never
            unpickled).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (train first, or pass --ckpt_path)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise ValueError(
                f"checkpoint {path} holds objects other than tensors and numbers and was refused "
                "(medmoe loads checkpoints with weights_only=True); use a model.pt / last.pt written by medmoe"
            ) from err
        raise ValueError(f"checkpoint {path} is truncated or not a PyTorch file ({err})") from err
    except (PermissionError, IsADirectoryError):
        raise
    except (RuntimeError, OSError, EOFError, KeyError, ValueError) as err:
        raise ValueError(
            f"checkpoint {path} is truncated or not a PyTorch file ({type(err).__name__}: {err}); "
            "copy it again or train again"
        ) from err


def _missing_fill(keys: set[str]) -> str:
    if any(k.startswith("missing_fill.retriever") for k in keys):
        return "retriever"
    return "learned" if "missing_fill.missing_tokens" in keys else "zero"


def _group(keys: set[str]) -> str:
    """A few keys, shortest first, and how many more."""
    shown = sorted(keys, key=lambda k: (len(k), k))[:_SHOWN]
    more = f" (+{len(keys) - len(shown)} more)" if len(keys) > len(shown) else ""
    return ", ".join(shown) + more


def _width(ckpt: Mapping[str, Any], model: Mapping[str, Any], resized: list[str]) -> tuple[tuple[int, int], int] | None:
    """The (checkpoint, network) size pair that most resized tensors share, and in how many, if it is most of them."""
    pairs = Counter()
    for k in resized:
        a, b = tuple(ckpt[k].shape), tuple(model[k].shape)
        if len(a) == len(b):
            pairs.update({(x, y) for x, y in zip(a, b) if x != y})
    if not pairs:
        return None
    pair, count = pairs.most_common(1)[0]
    return (pair, count) if count >= max(3, len(resized) // 2) else None


def _hints(
    ckpt: Mapping[str, Any], model: Mapping[str, Any], resized: list[str], only_ckpt: set[str], only_model: set[str]
) -> list[str]:
    shared = len(set(ckpt) & set(model))
    if shared < len(model) / 2:
        return [
            f"the network_def (another model or bundle? they share {shared} of this network's {len(model)} tensors)"
        ]
    hints = []
    fills = (_missing_fill(set(ckpt)), _missing_fill(set(model)))
    if fills[0] != fills[1]:
        hints.append(f"missing_modality ({fills[0]!r} in the checkpoint, {fills[1]!r} here)")
    width = _width(ckpt, model, resized)
    # a head output size (dim 0) that differs other than by the width, or a head only one side has: tasks / classes
    outputs = [*only_ckpt, *only_model] + [
        k
        for k in resized
        if ckpt[k].shape[:1] != model[k].shape[:1]
        and (width is None or (ckpt[k].shape[0], model[k].shape[0]) != width[0])
    ]
    if any(k.startswith("head.") for k in outputs):
        hints.append("tasks (the tasks or their numbers of classes)")
    if any(k.startswith("seg_") for k in outputs):
        hints.append("segmentation_tasks / mask_classes (classes of a segmentation task)")
    moe = [k for k in resized if _MOE.search(k)]
    if moe and len(moe) == len(resized):  # only experts and routers differ
        if any(".experts." in k and ckpt[k].shape[0] != model[k].shape[0] for k in moe):  # the expert axis
            names = {f"{k.split('.')[0]}_experts" if k.split(".")[0] in _MOE_BLOCKS else "num_experts" for k in moe}
            hints.append(f"the number of experts ({' / '.join(sorted(names))})")
        elif width is not None:
            (a, b), _ = width
            hints.append(f"mlp_dim (the experts' hidden width: {a} in the checkpoint, {b} here)")
    elif width is not None:
        (a, b), count = width
        hints.append(f"hidden_size (a width of {a} in the checkpoint, {b} here, in {count} tensors)")
    if not hints:
        hints.append("the network_def (another model or bundle?)")
    return hints


def explain_mismatch(ckpt: Mapping[str, Any], model: Mapping[str, Any], path: str | Path, network: str) -> str | None:
    """Why state dict ``ckpt`` (from ``path``) does not fit ``model`` (of class ``network``); None when it fits."""
    ckpt_keys, model_keys = set(ckpt), set(model)
    only_ckpt, only_model = ckpt_keys - model_keys, model_keys - ckpt_keys
    resized = sorted(
        k
        for k in ckpt_keys & model_keys
        if isinstance(ckpt[k], torch.Tensor) and isinstance(model[k], torch.Tensor) and ckpt[k].shape != model[k].shape
    )
    if not (resized or only_ckpt or only_model):
        return None
    lines = [f"checkpoint {path} does not fit this {network}:"]
    for k in resized[:_SHOWN]:
        lines.append(f"  size mismatch for {k}: {tuple(ckpt[k].shape)} in the checkpoint, {tuple(model[k].shape)} here")
    if len(resized) > _SHOWN:
        lines.append(f"  ... and {len(resized) - _SHOWN} more tensors of another size")
    if only_ckpt:
        lines.append(f"  only in the checkpoint: {_group(only_ckpt)}")
    if only_model:
        lines.append(f"  only in this network: {_group(only_model)}")
    lines.append(
        "  the config option that differs is probably: "
        + "; ".join(_hints(ckpt, model, resized, only_ckpt, only_model))
    )
    lines.append("  use the config the checkpoint was trained with (or pass the matching --ckpt_path)")
    return "\n".join(lines)


def load_model_state(network: torch.nn.Module, state: Mapping[str, Any], path: str | Path) -> None:
    """``network.load_state_dict(state)`` (strict), raising ``ValueError`` from :func:`explain_mismatch` on a misfit.

    Raises:
        ValueError: naming ``path``, the differing tensors and shapes and the likely config option.
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    problem = explain_mismatch(state, network.state_dict(), path, type(network).__name__)
    if problem:
        raise ValueError(problem)
    try:
        network.load_state_dict(state)
    except RuntimeError as err:  # e.g. an _extra_state that does not fit (a retriever bank of another shape)
        raise ValueError(f"checkpoint {path} does not fit this {type(network).__name__}: {err}") from err
