"""Per-modality 2D image embedders that output tokens ``(g, b, n, d)``."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence

import torch
from monai.utils import ensure_tuple_rep
from torch import nn

from .pretrained import adapt_rgb_stem, load_pretrained, read_state_dict, timm_features_key_map, timm_state_dict

__all__ = ["GroupedPatchEmbedding", "TimmEmbedding", "timm_patch_key_map"]

WeightsSource = str | os.PathLike | Mapping[str, torch.Tensor]


class GroupedPatchEmbedding(nn.Module):
    """ViT patch embedding with separate weights per modality, all modalities in one grouped conv.

    Args:
        num_modalities: modalities ``g`` (each gets its own projection and position embedding).
        in_channels: channels per modality image.
        image_size: ``(H, W)`` (or an int) of every modality image.
        patch_size: patch side (or ``(ph, pw)``); must divide ``image_size``.
        hidden_size: token width ``d``.

    Shapes: images ``(b, g, c, H, W)`` -> tokens ``(g, b, n, d)`` with ``n = H W / (ph pw)``, row-major on
    the patch grid ``grid_size = (H / ph, W / pw)``.

    Raises:
        ValueError: if the patch size does not divide the image size, or on a wrong input shape.

    Example::

        >>> embed = GroupedPatchEmbedding(4, 1, 64, 8, 32)
        >>> embed(torch.randn(2, 4, 1, 64, 64)).shape
        torch.Size([4, 2, 64, 32])
    """

    def __init__(
        self,
        num_modalities: int,
        in_channels: int,
        image_size: int | Sequence[int],
        patch_size: int | Sequence[int],
        hidden_size: int,
    ) -> None:
        super().__init__()
        self.image_size, self.patch_size = ensure_tuple_rep(image_size, 2), ensure_tuple_rep(patch_size, 2)
        if any(s % p for s, p in zip(self.image_size, self.patch_size)):
            raise ValueError(f"patch_size {self.patch_size} must divide image_size {self.image_size}")
        self.num_modalities, self.in_channels, self.hidden_size = num_modalities, in_channels, hidden_size
        self.grid_size = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.num_tokens = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(
            num_modalities * in_channels,
            num_modalities * hidden_size,
            kernel_size=self.patch_size,
            stride=self.patch_size,
            groups=num_modalities,
        )
        self.position = nn.Parameter(torch.randn(num_modalities, 1, self.num_tokens, hidden_size) * 0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        expected = (self.num_modalities, self.in_channels, *self.image_size)
        if images.dim() != 5 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"expected images (batch, {', '.join(map(str, expected))}), got {tuple(images.shape)}")
        b = images.shape[0]
        tokens = self.proj(images.flatten(1, 2))  # b (g d) h w
        tokens = tokens.view(b, self.num_modalities, self.hidden_size, self.num_tokens).permute(1, 0, 3, 2)
        return tokens + self.position


class TimmEmbedding(nn.Module):
    """A timm CNN / ViT backbone (one per modality, or one shared) whose last feature map becomes tokens.

    Per-modality backbones (``shared_backbone=False``) run one after another; a shared backbone
    (``shared_backbone=True``, as mammography models usually share one across views) sees all modalities in one call,
    folded into the batch: ``(b, g, c, H, W) -> (b g, c, H, W)``, so its BatchNorm statistics pool the views. Either
    way each modality keeps its own 1x1 projection and position embedding, and the MoE stages after it are batched.

    Args:
        model_name: a timm model name with ``features_only`` support, e.g. ``"resnet18"``.
        num_modalities, in_channels, image_size, hidden_size: as :class:`GroupedPatchEmbedding`.
        pretrained_weights: None (random init), a weights file of the full timm model (``.safetensors``, ``.pt``,
            ``.pth``, ``.bin``; RGB stems adapted to ``in_channels``), ``"timm"`` for timm's released weights of
            ``model_name`` (its cache, or online), or (per-modality backbones only) a sequence with one such entry (or
            None) per modality. Loaded by :func:`~medmoe.encoders.load_pretrained`: every backbone key must be in the
            file; the file's keys that ``features_only`` drops (the classifier, a final norm) are left out with a
            warning.
        shared_backbone: one backbone for all modalities (``backbones`` holds one module) instead of one per
            modality; ``g`` times fewer backbone parameters, the same compute.

    Raises:
        ValueError: on a ``pretrained_weights`` sequence of the wrong length or with a shared backbone, or weights
            that do not fit (naming the file and the keys).

    Shapes: images ``(b, g, c, H, W)`` -> tokens ``(g, b, n, d)``, row-major on the last feature map's
    ``grid_size``.
    """

    def __init__(
        self,
        model_name: str,
        num_modalities: int,
        in_channels: int,
        image_size: int | Sequence[int],
        hidden_size: int,
        pretrained_weights: WeightsSource | Sequence[WeightsSource | None] | None = None,
        shared_backbone: bool = False,
    ) -> None:
        super().__init__()
        import timm

        self.shared_backbone = bool(shared_backbone)
        self.backbones = nn.ModuleList(
            timm.create_model(model_name, pretrained=False, features_only=True, out_indices=(-1,), in_chans=in_channels)
            for _ in range(1 if self.shared_backbone else num_modalities)
        )
        self._load_backbones(model_name, in_channels, pretrained_weights)
        channels = self.backbones[0].feature_info.channels()[-1]
        self.proj = nn.Conv1d(num_modalities * channels, num_modalities * hidden_size, 1, groups=num_modalities)
        probe_net = self.backbones[0].eval()  # eval: the probe must not update BatchNorm statistics
        with torch.no_grad():
            probe = probe_net(torch.zeros(1, in_channels, *ensure_tuple_rep(image_size, 2)))[-1]
        probe_net.train()
        self.grid_size = (int(probe.shape[-2]), int(probe.shape[-1]))
        self.num_tokens = self.grid_size[0] * self.grid_size[1]
        self.num_modalities, self.hidden_size = num_modalities, hidden_size
        self.position = nn.Parameter(torch.randn(num_modalities, 1, self.num_tokens, hidden_size) * 0.02)

    def _load_backbones(
        self, model_name: str, in_channels: int, weights: WeightsSource | Sequence[WeightsSource | None] | None
    ) -> None:
        """Load ``weights`` (see the class docstring) into the backbones; each distinct file is read once."""
        if weights is None:
            return
        per_view = list(weights) if isinstance(weights, Sequence) and not isinstance(weights, str) else None
        if per_view is not None and self.shared_backbone:
            raise ValueError(
                f"pretrained_weights has one entry per modality ({len(per_view)}) but shared_backbone=True builds one "
                "backbone: give a single weights file, or set shared_backbone=False for one backbone per modality"
            )
        if per_view is not None and len(per_view) != len(self.backbones):
            raise ValueError(
                f"pretrained_weights has {len(per_view)} entries for {len(self.backbones)} modalities; give one "
                "per modality (None for random init) or a single file for all"
            )
        entries = per_view if per_view is not None else [weights] * len(self.backbones)
        dropped = _features_dropped_keys(model_name, in_channels, self.backbones[0])
        states: dict[str, Mapping[str, torch.Tensor]] = {}
        for backbone, entry in zip(self.backbones, entries):
            if entry is None:
                continue
            source = entry if isinstance(entry, Mapping) else os.fspath(entry)
            if isinstance(source, str) and source not in states:
                states[source] = timm_state_dict(model_name) if source == "timm" else read_state_dict(source)
            state = states[source] if isinstance(source, str) else source
            load_pretrained(
                backbone,
                state,
                key_map=timm_features_key_map(backbone),
                ignore_unexpected=dropped,
                name=f"timm:{model_name}" if source == "timm" else None if isinstance(source, Mapping) else source,
            )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        if self.shared_backbone:  # views folded into the batch: (b g) c H W -> (b g) C h w -> b (g C) (h w)
            feats = self.backbones[0](images.flatten(0, 1))[-1].reshape(b, -1, self.num_tokens)
        else:
            feats = torch.cat([net(images[:, i])[-1].flatten(2) for i, net in enumerate(self.backbones)], dim=1)
        tokens = self.proj(feats).view(b, self.num_modalities, self.hidden_size, self.num_tokens)
        return tokens.permute(1, 0, 3, 2) + self.position


def _features_dropped_keys(model_name: str, in_channels: int, features_net: nn.Module) -> list[str]:
    """Keys of the full timm model that its ``features_only`` form ``features_net`` has no place for."""
    import timm

    with torch.device("meta"):  # shapes only, no memory, no init cost
        full = timm.create_model(model_name, pretrained=False, in_chans=in_channels).state_dict()
    convert, targets = timm_features_key_map(features_net), set(features_net.state_dict())
    return [key for key, value in full.items() if next(iter(convert({key: value}))) not in targets]


def timm_patch_key_map(
    embed: GroupedPatchEmbedding, prefix: str = "", num_prefix_tokens: int | None = None
) -> Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """Key map (for :func:`~medmoe.encoders.load_pretrained`) from a timm ViT's patch embedding to ``embed``.

    ``{prefix}patch_embed.proj`` ``(d, 3, ph, pw)`` -> ``proj`` ``(g d, c, ph, pw)``: the RGB stem adapted to
    ``c = in_channels`` as timm does, then one copy per modality; ``{prefix}pos_embed`` ``(1, P + N, d)`` ->
    ``position`` ``(g, 1, n, d)``: the ``P`` prefix (class / register) positions dropped, the square ``N`` grid
    resampled to ``embed.grid_size`` (:func:`timm.layers.resample_abs_pos_embed`, bicubic), one copy per modality.
    Other keys are dropped (a whole-model loader such as :func:`medmoe.nets.upcycle.upcycle_from_dense` accounts
    for them).

    Args:
        num_prefix_tokens: ``P``; None infers it (``N`` must be a square: ``P = 1`` for a class token, 0 without).
    """
    g = embed.num_modalities

    def convert(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from timm.layers import resample_abs_pos_embed

        out: dict[str, torch.Tensor] = {}
        if f"{prefix}patch_embed.proj.weight" in state:
            weight = adapt_rgb_stem(state[f"{prefix}patch_embed.proj.weight"], embed.in_channels)
            out["proj.weight"] = weight.repeat(g, 1, 1, 1)
        if f"{prefix}patch_embed.proj.bias" in state:
            out["proj.bias"] = state[f"{prefix}patch_embed.proj.bias"].repeat(g)
        if f"{prefix}pos_embed" in state:
            pos = state[f"{prefix}pos_embed"]
            prefix_tokens = _prefix_tokens(pos.shape[1]) if num_prefix_tokens is None else num_prefix_tokens
            pos = resample_abs_pos_embed(pos, list(embed.grid_size), num_prefix_tokens=prefix_tokens)
            out["position"] = pos[:, prefix_tokens:].unsqueeze(0).repeat(g, 1, 1, 1)
        return out

    return convert


def _prefix_tokens(total: int) -> int:
    for prefix in (0, 1):
        if math.isqrt(total - prefix) ** 2 == total - prefix:
            return prefix
    raise ValueError(
        f"cannot tell the class-token positions of a pos_embed with {total} positions (no square grid after 0 or 1 "
        "prefix tokens); pass num_prefix_tokens"
    )
