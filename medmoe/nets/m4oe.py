"""M4oE: multi-modal multi-task mixture of experts for medical imaging (papers/m4oe_paper.txt, Sec. 3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import torch
from monai.utils import ensure_tuple_rep
from torch import nn

from ..blocks import MoERetriever, MSoE, MToE, TransformerBlock, set_activation_checkpointing
from ..blocks.missing_fill import MISSING_MODES, MissingModalityFill
from ..encoders import GroupedPatchEmbedding, OCTEmbedding, TimmEmbedding
from ..heads import MultiTaskClassificationHead, SegmentationHead
from ..layers import SoftMoE
from ..losses import conditional_mutual_information, modality_expert_task_joint
from .contract import ModelOutput, MultimodalModel, presence_mask, zero_absent
from .registry import register_model

__all__ = ["M4oE"]


@register_model("m4oe")
class M4oE(MultimodalModel):
    """Per-modality embedders -> MSoE (per modality) and MToE (all modalities, task slots) ->
    per-task fusion Soft MoE blocks -> per-task heads.

    Data flow (Sec. 3.2): tokens ``X_i`` of each modality go to the modality's MSoE (``Z_i``) and,
    concatenated, to the MToE, which yields task features ``G_k``. For each task the pool
    ``H_k = [mean G_k, mean Z_1, ..., mean Z_M]`` passes through shared Soft MoE blocks; its first
    token feeds task ``k``'s head. Volume modalities (``volume_modalities``, e.g. OCT) are embedded by an
    :class:`~medmoe.encoders.OCTEmbedding` each (2D patches per B-scan, pooled over B-scans) to the same token
    count ``n`` as the image modalities, so every later stage is unchanged. A segmentation task ``k`` of modality
    ``i`` instead takes ``G_k``'s tokens of modality ``i``, fuses them with ``Z_i`` (concat -> LayerNorm ->
    Linear) and decodes them on the patch grid with a :class:`~medmoe.heads.SegmentationHead` to logits at the
    image size. Missing modalities (``modality_mask`` False) never reach the embedder: their tokens are replaced
    by a learned per-modality token bank (``"learned"``), zeros (``"zero"``) or embeddings retrieved by
    :class:`~medmoe.blocks.MoERetriever` from cached training embeddings (``"retriever"``).

    Args:
        modalities: batch keys of the image modalities, in model order (``modality_mask`` column order).
        tasks: classification task name -> number of classes (may be empty when ``segmentation_tasks`` is set).
        in_channels: channels per modality image.
        image_size: ``(H, W)`` of every modality image.
        patch_size: ViT patch size of the patch embedder.
        hidden_size, mlp_dim, num_heads, dropout_rate: transformer sizes.
        msoe_depth, msoe_experts: MSoE blocks per modality and Soft MoE experts in each.
        mtoe_experts: experts of the MToE (one slot per expert and task).
        fusion_depth, fusion_experts: fusion Soft MoE blocks (shared across tasks) and their experts.
        num_slots: slots per expert in MSoE and fusion Soft MoEs.
        missing_modality: ``"learned"`` or ``"zero"`` replacement of a missing modality's tokens, or
            ``"retriever"``: a :class:`~medmoe.blocks.MoERetriever` fills them after the embedder (MoE-Retriever).
            In training mode it reads, then updates, a cache of the batch's present embeddings: the caller must
            only train on training-split batches (evaluators run in eval mode and never update it).
        retriever_kwargs: keyword arguments of :class:`~medmoe.blocks.MoERetriever` (``mode``, ``num_supports``,
            ``num_candidates``, ``num_shared``, ``top_k``, ``capacity``, ``eval_seed``, ``masked_retrieval``, ...)
            plus ``id_key`` (batch key of the sample ids recorded in the cache, default ``"id"``; optional in the
            batch; :class:`~medmoe.engines.MultimodalPrepareBatch` passes it with ``id_key=...``). Only with
            ``"retriever"``. The fill is a :class:`~medmoe.blocks.MissingModalityFill` (``missing_fill``), shared
            with :class:`~medmoe.nets.fusion_model.ModalityEncoders`.
        embedder: ``"patch"`` (grouped ViT patch embedding) or ``"timm:<model_name>"``.
        modality_mask_key: batch key of the ``(b, M)`` bool presence mask.
        segmentation_tasks: segmentation task name -> ``{"modality": <key in modalities>, "classes": K}``
            (``K >= 2`` incl. background; binary = 2). All tasks (classification first, then segmentation, each in
            the given order) own MToE task slots, the MI loss and the modality contributions.
        seg_feature_size: channels of the segmentation decoder's full-resolution stage.
        volume_modalities: modality name -> volume spec for modalities given as volumes ``(b, c, S, H, W)``,
            e.g. ``{"oct": {"num_bscans": 8}}``. Spec keys: ``num_bscans`` (``S``, required), ``size``
            (``(H, W)``, default ``image_size``), ``patch_size`` (default ``patch_size``), ``in_channels``
            (default 1), ``pooling`` (``"attention"`` or ``"mean"``). Each must give the image modalities' token
            count ``n``, e.g. fundus 64 x 64 with patch 8 and OCT B-scans 32 x 32 with patch 4 both give 64 tokens.
            The other modalities keep the ``embedder``. A segmentation task must belong to an image modality.
        mi_tokens: which tokens the MI loss's joint counts: ``"all"`` (default, Eqs. 3-7: every token, absent
            modalities' filled placeholder tokens included) or ``"present"`` (only present modalities' tokens,
            renormalised per sample, as the interpretation does); see docs/methods/m4oe.md.
        pretrained_weights: None, or with ``embedder="patch"`` a dense timm ViT checkpoint that the patch embedding
            and Soft MoE blocks are upcycled from (:func:`medmoe.nets.upcycle.upcycle_from_dense`); with a timm
            embedder the backbone's weights file (or ``"timm"``), one for all image modalities or a mapping modality ->
            file (:class:`~medmoe.encoders.TimmEmbedding`).
        shared_backbone: with a timm embedder, one backbone for all image modalities (views folded into the batch)
            instead of one per modality. None (default): shared when ``pretrained_weights`` is one source (a file or
            ``"timm"``), as mammography models share a pretrained backbone across views; per modality otherwise
            (no weights, or a mapping modality -> file). True with a mapping of files, or with the ``"patch"``
            embedder (its projections are per modality by design), is an error.
        activation_checkpointing: recompute every MSoE and fusion block's activations in backward instead of keeping
            them (:func:`medmoe.blocks.set_activation_checkpointing`; same values and gradients, less memory).

    Returns (forward): a :class:`~medmoe.nets.contract.ModelOutput`: task name -> logits, ``(b, classes)`` for a
    classification task and ``(b, K, H, W)`` for a segmentation task; ``aux_losses``: ``"mutual_information"``
    ``I(M;E|T)`` (Eq. 7, from this forward's MToE combine weights; absent modalities' placeholder tokens included)
    plus ``"retriever_importance"`` / ``"retriever_balance"`` with ``missing_modality="retriever"``; ``interpret``:
    ``modality_mask``, ``modality_expert_task_joint`` (the MI loss's joint ``pi[M, E, T]`` per sample, detached;
    :func:`medmoe.interpret.expert_task_joint` turns it into P(E, T) over the present modalities),
    ``modality_task_joint`` (P(M, T) per sample, an absent modality 0: its placeholder tokens' share is dropped and
    the rest renormalised, so contributions describe only the views the model saw), ``modality_contributions``
    (P(M | T), ``(b, tasks, modalities)``), tasks in ``task_names`` order; and ``retrieval`` (the retriever's
    choices) with a retriever.

    Raises:
        ValueError: on an unknown missing mode or embedder, no task, a task name used twice, a segmentation
            task of an unknown or volume modality, a volume spec that is not a mapping with ``num_bscans`` or whose
            token count differs from the image modalities', or an embedder grid whose upsampling factor is not a
            power of two.

    Example::

        >>> model = M4oE(modalities=["cc", "mlo"], tasks={"density": 4}, image_size=32, patch_size=8,
        ...              hidden_size=32, mlp_dim=64, num_heads=4)
        >>> batch = {"cc": torch.rand(2, 1, 32, 32), "mlo": torch.rand(2, 1, 32, 32),
        ...          "modality_mask": torch.tensor([[True, True], [True, False]])}
        >>> out = model(batch)
        >>> out["density"].shape, sorted(out.aux_losses), out.interpret["modality_contributions"].shape
        (torch.Size([2, 4]), ['mutual_information'], torch.Size([2, 1, 2]))
    """

    def __init__(
        self,
        modalities: Sequence[str],
        tasks: Mapping[str, int],
        in_channels: int = 1,
        image_size: int | Sequence[int] = 64,
        patch_size: int | Sequence[int] = 8,
        hidden_size: int = 64,
        mlp_dim: int = 128,
        num_heads: int = 4,
        msoe_depth: int = 1,
        msoe_experts: int = 8,
        mtoe_experts: int = 16,
        fusion_depth: int = 1,
        fusion_experts: int = 8,
        num_slots: int = 1,
        dropout_rate: float = 0.0,
        missing_modality: str = "learned",
        embedder: str = "patch",
        modality_mask_key: str = "modality_mask",
        segmentation_tasks: Mapping[str, Mapping[str, int | str]] | None = None,
        seg_feature_size: int = 16,
        volume_modalities: Mapping[str, Mapping] | None = None,
        retriever_kwargs: Mapping | None = None,
        mi_tokens: str = "all",
        pretrained_weights: str | Mapping[str, str | None] | None = None,
        activation_checkpointing: bool = False,
        shared_backbone: bool | None = None,
    ) -> None:
        super().__init__()
        if not modalities:
            raise ValueError("at least one modality is required")
        if missing_modality not in MISSING_MODES:
            raise ValueError(f"missing_modality must be one of {MISSING_MODES}, got '{missing_modality}'")
        self.modalities, self.tasks = list(modalities), dict(tasks)
        self.segmentation_tasks = {k: dict(v) for k, v in (segmentation_tasks or {}).items()}
        self.volume_modalities = {k: dict(v) for k, v in (volume_modalities or {}).items()}
        self.image_modalities = [k for k in self.modalities if k not in self.volume_modalities]
        self._check_tasks()
        self.task_names = [*self.tasks, *self.segmentation_tasks]  # MToE slot order
        self.missing_modality, self.modality_mask_key = missing_modality, modality_mask_key
        if mi_tokens not in ("all", "present"):
            raise ValueError(f"mi_tokens must be 'all' or 'present', got '{mi_tokens}'")
        self.mi_tokens = mi_tokens
        self.interpretations = frozenset(
            {"modality_mask", "modality_expert_task_joint", "modality_task_joint", "modality_contributions"}
            | ({"retrieval"} if missing_modality == "retriever" else set())
        )
        num_m, num_images = len(self.modalities), len(self.image_modalities)
        if embedder != "patch" and not embedder.startswith("timm:"):
            raise ValueError(f"embedder must be 'patch' or 'timm:<model_name>', got '{embedder}'")
        self.embedder: nn.Module | None = None  # grouped embedder of the image modalities
        if shared_backbone and embedder == "patch":
            raise ValueError(
                "shared_backbone=True needs a timm embedder (embedder='timm:<model_name>'); the 'patch' embedder "
                "keeps one projection per modality: leave shared_backbone None or False"
            )
        if num_images and embedder == "patch":
            self.embedder = GroupedPatchEmbedding(num_images, in_channels, image_size, patch_size, hidden_size)
        elif num_images:
            weights = pretrained_weights
            if shared_backbone is None:  # the default: share a pretrained backbone given as one source
                shared_backbone = weights is not None and not isinstance(weights, Mapping)
            if isinstance(weights, Mapping):
                if set(weights) - set(self.image_modalities):
                    raise ValueError(
                        f"pretrained_weights names {sorted(set(weights) - set(self.image_modalities))}, "
                        f"not image modalities {self.image_modalities}"
                    )
                weights = [weights.get(k) for k in self.image_modalities]
            self.embedder = TimmEmbedding(
                embedder[5:], num_images, in_channels, image_size, hidden_size, weights, shared_backbone
            )
        self.volume_embedders = nn.ModuleDict(
            {
                name: _volume_embedder(name, spec, image_size, patch_size, hidden_size)
                for name, spec in self.volume_modalities.items()
            }
        )
        counts = {k: self.embedder.num_tokens for k in self.image_modalities[:1]}
        counts.update({k: e.num_tokens for k, e in self.volume_embedders.items()})
        if len(set(counts.values())) > 1:
            raise ValueError(
                f"every modality must give the same number of tokens, got {counts}; adjust the volume spec's "
                "'size' / 'patch_size' (tokens = (H / ph) * (W / pw))"
            )
        tokens = next(iter(counts.values()))
        if retriever_kwargs and missing_modality != "retriever":
            raise ValueError("retriever_kwargs needs missing_modality='retriever'")
        fill = partial(MissingModalityFill, missing_modality, num_m, tokens, hidden_size, num_heads=num_heads)
        if missing_modality != "retriever":  # "learned" draws its tokens here: initialisation order as before
            self.missing_fill = fill()
        self.msoe = MSoE(num_m, hidden_size, mlp_dim, num_heads, msoe_depth, msoe_experts, num_slots, dropout_rate)
        self.mtoe = MToE(hidden_size, mlp_dim, num_heads, mtoe_experts, len(self.task_names), dropout_rate)
        if self.tasks:  # classification path
            self.pool_position = nn.Parameter(torch.randn(1, 1 + num_m, hidden_size) * 0.02)
            fusion_moe = partial(SoftMoE, num_experts=fusion_experts, num_slots=num_slots)
            self.fusion = nn.Sequential(
                *(
                    TransformerBlock(hidden_size, mlp_dim, num_heads, fusion_moe, 1, dropout_rate)
                    for _ in range(fusion_depth)
                )
            )
            self.head = MultiTaskClassificationHead(hidden_size, self.tasks, dropout_rate)
        if self.segmentation_tasks:  # segmentation path
            self.grid_size = tuple(self.embedder.grid_size)
            size = ensure_tuple_rep(image_size, 2)
            if any(s % g for s, g in zip(size, self.grid_size)):
                raise ValueError(f"image_size {size} is not a multiple of the embedder's token grid {self.grid_size}")
            upsample = tuple(s // g for s, g in zip(size, self.grid_size))
            self.seg_fuse = nn.ModuleDict(
                {
                    name: nn.Sequential(nn.LayerNorm(2 * hidden_size), nn.Linear(2 * hidden_size, hidden_size))
                    for name in self.segmentation_tasks
                }
            )
            self.seg_heads = nn.ModuleDict(
                {
                    name: SegmentationHead(
                        2, hidden_size, int(cfg["classes"]), upsample, seg_feature_size, dropout_rate=dropout_rate
                    )
                    for name, cfg in self.segmentation_tasks.items()
                }
            )
        if missing_modality == "retriever":  # built last: the other modules' initialisation is unchanged
            self.missing_fill = fill(retriever_kwargs)
        self._register_load_state_dict_pre_hook(_rename_missing_fill_keys)
        if pretrained_weights is not None and embedder == "patch":
            from .upcycle import upcycle_from_dense

            upcycle_from_dense(self, pretrained_weights)
        set_activation_checkpointing(self, activation_checkpointing)

    @property
    def retriever(self) -> MoERetriever | None:
        """The :class:`~medmoe.blocks.MoERetriever` with ``missing_modality="retriever"``, else None."""
        return self.missing_fill.retriever

    def _check_tasks(self) -> None:
        if not self.tasks and not self.segmentation_tasks:
            raise ValueError("at least one task (tasks or segmentation_tasks) is required")
        if set(self.tasks) & set(self.segmentation_tasks):
            raise ValueError(f"task names used twice: {sorted(set(self.tasks) & set(self.segmentation_tasks))}")
        for name, cfg in self.segmentation_tasks.items():
            if cfg.get("modality") not in self.image_modalities:
                raise ValueError(
                    f"segmentation task '{name}' needs 'modality' in the image modalities {self.image_modalities}, "
                    f"got {cfg.get('modality')!r}"
                )
            if int(cfg.get("classes", 0)) < 2:
                raise ValueError(f"segmentation task '{name}' needs 'classes' >= 2 (binary = 2), got {cfg}")

    def _embed(self, batch: Mapping[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """Tokens ``(g, b, n, d)`` of all modalities in model order (absent ones embedded from zeros)."""
        column = {k: i for i, k in enumerate(self.modalities)}
        tokens: dict[str, torch.Tensor] = {}
        if self.image_modalities:
            images = torch.stack([batch[k] for k in self.image_modalities], dim=1)  # b g c h w
            present = mask[:, [column[k] for k in self.image_modalities]].view(*images.shape[:2], 1, 1, 1)
            tokens.update(zip(self.image_modalities, self.embedder(zero_absent(images, present))))
        for name, embed in self.volume_embedders.items():  # few volume modalities (typically one OCT)
            volume = batch[name]
            present = mask[:, column[name]].view(-1, *([1] * (volume.dim() - 1)))
            tokens[name] = embed(zero_absent(volume, present))
        return torch.stack([tokens[k] for k in self.modalities])

    def forward(self, batch: Mapping[str, torch.Tensor]) -> ModelOutput:
        mask = presence_mask(batch, self.modalities, self.modality_mask_key)
        tokens = self._embed(batch, mask)  # g b n d
        filled = self.missing_fill(tokens.transpose(0, 1), mask, batch)
        tokens = filled.tokens.transpose(0, 1)
        g, b, n, d = tokens.shape
        z = self.msoe(tokens)  # g b n d
        task_tokens, combine = self.mtoe(tokens.transpose(0, 1).reshape(b, g * n, d))  # b t (g n) d, b (g n) e t
        out: dict[str, torch.Tensor] = {}
        t = len(self.tasks)  # classification tasks own the first t MToE slots
        if t:
            pool = torch.cat(
                [task_tokens[:, :t].mean(2, keepdim=True), z.mean(2).transpose(0, 1).unsqueeze(1).expand(b, t, g, d)],
                dim=2,
            )
            fused = self.fusion((pool + self.pool_position.unsqueeze(0)).reshape(b * t, 1 + g, d))
            out.update(self.head(fused[:, 0].view(b, t, d)))
        for k, (name, cfg) in enumerate(self.segmentation_tasks.items(), start=t):
            i = self.modalities.index(cfg["modality"])
            g_k = task_tokens[:, k, i * n : (i + 1) * n]  # b n d: task k's tokens of modality i
            fused = self.seg_fuse[name](torch.cat([g_k, z[i]], dim=-1))
            out[name] = self.seg_heads[name](fused, self.grid_size)
        joint = modality_expert_task_joint(combine, g)  # b M E T, the MI loss's joint (placeholders included)
        interpret = {"modality_mask": mask, **_contributions(joint.detach(), mask)}
        if self.missing_modality == "retriever":
            interpret["retrieval"] = filled.choices
        if self.mi_tokens == "present":  # absent modalities' placeholder tokens dropped, renormalised per sample
            joint = joint * mask[:, :, None, None].to(joint.dtype)
            joint = joint / joint.sum((1, 2, 3), keepdim=True).clamp_min(1e-12)
        aux = {"mutual_information": conditional_mutual_information(joint), **filled.aux_losses}
        return ModelOutput(out, aux, interpret)


def _contributions(joint: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The interpretation of a joint ``pi[b, M, E, T]`` (see :class:`M4oE`): the joint itself, P(M, T) over the
    present modalities (absent ones 0, renormalised) and P(M | T) ``(b, T, M)``."""
    p_mt = joint.sum(2) * mask.unsqueeze(-1).to(torch.float32)
    p_mt = p_mt / p_mt.sum((1, 2), keepdim=True).clamp_min(1e-12)
    contributions = (p_mt / p_mt.sum(1, keepdim=True).clamp_min(1e-12)).transpose(1, 2)
    return {"modality_expert_task_joint": joint, "modality_task_joint": p_mt, "modality_contributions": contributions}


def _rename_missing_fill_keys(state_dict, prefix, *args) -> None:
    """Load checkpoints written before the fill moved into ``missing_fill`` (``missing_tokens``, ``retriever.*``)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix) :]
        if rest == "missing_tokens" or rest.startswith("retriever."):
            state_dict[f"{prefix}missing_fill.{rest}"] = state_dict.pop(key)


def _volume_embedder(
    name: str,
    spec: Mapping,
    image_size: int | Sequence[int],
    patch_size: int | Sequence[int],
    hidden_size: int,
) -> OCTEmbedding:
    """An :class:`OCTEmbedding` from a ``volume_modalities`` spec (see :class:`M4oE`)."""
    known = {"num_bscans", "size", "patch_size", "in_channels", "pooling"}
    if not isinstance(spec, Mapping) or "num_bscans" not in spec or set(spec) - known:
        raise ValueError(
            f"volume modality '{name}' needs a spec like {{'num_bscans': 8}} with keys from {sorted(known)}, "
            f"got {spec!r}"
        )
    size = ensure_tuple_rep(spec.get("size", image_size), 2)
    return OCTEmbedding(
        int(spec.get("in_channels", 1)),
        (int(spec["num_bscans"]), *size),
        spec.get("patch_size", patch_size),
        hidden_size,
        pooling=spec.get("pooling", "attention"),
    )
