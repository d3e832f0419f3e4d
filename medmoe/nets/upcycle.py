"""Sparse upcycling (Komatsuzaki et al., ICLR 2023) of M4oE's Soft MoE ViT blocks from a dense timm ViT checkpoint.

A dense ViT's blocks become M4oE's MoE blocks: norms and attention copied, every expert's MLP set to the dense MLP
(optionally plus small seeded noise), the Soft MoE router drawn fresh. See docs/methods/soft_moe.md, "Sparse
upcycling".
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..blocks.transformer import timm_block_key_map
from ..encoders import GroupedPatchEmbedding, LoadReport, load_pretrained, timm_patch_key_map
from ..encoders.pretrained import DEFAULT_IGNORE_MISSING, resolve_weights
from ..layers import SoftMoEMlp

__all__ = ["UpcycleReport", "default_block_map", "upcycle_from_dense", "upcycle_timm_vit"]

_ROUTER = ("*router.phi", "*router.scale", "*task_embedding")
_EXPERT_SOURCE = {"experts.w1": "fc1.weight", "experts.b1": "fc1.bias", "experts.w2": "fc2.weight"}
_EXPERT_SOURCE["experts.b2"] = "fc2.bias"
_PATCH_SOURCE = {"proj.weight": "patch_embed.proj.weight", "proj.bias": "patch_embed.proj.bias"}
_PATCH_SOURCE["position"] = "pos_embed"
_NO_PLACE = {
    "cls_token": "M4oE has no class token (its fusion stage pools per-task tokens)",
    "norm.weight": "the dense ViT's final norm (M4oE's heads have their own)",
    "norm.bias": "the dense ViT's final norm (M4oE's heads have their own)",
    "fc_norm.weight": "the dense ViT's pooled-feature norm",
    "fc_norm.bias": "the dense ViT's pooled-feature norm",
    "head.weight": "the dense ViT's classifier (another task)",
    "head.bias": "the dense ViT's classifier (another task)",
}


@dataclass
class UpcycleReport:
    """Where every tensor of the dense checkpoint went.

    Attributes:
        source: the checkpoint's name (path or ``<state dict>``).
        targets: model key -> checkpoint key it was set from (copies per modality / per expert in one tensor).
        unused: checkpoint key -> why it has no place in the model.
        initialised: model keys not from the checkpoint (routers, task embeddings, heads, ...): kept as built.
    """

    source: str
    targets: dict[str, str] = field(default_factory=dict)
    unused: dict[str, str] = field(default_factory=dict)
    initialised: list[str] = field(default_factory=list)


def default_block_map(model: nn.Module) -> dict[str, int]:
    """M4oE block -> dense ViT block index: MSoE block ``i`` <- block ``i``; the MToE <- block 0 (it reads the
    embedder's tokens, as MSoE block 0 does); fusion block ``j`` <- block ``msoe_depth + j`` (the dense stack's
    order continued)."""
    depth = len(model.msoe.blocks)
    mapping = {f"msoe.blocks.{i}": i for i in range(depth)}
    mapping["mtoe"] = 0
    if hasattr(model, "fusion"):
        mapping.update({f"fusion.{j}": depth + j for j in range(len(model.fusion))})
    return mapping


def upcycle_from_dense(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    noise_std: float = 0.0,
    seed: int = 0,
    block_map: Mapping[str, int] | None = None,
) -> UpcycleReport:
    """Initialise an :class:`~medmoe.nets.M4oE`'s patch embedding and Soft MoE ViT blocks from a dense timm ViT.

    Sparse upcycling (Komatsuzaki et al., "Sparse Upcycling: Training Mixture-of-Experts from Dense Checkpoints",
    ICLR 2023): each MoE block starts as a dense block, its norms and attention copied and every expert a copy of the
    dense MLP. The Soft MoE router (``phi``, ``scale``) and M4oE's task embeddings are not in a dense checkpoint:
    they keep the model's default init (``phi`` ~ N(0, 1/d) as vmoe's lecun-normal, ``scale`` 1), as sparse
    upcycling draws new router weights; the Soft MoE paper prescribes no other router init. Every modality of the
    grouped MSoE gets the same copy.

    Mapped (timm's ViT key layout): ``patch_embed.proj`` -> ``embedder.proj`` (RGB stem adapted to the model's input
    channels as timm does, one copy per modality), ``pos_embed`` -> ``embedder.position`` (class position dropped,
    grid resampled), ``blocks.N.{norm1, attn.qkv, attn.proj, norm2}`` copied, ``blocks.N.mlp.{fc1, fc2}`` -> every
    expert's ``w1/b1/w2/b2`` (see :func:`default_block_map` for which ``N``). ``cls_token``, the final ``norm`` /
    ``fc_norm``, ``head`` and dense blocks that no M4oE block takes are reported ``unused``.

    Args:
        model: an M4oE with the ``"patch"`` embedder, hidden size, MLP width, heads and patch size of the dense ViT.
        source: a weights file (``.safetensors``, ``.pt``, ``.pth``, ``.bin``) or a state dict of a timm ViT, or
            ``"timm:<vit_name>"`` for timm's released weights (its cache, or online).
        noise_std: Gaussian noise added to every expert's copy of the dense MLP weights (``w1``, ``w2``; biases
            exact), as a fraction of the dense weight's std, so that experts differ from the start; 0 = exact copies.
        seed: seed of that noise (a private generator: the global random state is untouched).
        block_map: M4oE block name (``"msoe.blocks.i"``, ``"mtoe"``, ``"fusion.j"``) -> dense block index; default
            :func:`default_block_map`. Blocks left out keep their init.

    Returns:
        An :class:`UpcycleReport`: which model tensor received which checkpoint tensor, what was unused and why.

    Raises:
        ValueError: naming the checkpoint, on keys outside timm's ViT layout (e.g. LayerScale ``ls1.gamma``), shapes
            that do not fit (a different width or patch size), a block index the checkpoint lacks, an unknown block
            name, or a model without the grouped patch embedder.

    Example::

        >>> import timm
        >>> from medmoe.nets import M4oE
        >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2,
        ...                         num_heads=4, mlp_ratio=2)
        >>> model = M4oE(["cc", "mlo"], {"density": 4}, image_size=32, patch_size=8, hidden_size=32, mlp_dim=64)
        >>> report = upcycle_from_dense(model, vit.state_dict(), noise_std=0.01)
        >>> report.targets["msoe.blocks.0.mlp.experts.w1"]
        'blocks.0.mlp.fc1.weight'
    """
    if isinstance(source, Mapping) and not all(isinstance(v, torch.Tensor) for v in source.values()):
        raise ValueError(
            "upcycle_from_dense takes one dense ViT checkpoint (a file or a state dict of tensors); per-modality "
            "weights files need a timm embedder (embedder='timm:<model_name>')"
        )
    name, state = resolve_weights(source)
    if not isinstance(getattr(model, "embedder", None), GroupedPatchEmbedding):
        raise ValueError(
            f"upcycling from '{name}' needs an M4oE with embedder='patch' (a grouped ViT patch embedding); for a "
            "timm CNN embedder pass the backbone's weights as pretrained_weights instead"
        )
    blocks = block_map if block_map is not None else default_block_map(model)
    depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    modules = dict(model.named_modules())
    for target, index in blocks.items():
        if target not in modules or not hasattr(modules[target], "attn"):
            raise ValueError(f"block_map names '{target}', not a transformer block of the model")
        if not 0 <= index < depth:
            raise ValueError(f"block_map maps '{target}' to dense block {index}, but '{name}' has {depth} blocks")
    report = UpcycleReport(name)
    with warnings.catch_warnings():  # the allow-listed router keys are reported in `initialised`, not warned
        warnings.simplefilter("ignore")
        loaded = load_pretrained(model.embedder, state, key_map=timm_patch_key_map(model.embedder), name=name)
        report.targets.update({f"embedder.{k}": _PATCH_SOURCE[k] for k in loaded.loaded})
        for position, (target, index) in enumerate(blocks.items()):
            block, mlp_name = modules[target], "moe" if hasattr(modules[target], "moe") else "mlp"
            prefix = f"blocks.{index}."
            key_map = timm_block_key_map(block, prefix, mlp_name)
            loaded = load_pretrained(block, state, key_map=key_map, ignore_missing=_ROUTER, name=name)
            for key in loaded.loaded:
                inner = key[len(mlp_name) + 1 :] if key.startswith(f"{mlp_name}.") else None
                origin = f"mlp.{_EXPERT_SOURCE[inner]}" if inner in _EXPERT_SOURCE else key.replace(mlp_name, "mlp")
                report.targets[f"{target}.{key}"] = prefix + origin
            if noise_std > 0:
                _add_noise(getattr(block, mlp_name).experts, noise_std, seed + position)
    used = set(report.targets.values())
    for key in state:
        if key in used:
            continue
        block = re.match(r"blocks\.(\d+)\.", key)
        if block is not None and int(block.group(1)) not in set(blocks.values()):
            report.unused[key] = f"dense block {block.group(1)} is not mapped to an M4oE block"
        elif key in _NO_PLACE:
            report.unused[key] = _NO_PLACE[key]
        else:
            raise ValueError(
                f"'{name}' has '{key}', outside timm's plain ViT layout (patch_embed, pos_embed, cls_token, blocks.N "
                "with norm1/attn.qkv/attn.proj/norm2/mlp.fc1/mlp.fc2, norm, head); upcycling supports that layout only"
            )
    report.initialised = [k for k in model.state_dict() if k not in report.targets]
    return report


def upcycle_timm_vit(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    noise_std: float = 0.0,
    seed: int = 0,
) -> LoadReport:
    """Upcycle a timm ViT built with ``mlp_layer=SoftMoEMlp...`` from the dense checkpoint of the same timm model.

    Every key loads as it is, except each Soft MoE block's ``mlp.fc1`` / ``mlp.fc2``, which become every expert's
    ``mlp.moe.experts.w1, b1, w2, b2`` (transposed, one copy per expert); the routers keep their default init (see
    :func:`upcycle_from_dense`). ``noise_std`` and ``seed`` as there.

    Returns:
        The :class:`~medmoe.encoders.LoadReport` (the routers are in ``ignored_missing``).

    Raises:
        ValueError: if ``model`` has no :class:`~medmoe.layers.SoftMoEMlp`, or, naming the file, on keys that do not
            fit (another architecture or size).

    Example::

        >>> import timm
        >>> dense = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2)
        >>> moe = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, mlp_layer=SoftMoEMlp.partial(4))
        >>> len(upcycle_timm_vit(moe, dense.state_dict()).ignored_missing)  # 2 blocks x (phi, scale)
        4
    """
    experts = {name: m.moe for name, m in model.named_modules() if isinstance(m, SoftMoEMlp)}
    if not experts:
        raise ValueError(f"{type(model).__name__} has no SoftMoEMlp to upcycle (build it with mlp_layer=SoftMoEMlp)")

    def convert(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in state.items():
            layer, _, kind = key.rpartition(".")
            mlp, _, fc = layer.rpartition(".")
            if mlp in experts and fc in ("fc1", "fc2") and kind in ("weight", "bias"):
                tensor = (value.t() if kind == "weight" else value.unsqueeze(0)).unsqueeze(0)
                out[f"{mlp}.moe.experts.{kind[0]}{fc[-1]}"] = tensor.repeat(experts[mlp].num_experts, 1, 1)
            else:
                out[key] = value
        return out

    with warnings.catch_warnings():  # the routers are reported in ignored_missing
        warnings.simplefilter("ignore")
        report = load_pretrained(model, source, key_map=convert, ignore_missing=(*_ROUTER, *DEFAULT_IGNORE_MISSING))
    if noise_std > 0:
        for position, moe in enumerate(experts.values()):
            _add_noise(moe.experts, noise_std, seed + position)
    return report


def _add_noise(experts: nn.Module, noise_std: float, seed: int) -> None:
    """``w += noise_std * std(w) * N(0, 1)`` on every expert's ``w1`` and ``w2``, from a private seeded generator."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for weight in (experts.w1, experts.w2):
            noise = torch.randn(weight.shape, generator=generator, dtype=weight.dtype)
            weight.add_(noise.to(weight.device) * noise_std * weight.std())
