"""Shared per-modality encoders (:class:`ModalityEncoders`) and the vanilla fusion model (``"fusion"``).

:class:`ModalityEncoders` turns a batch dict into tokens ``(b, M, n, d)`` and a presence mask ``(b, M)`` for
I2MoE and :class:`FusionModel`; the fusion backbones they feed are in :mod:`medmoe.nets.fusion`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from ..blocks.missing_fill import MissingModalityFill
from ..encoders import VectorEncoder
from .contract import ModelOutput, MultimodalModel
from .fusion import FusionBackbone, build_backbone
from .registry import register_model

__all__ = ["EncodedModalities", "FusionModel", "ModalityEncoders"]


class EncodedModalities(NamedTuple):
    """One call of :class:`ModalityEncoders`: ``tokens`` ``(b, M, n, d)``, ``mask`` ``(b, M)`` (what the backbone
    should attend to: all True when a fill stands in), ``presence`` ``(b, M)`` (the true presence), and the fill's
    ``aux_losses`` / ``choices`` of this call (empty without a retriever)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    presence: torch.Tensor
    aux_losses: dict[str, torch.Tensor]
    choices: dict[str, Any]

    def interpret(self) -> dict[str, Any]:
        """``modality_mask`` (the true presence) and, with a retriever fill, ``retrieval`` (its choices)."""
        return {"modality_mask": self.presence, **({"retrieval": self.choices} if self.choices else {})}


class ModalityEncoders(nn.Module):
    """Shared per-modality encoders: batch dict -> :class:`EncodedModalities` (tokens ``(b, M, n, d)``, mask ...).

    Absent modalities (``modality_mask`` False) are zeroed before their encoder (the data layer's NaN
    placeholder never reaches the network). Their tokens are then zeroed (``missing_modality="zero"``, the
    default: the returned mask is the presence mask and backbones exclude them), or filled by a
    :class:`~medmoe.blocks.MissingModalityFill` (``"learned"`` tokens per modality, or ``"retriever"``: the
    MoE-Retriever or one of its baselines, e.g. ``retriever_kwargs={"mode": "mean"}``), as in M4oE. A filled
    modality stands in for the absent one, so the returned mask marks it present (all True) and the true
    presence is returned as ``presence``. With a retriever, ``aux_losses`` holds its losses of the call.

    Args:
        modalities: batch keys, in model order.
        hidden_size: token width ``d``.
        in_features: values per sample of each modality (int for all, or per key); used to build the
            default :class:`~medmoe.encoders.VectorEncoder` per modality.
        num_tokens: tokens per modality ``n``.
        encoders: optional modules per key replacing the default (any ``(b, ...) -> (b, d)`` or ``(b, n, d)``).
        encoder_dim: hidden width of the default encoders.
        modality_mask_key: batch key of the presence mask.
        missing_modality: ``"zero"`` (default), ``"learned"`` or ``"retriever"`` (see above). With
            ``"retriever"`` the support bank is updated in training mode: train only on training-split batches.
        retriever_kwargs: options of the retriever (:class:`~medmoe.blocks.MissingModalityFill`), e.g.
            ``{"mode": "moe", "num_supports": 4, "top_k": 2, "id_key": "id"}``.

    Raises:
        ValueError: on a modality without ``in_features`` or encoder, an unknown ``missing_modality`` or
            ``retriever_kwargs`` without ``"retriever"``; at call time on a bad mask, a
            non-finite present modality, or encoder outputs of the wrong shape.
        KeyError: at call time, naming a modality key missing from the batch.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        hidden_size: int,
        in_features: int | Mapping[str, int] | None = None,
        num_tokens: int = 1,
        encoders: Mapping[str, nn.Module] | None = None,
        encoder_dim: int | None = None,
        modality_mask_key: str = "modality_mask",
        missing_modality: str = "zero",
        retriever_kwargs: Mapping | None = None,
    ) -> None:
        super().__init__()
        if not modalities:
            raise ValueError("at least one modality is required")
        self.modalities, self.num_tokens, self.hidden_size = list(modalities), num_tokens, hidden_size
        self.modality_mask_key, self.missing_modality = modality_mask_key, missing_modality
        encoders = dict(encoders or {})
        for key in self.modalities:
            if key in encoders:
                continue
            size = in_features.get(key) if isinstance(in_features, Mapping) else in_features
            if size is None:
                raise ValueError(f"modality '{key}' needs in_features (values per sample) or an encoder")
            encoders[key] = VectorEncoder(size, hidden_size, num_tokens, encoder_dim)
        self.encoders = nn.ModuleDict({k: encoders[k] for k in self.modalities})
        # built after the encoders, so their initialisation does not depend on the mode
        fill = MissingModalityFill(missing_modality, len(self.modalities), num_tokens, hidden_size, retriever_kwargs)
        self.missing_fill = fill if missing_modality != "zero" else None  # zero: no module, state dict unchanged
        # the interpret keys of EncodedModalities.interpret() (medmoe/nets/contract.py)
        retrieval = {"retrieval"} if missing_modality == "retriever" else set()
        self.interpretations = frozenset({"modality_mask"} | retrieval)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> EncodedModalities:
        missing = [k for k in self.modalities if k not in batch]
        if missing:
            raise KeyError(f"batch has no key(s) {missing}; expected modalities {self.modalities}")
        first = batch[self.modalities[0]]
        b = first.shape[0]
        mask = batch.get(self.modality_mask_key)
        if mask is None:
            mask = torch.ones(b, len(self.modalities), dtype=torch.bool, device=first.device)
        mask = torch.as_tensor(mask, device=first.device).to(torch.bool)
        if mask.shape != (b, len(self.modalities)):
            raise ValueError(
                f"'{self.modality_mask_key}' must be (batch, {len(self.modalities)}) = {(b, len(self.modalities))}, "
                f"got {tuple(mask.shape)}"
            )
        tokens = []
        for i, key in enumerate(self.modalities):  # encoders differ per modality (sizes, types)
            x = batch[key]
            present = mask[:, i].view(-1, *([1] * (x.dim() - 1)))
            if not bool(torch.isfinite(x).logical_or(~present).all()):
                raise ValueError(f"non-finite values in modality '{key}' marked present in the modality_mask")
            z = self.encoders[key](torch.where(present, x, 0.0))
            z = z.unsqueeze(1) if z.dim() == 2 else z
            if z.shape != (b, self.num_tokens, self.hidden_size):
                raise ValueError(
                    f"encoder of '{key}' must return (b, {self.hidden_size}) or (b, {self.num_tokens}, "
                    f"{self.hidden_size}), got {tuple(z.shape)}"
                )
            tokens.append(z)
        tokens = torch.stack(tokens, dim=1)  # b m n d
        if self.missing_fill is None:
            return EncodedModalities(torch.where(mask[:, :, None, None], tokens, 0.0), mask, mask, {}, {})
        filled = self.missing_fill(tokens, mask, batch)
        return EncodedModalities(filled.tokens, torch.ones_like(mask), mask, filled.aux_losses, filled.choices)


@register_model("fusion")
class FusionModel(MultimodalModel):
    """Vanilla multimodal fusion (I2MoE paper, Fig. 2a): shared encoders -> one fusion backbone -> logits.

    The baseline I2MoE is compared against; same encoders and backbone options as :class:`~medmoe.nets.I2MoE`.

    Args:
        modalities: batch keys, in model order (``modality_mask`` column order).
        tasks: task name -> number of classes (1 for a regression output).
        in_features: values per sample per modality (int or per key) for the default vector encoders.
        backbone: ``"transformer"``, ``"early"``, ``"late"`` or a factory (see :func:`build_backbone`).
        hidden_size: token width.
        num_tokens: tokens per modality.
        encoders: optional encoder modules per key.
        encoder_dim: hidden width of the default encoders.
        backbone_kwargs: extra backbone options (``num_layers``, ``num_heads``, ``mlp_dim``, ``dropout_rate``).
        modality_mask_key: batch key of the ``(b, M)`` presence mask.
        missing_modality: ``"zero"`` (default), ``"learned"`` or ``"retriever"``, see :class:`ModalityEncoders`.
        retriever_kwargs: options of the fill.

    Returns (forward): a :class:`~medmoe.nets.contract.ModelOutput`: task name -> logits ``(b, classes)``;
    ``aux_losses``: the missing-modality fill's (retriever importance / balance), else none; ``interpret``:
    ``modality_mask`` and, with a retriever, ``retrieval``.

    Example::

        >>> model = FusionModel(modalities=["mri", "csf"], tasks={"dx": 3}, in_features={"mri": 20, "csf": 5})
        >>> model({"mri": torch.randn(2, 20), "csf": torch.randn(2, 5)})["dx"].shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        modalities: Sequence[str],
        tasks: Mapping[str, int],
        in_features: int | Mapping[str, int] | None = None,
        backbone: str | Callable[..., FusionBackbone] = "transformer",
        hidden_size: int = 64,
        num_tokens: int = 1,
        encoders: Mapping[str, nn.Module] | None = None,
        encoder_dim: int | None = None,
        backbone_kwargs: Mapping[str, object] | None = None,
        modality_mask_key: str = "modality_mask",
        missing_modality: str = "zero",
        retriever_kwargs: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__()
        self.modalities, self.tasks = list(modalities), {k: int(v) for k, v in tasks.items()}
        self.encoders = ModalityEncoders(
            modalities,
            hidden_size,
            in_features,
            num_tokens,
            encoders,
            encoder_dim,
            modality_mask_key,
            missing_modality=missing_modality,
            retriever_kwargs=retriever_kwargs,
        )
        self.backbone = build_backbone(
            backbone, len(self.modalities), hidden_size, self.tasks, num_tokens, 1, **dict(backbone_kwargs or {})
        )
        self.interpretations = self.encoders.interpretations

    def forward(self, batch: Mapping[str, torch.Tensor]) -> ModelOutput:
        encoded = self.encoders(batch)
        return ModelOutput(self.backbone(encoded.tokens, encoded.mask), encoded.aux_losses, encoded.interpret())
