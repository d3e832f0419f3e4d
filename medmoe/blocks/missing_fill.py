"""Fill the token embeddings of absent modalities: one module shared by M4oE and the fusion encoders (I2MoE)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .retriever import FillOutput, MoERetriever

__all__ = ["MISSING_MODES", "MissingModalityFill"]

MISSING_MODES = ("learned", "zero", "retriever")


class MissingModalityFill(nn.Module):
    """Replace the tokens of absent modalities (``mask`` False) in ``(B, M, n, d)``; present ones pass unchanged.

    Modes:
        - ``"zero"``: zeros (no parameters).
        - ``"learned"``: one learned ``(n, d)`` token block per modality, ``missing_tokens`` ``(M, 1, n, d)``.
        - ``"retriever"``: a :class:`~medmoe.blocks.MoERetriever` (MoE-Retriever, or its baselines through
          ``retriever_kwargs["mode"]``: ``"mean"`` training-mean embedding, ``"public_mean"``, ``"learned"``
          per observed combination (Flex-MoE), ``"zero"``). In training mode it reads, then updates, a cache of
          the batch's present embeddings, so the caller must train only on training-split batches (evaluators run
          in eval mode and never update it). Sample ids for the cache are read from the batch under ``id_key``.

    Args:
        mode: one of :data:`MISSING_MODES`.
        num_modalities, num_tokens, hidden_size: ``M``, ``n``, ``d``.
        retriever_kwargs: keyword arguments of :class:`~medmoe.blocks.MoERetriever` (``mode``,
            ``num_supports``, ``support_selection``, ``num_candidates``, ``num_shared``, ``top_k``, ``capacity``,
            ``num_heads``, ...)
            plus ``id_key`` (batch key of the sample ids, default ``"id"``; optional in the batch).
            Only with ``mode="retriever"``.
        num_heads: default attention heads of the retriever.

    Raises:
        ValueError: on an unknown mode, or ``retriever_kwargs`` without ``mode="retriever"``.

    Example::

        >>> fill = MissingModalityFill("learned", num_modalities=2, num_tokens=4, hidden_size=8)
        >>> fill(torch.randn(3, 2, 4, 8), torch.tensor([[True, True], [True, False], [False, True]])).tokens.shape
        torch.Size([3, 2, 4, 8])
    """

    def __init__(
        self,
        mode: str,
        num_modalities: int,
        num_tokens: int,
        hidden_size: int,
        retriever_kwargs: Mapping | None = None,
        num_heads: int = 4,
    ) -> None:
        super().__init__()
        if mode not in MISSING_MODES:
            raise ValueError(f"missing_modality must be one of {MISSING_MODES}, got '{mode}'")
        if retriever_kwargs and mode != "retriever":
            raise ValueError("retriever_kwargs needs missing_modality='retriever'")
        self.mode, self.id_key = mode, "id"
        self.retriever: MoERetriever | None = None
        if mode == "learned":
            self.missing_tokens = nn.Parameter(torch.randn(num_modalities, 1, num_tokens, hidden_size) * 0.02)
        elif mode == "retriever":
            kwargs = dict(retriever_kwargs or {})
            self.id_key = kwargs.pop("id_key", "id")
            kwargs.setdefault("num_heads", num_heads)
            self.retriever = MoERetriever(num_modalities, num_tokens, hidden_size, **kwargs)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, batch: Mapping | None = None) -> FillOutput:
        """``tokens`` ``(B, M, n, d)`` with absent modalities filled; ``batch`` supplies the ids (``id_key``).

        Returns:
            :class:`~medmoe.blocks.retriever.FillOutput`: the filled tokens, this call's auxiliary losses
            (``retriever_importance`` / ``retriever_balance``, and ``retriever_reconstruction`` with
            ``masked_retrieval``, in retriever mode; else none) and the retriever's choices (else empty).
        """
        mask = mask.to(device=tokens.device, dtype=torch.bool)
        if self.retriever is not None:
            ids = None if batch is None else batch.get(self.id_key)
            filled, aux, choices = self.retriever(tokens, mask, ids)
            return FillOutput(filled, {f"retriever_{name}": value for name, value in aux.items()}, choices)
        absent = ~mask[:, :, None, None]
        fill = self.missing_tokens.transpose(0, 1) if self.mode == "learned" else torch.zeros((), device=tokens.device)
        return FillOutput(torch.where(absent, fill.to(tokens.dtype), tokens), {}, {})
