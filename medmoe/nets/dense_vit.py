"""Dense multi-view ViT baselines of M4oE: the same views, tokens, width, depth and heads, no experts."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from monai.utils import ensure_tuple_rep
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..blocks.missing_fill import MISSING_MODES, MissingModalityFill
from ..encoders import GroupedPatchEmbedding, load_pretrained, timm_patch_key_map
from ..heads import MultiTaskClassificationHead
from .contract import ModelOutput, MultimodalModel
from .registry import register_model

__all__ = ["DenseViT", "SingleViewViT"]

PATCH_EMBEDDINGS = ("per_view", "shared")
_TIMM_PREFIXES = ("patch_embed.", "pos_embed", "cls_token", "blocks.", "norm.")


@register_model("dense_vit")
class DenseViT(MultimodalModel):
    """A plain ViT over the tokens of all views: M4oE's dense baseline.

    Each view is cut into the patches M4oE's embedder makes (``n`` tokens per view, width ``d``); absent views'
    tokens are filled as in M4oE (:class:`~medmoe.blocks.MissingModalityFill`); the ``g n`` tokens of all views
    and one class token pass through ``depth`` timm ViT ``Block`` s with joint self-attention over all views
    (dense MLPs: no experts, no router); the final LayerNorm's class token feeds every task's head
    (:class:`~medmoe.heads.MultiTaskClassificationHead`, as M4oE's). No auxiliary loss unless the retriever fill
    adds its own.

    Its state dict is in timm's ViT key layout (``patch_embed.proj``, ``pos_embed``, ``cls_token``, ``blocks.N``,
    ``norm``) plus ``view_embed``, ``missing_fill`` and ``head``; :meth:`timm_state_dict` gives the timm part, which
    :func:`medmoe.nets.upcycle.upcycle_from_dense` upcycles an M4oE from (sparse upcycling).

    Args:
        modalities: batch keys of the views, in ``modality_mask`` column order.
        tasks: classification task name -> number of classes.
        in_channels, image_size, patch_size, hidden_size, mlp_dim, num_heads, dropout_rate: as
            :class:`~medmoe.nets.M4oE` (``dropout_rate`` on the attention and MLP outputs, as there).
        depth: transformer blocks; M4oE's counterpart is ``msoe_depth + fusion_depth`` (the blocks its upcycling
            maps, :func:`medmoe.nets.upcycle.default_block_map`).
        patch_embedding: ``"per_view"`` (M4oE's :class:`~medmoe.encoders.GroupedPatchEmbedding`: own projection and
            position embedding per view) or ``"shared"`` (timm's one ``patch_embed`` and ``pos_embed`` for every
            view plus a learned per-view embedding ``view_embed``; needed for :meth:`timm_state_dict`).
        views: the modalities the model reads (default all); the others are in the batch but ignored.
        missing_modality: ``"learned"`` / ``"zero"`` / ``"retriever"`` fill of absent views (as M4oE).
        retriever_kwargs: with ``"retriever"``, as :class:`~medmoe.nets.M4oE`.
        modality_mask_key: batch key of the ``(b, M)`` bool presence mask (all ones when absent).
        pretrained_weights: None, or a timm ViT checkpoint (file, state dict, or ``"timm:<vit_name>"``) of the same
            width, heads and MLP width: patch embedding (RGB stem adapted, per view a copy), position embedding
            (grid resampled), class token, blocks ``0 .. depth - 1`` and final norm loaded; the classifier and
            deeper blocks ignored.
        activation_checkpointing: recompute each block in backward instead of keeping its activations
            (``torch.utils.checkpoint``, non-reentrant; same values and gradients).

    Returns (forward): a :class:`~medmoe.nets.contract.ModelOutput`: task -> logits ``(b, classes)``; ``aux_losses``
    only the retriever's (with ``"retriever"``); ``interpret``: ``modality_mask`` (``(b, M)``, all modalities).

    Raises:
        ValueError: on no view or task, unknown ``views`` / ``patch_embedding`` / ``missing_modality``, a batch
            mask of the wrong shape, non-finite values in a present view, or pretrained weights that do not fit.

    Example::

        >>> model = DenseViT(["cc", "mlo"], {"density": 4}, image_size=32, patch_size=8, hidden_size=32,
        ...                  mlp_dim=64, num_heads=4, depth=2)
        >>> batch = {"cc": torch.rand(2, 1, 32, 32), "mlo": torch.rand(2, 1, 32, 32),
        ...          "modality_mask": torch.tensor([[True, True], [True, False]])}
        >>> model(batch)["density"].shape
        torch.Size([2, 4])
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
        depth: int = 2,
        dropout_rate: float = 0.0,
        patch_embedding: str = "per_view",
        views: Sequence[str] | None = None,
        missing_modality: str = "learned",
        retriever_kwargs: Mapping | None = None,
        modality_mask_key: str = "modality_mask",
        pretrained_weights: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        from timm.layers import PatchEmbed
        from timm.models.vision_transformer import Block, init_weights_vit_timm

        self.modalities, self.tasks = list(modalities), dict(tasks)
        self.views = list(views) if views is not None else list(self.modalities)
        if not self.modalities or not self.views or not self.tasks:
            raise ValueError("DenseViT needs at least one modality, one view and one task")
        if set(self.views) - set(self.modalities):
            raise ValueError(f"views {sorted(set(self.views) - set(self.modalities))} are not in {self.modalities}")
        if patch_embedding not in PATCH_EMBEDDINGS:
            raise ValueError(f"patch_embedding must be one of {PATCH_EMBEDDINGS}, got '{patch_embedding}'")
        if missing_modality not in MISSING_MODES:
            raise ValueError(f"missing_modality must be one of {MISSING_MODES}, got '{missing_modality}'")
        self.patch_embedding, self.missing_modality = patch_embedding, missing_modality
        self.modality_mask_key, self.activation_checkpointing = modality_mask_key, activation_checkpointing
        self.interpretations = frozenset(
            {"modality_mask"} | ({"retrieval"} if missing_modality == "retriever" else set())
        )
        self._columns = [self.modalities.index(v) for v in self.views]
        g, size = len(self.views), ensure_tuple_rep(image_size, 2)
        if patch_embedding == "per_view":
            self.embedder = GroupedPatchEmbedding(g, in_channels, size, patch_size, hidden_size)
            self.grid_size, tokens = self.embedder.grid_size, self.embedder.num_tokens
        else:
            self.patch_embed = PatchEmbed(size, ensure_tuple_rep(patch_size, 2), in_channels, hidden_size)
            self.grid_size, tokens = tuple(self.patch_embed.grid_size), self.patch_embed.num_patches
            self.pos_embed = nn.Parameter(torch.randn(1, 1 + tokens, hidden_size) * 0.02)  # timm: class slot first
            self.view_embed = nn.Parameter(torch.randn(g, 1, 1, hidden_size) * 0.02)
        self.in_channels, self.image_size, self.num_tokens = in_channels, size, tokens
        self.cls_token = nn.Parameter(torch.randn(1, 1, hidden_size) * 1e-6)
        self.missing_fill = MissingModalityFill(
            missing_modality, g, tokens, hidden_size, retriever_kwargs, num_heads=num_heads
        )
        self.blocks = nn.Sequential(
            *(
                Block(hidden_size, num_heads, mlp_dim / hidden_size, qkv_bias=True, proj_drop=dropout_rate)
                for _ in range(depth)
            )
        )
        self.blocks.apply(init_weights_vit_timm)
        self.norm = nn.LayerNorm(hidden_size, eps=1e-6)
        self.head = MultiTaskClassificationHead(hidden_size, self.tasks, dropout_rate)
        if pretrained_weights is not None:
            self.load_timm(pretrained_weights)

    @property
    def retriever(self):
        """The fill's :class:`~medmoe.blocks.MoERetriever` with ``missing_modality="retriever"``, else None."""
        return self.missing_fill.retriever

    def load_timm(self, source: str | os.PathLike | Mapping[str, torch.Tensor]):
        """Load a timm ViT checkpoint (see ``pretrained_weights``); returns the :class:`~medmoe.encoders.LoadReport`.

        Raises:
            ValueError: naming the checkpoint and the keys that do not fit (another width, too few blocks, ...).
        """
        from timm.layers import resample_abs_pos_embed

        depth = len(self.blocks)

        def convert(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            out = {}
            for key, value in state.items():
                if key.startswith("blocks.") and int(key.split(".")[1]) >= depth:
                    continue  # deeper dense blocks than this model has
                if key.startswith(("cls_token", "blocks.", "norm.")) or (
                    self.patch_embedding == "shared" and key == "patch_embed.proj.bias"
                ):
                    out[key] = value
            if self.patch_embedding == "per_view":
                out.update({f"embedder.{k}": v for k, v in timm_patch_key_map(self.embedder)(state).items()})
            else:
                if "patch_embed.proj.weight" in state:
                    out["patch_embed.proj.weight"] = state["patch_embed.proj.weight"]
                if "pos_embed" in state:
                    out["pos_embed"] = resample_abs_pos_embed(
                        state["pos_embed"], list(self.grid_size), num_prefix_tokens=1
                    )
            return out

        ignore_missing = ("view_embed", "missing_fill.*", "head.*")
        return load_pretrained(self, source, key_map=convert, ignore_missing=ignore_missing)

    def timm_state_dict(self) -> dict[str, torch.Tensor]:
        """The timm ViT part of the state dict (``patch_embed``, ``pos_embed``, ``cls_token``, ``blocks``, ``norm``).

        Raises:
            ValueError: with ``patch_embedding="per_view"`` (timm's layout has one patch embedding for all views).
        """
        if self.patch_embedding != "shared":
            raise ValueError("timm_state_dict needs patch_embedding='shared' (timm's ViT has one patch embedding)")
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k.startswith(_TIMM_PREFIXES)}

    def _mask(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        absent = [k for k in self.views if k not in batch]
        if absent:
            raise KeyError(f"batch has no key(s) {absent}; expected views {self.views}")
        reference = batch[self.views[0]]
        mask = batch.get(self.modality_mask_key)
        if mask is None:
            return torch.ones(reference.shape[0], len(self.modalities), dtype=torch.bool, device=reference.device)
        if tuple(mask.shape) != (reference.shape[0], len(self.modalities)):
            raise ValueError(
                f"'{self.modality_mask_key}' must be (batch, {len(self.modalities)}) for modalities "
                f"{self.modalities}, got {tuple(mask.shape)}"
            )
        return mask.to(device=reference.device, dtype=torch.bool)

    def _tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens ``(b, g, n, d)`` of the views ``(b, g, c, H, W)``."""
        if self.patch_embedding == "per_view":
            return self.embedder(images).transpose(0, 1)
        b, g = images.shape[:2]
        tokens = self.patch_embed(images.flatten(0, 1)) + self.pos_embed[:, 1:]  # (b g) n d
        return tokens.view(b, g, *tokens.shape[1:]) + self.view_embed.transpose(0, 1)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> ModelOutput:
        mask = self._mask(batch)
        present = mask[:, self._columns]  # b g
        images = torch.stack([batch[k] for k in self.views], dim=1)  # b g c h w
        keep = present.view(*present.shape, *([1] * (images.dim() - 2)))
        if not bool(torch.isfinite(images).logical_or(~keep).all()):
            raise ValueError("non-finite values in a view marked present in the modality_mask")
        images = torch.where(keep, images, torch.zeros((), dtype=images.dtype, device=images.device))
        filled = self.missing_fill(self._tokens(images), present, batch)
        x = filled.tokens.flatten(1, 2)  # b (g n) d
        cls = self.cls_token + (self.pos_embed[:, :1] if self.patch_embedding == "shared" else 0)
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        feature = self.norm(x[:, 0])
        out = self.head(feature.unsqueeze(1).expand(-1, len(self.tasks), -1))
        interpret = {"modality_mask": mask}
        if self.missing_modality == "retriever":
            interpret["retrieval"] = filled.choices
        return ModelOutput(out, filled.aux_losses, interpret)


@register_model("single_view_vit")
class SingleViewViT(DenseViT):
    """:class:`DenseViT` reading one view of the batch: the single-view baseline, with the same heads.

    Args:
        modalities: batch keys of all views in ``modality_mask`` column order (the batch M4oE sees).
        tasks: classification task name -> number of classes.
        view: the one view the model reads (e.g. ``"ffdm_mlo"``); an exam without it gets the learned (or zero)
            fill's tokens, so every exam gets a prediction.
        **kwargs: as :class:`DenseViT` (``patch_embedding``, ``depth``, ...), without ``views``.

    Example::

        >>> model = SingleViewViT(["cc", "mlo"], {"density": 4}, view="mlo", image_size=32, patch_size=8,
        ...                       hidden_size=32, mlp_dim=64, num_heads=4)
        >>> model({"cc": torch.rand(2, 1, 32, 32), "mlo": torch.rand(2, 1, 32, 32)})["density"].shape
        torch.Size([2, 4])
    """

    def __init__(self, modalities: Sequence[str], tasks: Mapping[str, int], view: str, **kwargs) -> None:
        if "views" in kwargs:
            raise ValueError("SingleViewViT takes one 'view', not 'views'")
        if kwargs.get("missing_modality") == "retriever":
            raise ValueError("a single-view model has no other view to retrieve from; use 'learned' or 'zero'")
        super().__init__(modalities, tasks, views=[view], **kwargs)
