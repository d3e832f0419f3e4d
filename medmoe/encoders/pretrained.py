"""Pretrained weights from local files (or timm's own, when asked): one loader for every encoder.

:func:`load_pretrained` reads a ``.pt`` / ``.pth`` / ``.bin`` (``torch.load(weights_only=True)``) or ``.safetensors``
file, maps its keys to the module's layout (``key_map``), adapts RGB stems to the module's input channels as timm
does (:func:`timm.models.adapt_input_conv`) and loads every tensor, or raises one ``ValueError`` that names the file
and lists the missing, unexpected and shape-mismatched keys. ``source="timm:<model_name>"`` takes timm's released
weights for that model (timm's cache or the network; never used unless named).
"""

from __future__ import annotations

import fnmatch
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "DEFAULT_IGNORE_MISSING",
    "LoadReport",
    "adapt_rgb_stem",
    "load_pretrained",
    "prefix_key_map",
    "read_state_dict",
    "resolve_weights",
    "timm_features_key_map",
    "timm_state_dict",
]

StateDict = Mapping[str, torch.Tensor]
KeyMap = Mapping[str, str] | Callable[[StateDict], StateDict]

DEFAULT_IGNORE_MISSING = ("*num_batches_tracked",)
"""Target keys that may be absent from a checkpoint: BatchNorm's step counters (not weights)."""

_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_CONTAINER_KEYS = ("state_dict", "model", "network", "module")
_LIST_LIMIT = 20


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did: the source and the target keys per outcome."""

    source: str
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)  # loaded after adapting input channels
    ignored_missing: list[str] = field(default_factory=list)
    ignored_unexpected: list[str] = field(default_factory=list)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: ``.safetensors`` or a torch file (``.pt``, ``.pth``, ``.bin``, ``.ckpt``).

    A torch file is read with ``torch.load(weights_only=True)`` on the CPU; a checkpoint dict that holds the weights
    under ``state_dict`` / ``model`` / ``network`` / ``module`` is unwrapped, and a DDP ``module.`` prefix dropped.

    Raises:
        ValueError: on a missing file, an unknown suffix, or a file that holds no mapping of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pretrained weights file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    elif suffix in _TORCH_SUFFIXES:
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise ValueError(
            f"pretrained weights file '{path}' has an unknown suffix '{suffix}': use .safetensors or one of "
            f"{', '.join(_TORCH_SUFFIXES)}"
        )
    while isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        inner = next((state[k] for k in _CONTAINER_KEYS if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, Mapping) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained weights file '{path}' holds no state dict (a mapping of names to tensors)")
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def timm_state_dict(model_name: str) -> dict[str, torch.Tensor]:
    """timm's released weights for ``model_name`` (from timm's cache, or downloaded when the machine is online).

    Raises:
        ValueError: naming the model when timm cannot provide the weights (offline and not cached, unknown name).
    """
    import timm

    try:
        model = timm.create_model(model_name, pretrained=True)
    except Exception as err:  # timm raises RuntimeError / OSError / HF hub errors: report them as one cause
        raise ValueError(
            f"timm could not provide pretrained weights for '{model_name}' ({type(err).__name__}: {err}); "
            "download them on a machine that is online (they land in timm's cache) or pass a local weights file"
        ) from err
    return model.state_dict()


def resolve_weights(source: str | os.PathLike | StateDict) -> tuple[str, dict[str, torch.Tensor]]:
    """``(name, state dict)`` of a weights file, a state dict (``"<state dict>"``) or ``"timm:<model_name>"``."""
    if isinstance(source, Mapping):
        return "<state dict>", dict(source)
    text = os.fspath(source)
    if text.startswith("timm:"):
        return text, timm_state_dict(text[len("timm:") :])
    return text, read_state_dict(text)


def _apply_key_map(state: StateDict, key_map: KeyMap | None) -> dict[str, torch.Tensor]:
    if key_map is None:
        return dict(state)
    if callable(key_map):
        return dict(key_map(state))
    out = {}
    for key, value in state.items():  # longest matching source prefix wins
        prefix = max((p for p in key_map if key.startswith(p)), key=len, default=None)
        out[key if prefix is None else key_map[prefix] + key[len(prefix) :]] = value
    return out


def _adapt_input(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """An RGB conv stem ``(o, 3, *k)`` adapted to ``(o, c, *k)`` as timm does, or None if it is not one."""
    if source.dim() != 4 or source.shape[1] != 3 or target.dim() != 4:
        return None
    if source.shape[0] != target.shape[0] or source.shape[2:] != target.shape[2:]:
        return None
    return adapt_rgb_stem(source, int(target.shape[1]))


def adapt_rgb_stem(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A conv weight ``(o, 3, *k)`` for ``in_channels`` inputs as timm adapts it (:func:`timm.models.adapt_input_conv`:
    1 channel sums RGB; more repeat RGB, rescaled). A weight that already has ``in_channels`` comes back unchanged."""
    if weight.shape[1] == in_channels:
        return weight
    from timm.models import adapt_input_conv

    return adapt_input_conv(in_channels, weight)


def _listing(title: str, keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT]) + (
        f", ... ({len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else ""
    )
    return f"\n  {title} ({len(keys)}): {shown}"


def load_pretrained(
    module: nn.Module,
    source: str | os.PathLike | StateDict,
    key_map: KeyMap | None = None,
    strict: bool = True,
    ignore_missing: Sequence[str] = DEFAULT_IGNORE_MISSING,
    ignore_unexpected: Sequence[str] = (),
    name: str | None = None,
) -> LoadReport:
    """Load pretrained weights into ``module``: every key loaded, or one error that lists what did not fit.

    Args:
        module: the network (or part of it) to load into, in place.
        source: a weights file (``.safetensors``, ``.pt``, ``.pth``, ``.bin``, ``.ckpt``), a state dict, or
            ``"timm:<model_name>"`` for timm's released weights (its cache, or online).
        key_map: how source keys become ``module`` keys: a mapping of source prefix -> target prefix (the longest
            match wins), or a callable from the source state dict to a state dict in ``module``'s layout (e.g.
            :func:`timm_features_key_map`, :func:`medmoe.encoders.timm_vit.vit_block_key_map`).
        strict: raise on any missing / unexpected / mismatched key; ``False`` loads what fits and warns.
        ignore_missing: ``fnmatch`` patterns of target keys that may be absent (default: BatchNorm counters).
        ignore_unexpected: ``fnmatch`` patterns of source keys the module has no place for (e.g. a classifier).
        name: how messages name the source (default: the path, ``timm:<name>`` or ``<state dict>``).

    Returns:
        A :class:`LoadReport`. Ignored keys are reported with a warning.

    Raises:
        ValueError: naming the source and listing missing, unexpected and shape-mismatched keys (``strict``).

    A 4D source weight with 3 input channels whose target differs only in input channels is an RGB stem: it is
    adapted with :func:`timm.models.adapt_input_conv` (1 channel: the sum over RGB) and listed in ``adapted``.

    Example::

        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3))
        >>> rgb = {"0.weight": torch.randn(4, 3, 3, 3), "0.bias": torch.zeros(4)}
        >>> load_pretrained(net, rgb).adapted
        ['0.weight']
    """
    resolved, raw = resolve_weights(source)
    name = name or resolved
    state = _apply_key_map(raw, key_map)
    target = module.state_dict()
    report = LoadReport(name)
    loadable: dict[str, torch.Tensor] = {}
    missing, mismatched = [], []
    for key, tensor in target.items():
        if key not in state:
            (report.ignored_missing if _matches(key, ignore_missing) else missing).append(key)
            continue
        value = state[key]
        if value.shape != tensor.shape:
            adapted = _adapt_input(value, tensor)
            if adapted is None:
                mismatched.append(f"{key} {tuple(value.shape)} -> {tuple(tensor.shape)}")
                continue
            value = adapted
            report.adapted.append(key)
        loadable[key] = value.to(dtype=tensor.dtype)
        report.loaded.append(key)
    unexpected = []
    for key in state:
        if key not in target:
            (report.ignored_unexpected if _matches(key, ignore_unexpected) else unexpected).append(key)
    if missing or unexpected or mismatched:
        message = (
            f"pretrained weights '{name}' do not fit {type(module).__name__}"
            + (_listing("missing in the file", missing) if missing else "")
            + (_listing("unexpected (no place in the model)", unexpected) if unexpected else "")
            + (_listing("shape mismatch (file -> model)", mismatched) if mismatched else "")
            + "\n  check that the file matches the architecture and sizes (model name, hidden size, patch size)"
        )
        if strict:
            raise ValueError(message)
        warnings.warn(message + "; loaded the rest (strict=False)", stacklevel=2)
    if report.ignored_missing or report.ignored_unexpected:
        warnings.warn(
            f"pretrained weights '{name}': left out by the allow-lists"
            + (_listing("missing (kept as initialised)", report.ignored_missing) if report.ignored_missing else "")
            + (_listing("unused from the file", report.ignored_unexpected) if report.ignored_unexpected else ""),
            stacklevel=2,
        )
    module.load_state_dict(loadable, strict=False)
    return report


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def timm_features_key_map(features_net: nn.Module) -> Callable[[StateDict], StateDict]:
    """Key map from a full timm model's checkpoint to its ``features_only`` form (``features_net``).

    timm's feature wrappers rename modules: ``stages.0.x`` -> ``stages_0.x`` (``FeatureListNet`` flattening a
    sequential) or ``x`` -> ``model.x`` (``FeatureGetterNet``). A source key keeps its name when the target has it,
    else takes the first of these renamings that the target has, else stays as it is (and is reported unexpected).
    """
    targets = set(features_net.state_dict())

    def convert(state: StateDict) -> StateDict:
        out = {}
        for key, value in state.items():
            head, _, rest = key.partition(".")
            second, _, tail = rest.partition(".")
            candidates = (key, f"model.{key}", f"{head}_{second}.{tail}" if tail else key)
            out[next((c for c in candidates if c in targets), key)] = value
        return out

    return convert


def prefix_key_map(prefix: str) -> Callable[[StateDict], StateDict]:
    """Key map that takes the part of a larger checkpoint under ``prefix`` (e.g. ``"encoders.encoders.mri."`` of a
    whole I2MoE file), prefix stripped; keys outside it belong to other modules and are not offered to the target."""

    def convert(state: StateDict) -> StateDict:
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    return convert
