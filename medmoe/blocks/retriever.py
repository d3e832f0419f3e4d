"""MoE-Retriever: missing-modality embeddings retrieved by a sparse MoE over a supporting group.

Paper: "Sparse MoE as a New Retriever: Addressing Missing Modality Problem in Incomplete Multimodal Data"
(ICLR 2025, papers/moe_retriever_abstract.txt); public code notes in reference section 1. This follows the
paper's intent, not the public code's shortcut (which discards the router output), and fixes its leak: support
samples come from a cache of *training* embeddings only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import BatchedExperts
from .support_bank import SupportBank

__all__ = [
    "FillOutput",
    "MoERetriever",
    "RETRIEVER_MODES",
    "SUPPORT_SELECTIONS",
    "SupportBank",
    "cv_squared",
    "noisy_top_k_gating",
]

RETRIEVER_MODES = ("moe", "public_mean", "mean", "learned", "zero")
SUPPORT_SELECTIONS = ("nearest", "random")


class FillOutput(NamedTuple):
    """What one missing-modality fill produced: the filled tokens and, for this call only, its auxiliary losses
    (name -> scalar with gradient) and choices (see :meth:`MoERetriever.forward`)."""

    tokens: torch.Tensor
    aux_losses: dict[str, torch.Tensor]
    choices: dict[str, Any]


def cv_squared(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Squared coefficient of variation ``var(x) / (mean(x)^2 + eps)`` (unbiased var; 0 for one element)."""
    if x.numel() <= 1:
        return x.new_zeros(())
    x = x.float()
    return x.var() / (x.mean() ** 2 + eps)


def _cv_squared_rows(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """:func:`cv_squared` of every row of ``x`` (last axis)."""
    if x.shape[-1] <= 1:
        return x.new_zeros(x.shape[:-1])
    x = x.float()
    return x.var(-1) / (x.mean(-1) ** 2 + eps)


def noisy_top_k_gating(
    clean: torch.Tensor, noise_std: torch.Tensor | None, noise: torch.Tensor | None, allowed: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noisy top-k gating (Shazeer et al. 2017, Eq. 3-5, and the smooth load estimator of App. A).

    Args:
        clean: ``(T, E)`` clean logits ``x W_g``.
        noise_std: ``(T, E)`` ``softplus(x W_noise)`` or None (no noise, e.g. eval).
        noise: ``(T, E)`` standard normal draws (used with ``noise_std``).
        allowed: ``(T, E)`` bool: disallowed experts get ``-inf`` before top-k.
        k: experts kept per token (``<=`` allowed experts per token).

    Returns: ``(gates (T, k) softmax over the kept logits, indices (T, k), load (T, E))`` where ``load`` is
    P(expert in top-k) with noise, else the 0/1 selection.
    """
    noisy = clean if noise_std is None else clean + noise * noise_std
    noisy = noisy.masked_fill(~allowed, float("-inf"))
    # top-k as a stable descending sort: ties (an untrained gate's equal logits) go to the lower expert, in eager and
    # exported graphs alike (torch.topk leaves ties open)
    top, indices = noisy.sort(dim=1, descending=True, stable=True)
    top, indices = top[:, : k + 1], indices[:, : k + 1]
    gates = torch.softmax(top[:, :k], dim=1)
    indices = indices[:, :k]
    if noise_std is None:
        return gates, indices, torch.zeros_like(clean).scatter(1, indices, 1.0)
    # threshold for expert i: the k-th largest noisy logit of the others (k+1-th if i is in the top k)
    top = top.clamp_min(-1e4)  # finite thresholds keep the gradient finite where fewer than k + 1 are allowed
    below = top[:, k : k + 1] if top.shape[1] > k else torch.full_like(top[:, :1], -1e4)
    in_top = noisy > below
    threshold = torch.where(in_top, below, top[:, k - 1 : k])
    normal = torch.distributions.Normal(0.0, 1.0)
    load = normal.cdf((clean - threshold) / noise_std) * allowed
    return gates, indices, load


class MoERetriever(nn.Module):
    """Fill the token embeddings of absent modalities (MoE-Retriever and baselines, one interface).

    ``mode``:
        - ``"moe"`` (paper intent): for each absent (sample, modality ``m``), intra-modal tokens = ``m``-tokens of
          ``num_supports`` training samples that have ``m`` and share the sample's observed modalities
          (:class:`SupportBank`; by default the most similar ones, see ``support_selection``); inter-modal tokens = the
          sample's own observed tokens. One learned query per target token attends across all of them (samples x
          modalities x tokens, plus a learned null key), then a noisy top-k sparse MoE (FFN experts: ``num_candidates``
          per modality + ``num_shared`` shared; modality ``m`` may use only its block and the shared ones) refines it:
          ``out = h + sum_k g_k E_k(LN(h))``. Auxiliary losses: mean over target modalities of cv^2(importance) and
          cv^2(load) over the allowed experts (so the missing-rate mix across modalities is not penalised).
        - ``"public_mean"``: the public code's output, ``0.5 mean(intra) + 0.5 mean(inter)`` (only one term when
          the other is empty; zeros when both are).
        - ``"mean"``: the cached training mean of modality ``m``. ``"learned"``: a learned bank per (observed
          combination, ``m``) as in Flex-MoE (``2^M x M x n x d`` parameters). ``"zero"``: zeros.

    The cache is read before it is updated, so a batch never supports itself. It is updated only in training
    mode with ``update_bank`` True; the caller guarantees that training-mode batches come from the training
    split (MONAI's evaluator runs the model in eval mode, so validation/test never enter the cache).

    Args:
        num_modalities, num_tokens, hidden_size: ``M``, ``n``, ``d``.
        mode: one of :data:`RETRIEVER_MODES`.
        num_heads: attention heads.
        num_supports: ``k`` support samples per query.
        num_candidates, num_shared, top_k: experts per modality, shared experts, experts kept per token.
        mlp_dim: expert hidden width (default ``2 d``).
        capacity: support bank rows.
        eval_seed: in eval mode, support sampling uses a generator seeded with this at every forward (unless a
            ``generator`` is given), so evaluation is reproducible and a batch's output does not depend on what
            ran before; None draws from the global RNG. Training draws from ``self.generator`` or the global RNG.
        sync_bank: all-gather bank updates across ranks under ``torch.distributed`` (see :class:`SupportBank`).
        masked_retrieval: an optional self-supervised term *beyond the paper* (``"moe"`` mode only; 0 = off, the
            paper's training). In training, each sample with at least two present modalities hides one of them
            (uniformly) from the retriever with this probability; the retriever retrieves it from the other
            modalities and the supports (never the sample itself), and ``auxiliary_losses()["reconstruction"]``
            is the relative squared error ``|r - e|^2 / |e|^2`` to the real, detached embedding ``e``. It trains
            the retriever on complete samples too, not only on the (possibly rare) naturally missing ones. The
            downstream model always sees the real embedding.
        support_selection: how the ``num_supports`` supports are picked among the eligible bank rows (training
            rows that have ``m`` and share the sample's observed modalities, never the sample itself), for
            ``"moe"`` and ``"public_mean"``: ``"nearest"`` (default) the rows most similar to the sample
            (:meth:`SupportBank.nearest`: cosine similarity of the mean-pooled embeddings of the modalities both
            have; deterministic, no gradient through the choice), so the supports are *relevant* to the sample;
            ``"random"`` a uniform draw without replacement (:meth:`SupportBank.sample`), which gives only
            population-level supports (``eval_seed`` / ``generator`` apply to this one only).
        support_residual: ``"moe"`` only, *beyond the paper* (default False = the paper's block): add the plain
            mean of the valid supports' ``m``-tokens to the attention output, so the block starts from the
            k-nearest-neighbour average of the view and the attention and experts learn a correction
            (``h = attn + mean(intra)``, ``out = h + sum_k g_k E_k(LN(h))``; zeros are added where no support is
            valid). The attention alone works on LayerNorm-ed keys, so it does not carry the supports' scale.

    Shapes: ``forward(tokens (B, M, n, d), mask (B, M), ids)`` -> :class:`FillOutput` whose ``tokens`` are
    ``(B, M, n, d)`` with absent modalities replaced (present ones untouched).

    Raises:
        ValueError: on an unknown mode, ``top_k`` larger than the allowed experts, or a bad shape.

    Example::

        >>> r = MoERetriever(2, 4, 8, num_heads=2, num_candidates=2, num_shared=1, top_k=2, capacity=8)
        >>> out = r(torch.randn(3, 2, 4, 8), torch.tensor([[True, True], [True, False], [False, True]]))
        >>> out.tokens.shape, sorted(out.aux_losses)
        (torch.Size([3, 2, 4, 8]), ['balance', 'importance'])
    """

    def __init__(
        self,
        num_modalities: int,
        num_tokens: int,
        hidden_size: int,
        mode: str = "moe",
        num_heads: int = 4,
        num_supports: int = 4,
        num_candidates: int = 4,
        num_shared: int = 2,
        top_k: int = 2,
        mlp_dim: int | None = None,
        capacity: int = 256,
        eval_seed: int | None = 0,
        sync_bank: bool = True,
        masked_retrieval: float = 0.0,
        support_selection: str = "nearest",
        support_residual: bool = False,
    ) -> None:
        super().__init__()
        if mode not in RETRIEVER_MODES:
            raise ValueError(f"mode must be one of {RETRIEVER_MODES}, got '{mode}'")
        m, n, d = num_modalities, num_tokens, hidden_size
        self.mode, self.num_modalities, self.num_supports = mode, m, num_supports
        self.update_bank, self.eval_seed = True, eval_seed
        if not 0.0 <= masked_retrieval <= 1.0 or (masked_retrieval and mode != "moe"):
            raise ValueError(f"masked_retrieval must be in [0, 1] and needs mode 'moe', got {masked_retrieval}")
        self.masked_retrieval = masked_retrieval
        if support_selection not in SUPPORT_SELECTIONS:
            raise ValueError(f"support_selection must be one of {SUPPORT_SELECTIONS}, got '{support_selection}'")
        self.support_selection = support_selection
        if support_residual and mode != "moe":
            raise ValueError(f"support_residual needs mode 'moe', got mode '{mode}'")
        self.support_residual = support_residual
        self.generator: torch.Generator | None = None
        self.bank = SupportBank(m, n, d, capacity, sync_bank) if mode in ("moe", "public_mean", "mean") else None
        if self.bank is not None and not 1 <= num_supports <= capacity:
            raise ValueError(f"num_supports must be in [1, capacity = {capacity}], got {num_supports}")
        if mode == "learned":
            if m > 8:
                raise ValueError(f"mode 'learned' keeps 2^M banks; M={m} is too many")
            self.learned = nn.Parameter(torch.randn(2**m, m, n, d) * 0.02)
        if mode != "moe":
            return
        if not 1 <= top_k <= num_candidates + num_shared:
            raise ValueError(f"top_k must be in [1, num_candidates + num_shared = {num_candidates + num_shared}]")
        self.top_k, self.num_experts = top_k, m * num_candidates + num_shared
        self.num_candidates, self.num_shared = num_candidates, num_shared
        self.query = nn.Parameter(torch.randn(m, n, d) * 0.02)  # one query per target token
        self.null_key = nn.Parameter(torch.randn(m, 1, d) * 0.02)  # always-valid key: no empty context
        self.source_embed = nn.Parameter(torch.randn(2, m, d) * 0.02)  # [intra of m | inter of modality j]
        self.position = nn.Parameter(torch.randn(n, d) * 0.02)
        self.norm_kv = nn.LayerNorm(d)
        self.attention = nn.MultiheadAttention(d, num_heads, batch_first=True)
        self.norm_moe = nn.LayerNorm(d)
        self.w_gate = nn.Parameter(torch.zeros(d, self.num_experts))  # zero init as Shazeer / FastMoE
        self.w_noise = nn.Parameter(torch.zeros(d, self.num_experts))
        self.experts = BatchedExperts(d, mlp_dim or 2 * d, self.num_experts)
        allowed = torch.zeros(m, self.num_experts, dtype=torch.bool)
        for i in range(m):  # construction only
            allowed[i, i * num_candidates : (i + 1) * num_candidates] = True
        allowed[:, m * num_candidates :] = True
        self.register_buffer("allowed", allowed, persistent=False)

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, ids=None, generator: torch.Generator | None = None
    ) -> FillOutput:
        """Fill the absent modalities of ``tokens``; nothing of the call is kept on the module.

        Returns:
            :class:`FillOutput`: the filled tokens; ``aux_losses`` ``{"importance", "balance"}`` (plus
            ``"reconstruction"`` with ``masked_retrieval``): zero when nothing was routed, still tied to every
            parameter so DDP sees them used; ``choices``, for each retrieved embedding (row ``i``): ``sample`` /
            ``modality``; in ``"moe"`` mode ``expert_index`` / ``expert_gate`` ``(P, n, top_k)`` (experts
            ``[m C, (m+1) C)`` belong to modality ``m``, the last ``num_shared`` are shared); with a bank,
            ``support_index`` / ``support_valid`` ``(P, k)``, ``fallback`` ``(P,)`` and ``bank_ids`` (the bank's ids
            when it was read, for :func:`medmoe.interpret.retrieval.support_ids`).
        """
        b, m, n, d = tokens.shape
        if m != self.num_modalities or mask.shape != (b, m):
            raise ValueError(
                f"tokens must be (B, {self.num_modalities}, n, d) with mask (B, M), got {tuple(mask.shape)}"
            )
        mask = mask.to(device=tokens.device, dtype=torch.bool)
        if not self.training and (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            return self._fill_every_pair(tokens, mask)  # export (medmoe.export): no batch-dependent control flow
        ids = None if ids is None else (ids.tolist() if torch.is_tensor(ids) else list(ids))
        if ids is not None and len(ids) != b:
            raise ValueError(f"ids must have one entry per sample ({b}), got {len(ids)}")
        generator = self._generator(generator)
        sample, target = (~mask).nonzero(as_tuple=True)  # P missing (sample, modality) pairs
        aux: dict[str, torch.Tensor] = {}
        choices: dict[str, Any] = {"sample": sample, "modality": target}
        if sample.numel():
            fill, aux, retrieved = self._retrieve(tokens, mask, sample, target, generator, ids)
            choices.update(retrieved)
            tokens = tokens.index_put((sample, target), fill.to(tokens.dtype))
        if self.training and self.masked_retrieval > 0:
            aux = {**aux, "reconstruction": self._masked_retrieval_loss(tokens, mask, ids, generator)}
        if self.bank is not None and self.training and self.update_bank:
            self.bank.update(ids, tokens.detach(), mask, split_is_train=True)
        return FillOutput(tokens, self._all_losses(aux, tokens.device), choices)

    def _fill_every_pair(self, tokens: torch.Tensor, mask: torch.Tensor) -> FillOutput:
        """Eval forward for tracing: retrieve for every (sample, modality) pair, keep the fills of the absent ones.

        The traced graph then does not depend on which modalities the example batch misses (``nonzero`` and
        ``if`` would fix that). A pair's fill depends on its own sample only, so the absent pairs get forward's
        values (with ``support_selection="nearest"``; random support sampling cannot be traced). No ids: a new
        exam is never in the bank.
        """
        b, m = mask.shape
        sample = torch.arange(b, device=tokens.device).repeat_interleave(m)
        target = torch.arange(m, device=tokens.device).repeat(b)
        fill, _, _ = self._retrieve(tokens, mask, sample, target, None)
        fill = fill.reshape(tokens.shape).to(tokens.dtype)
        return FillOutput(torch.where(mask[:, :, None, None], tokens, fill), {}, {})

    def _all_losses(self, aux: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """Every auxiliary loss name; the ones this call did not compute are a zero tied to every parameter."""
        names = ["importance", "balance"] + (["reconstruction"] if self.masked_retrieval > 0 else [])
        if all(k in aux for k in names):
            return aux
        zero = sum((p.sum() * 0.0 for p in self.parameters()), torch.zeros((), device=device))
        return {**dict.fromkeys(names, zero), **aux}

    def _generator(self, given: torch.Generator | None) -> torch.Generator | None:
        """The generator for support sampling: given > ``self.generator`` > seeded one in eval > global RNG."""
        if given is not None or self.generator is not None:
            return given if given is not None else self.generator
        if self.training or self.eval_seed is None or self.bank is None:
            return None
        return torch.Generator(device=self.bank.presence.device).manual_seed(self.eval_seed)

    def _masked_retrieval_loss(self, tokens, mask, ids, generator) -> torch.Tensor:
        """Hide one present modality of some samples, retrieve it, return the relative squared error (detached
        target); zero tied to the parameters when no sample qualifies."""
        draw = torch.rand(mask.shape, device=mask.device, generator=generator)
        hide = draw.masked_fill(~mask, -1.0).argmax(1)  # a uniformly drawn present modality per sample
        keep = (mask.sum(1) >= 2) & (
            torch.rand(mask.shape[0], device=mask.device, generator=generator) < self.masked_retrieval
        )
        sample = keep.nonzero().squeeze(1)
        if sample.numel() == 0:
            return sum((p.sum() * 0.0 for p in self.parameters()), tokens.new_zeros(()))
        target = hide[sample]
        hidden = mask.clone()
        hidden[sample, target] = False
        retrieved, _, _ = self._retrieve(tokens, hidden, sample, target, generator, ids)
        real = tokens[sample, target].detach()
        error = (retrieved - real).square().flatten(1).sum(1) / real.square().flatten(1).sum(1).clamp_min(1e-6)
        return error.mean()

    def _retrieve(self, tokens, mask, sample, target, generator, ids=None) -> tuple[torch.Tensor, dict, dict]:
        """``(fill (P, n, d), auxiliary losses, choices)`` for the ``P`` (sample, target) pairs."""
        observed = mask[sample]  # P M
        if self.mode == "zero":
            return tokens.new_zeros(sample.numel(), *tokens.shape[2:]), {}, {}
        if self.mode == "learned":
            combination = (observed.long() << torch.arange(self.num_modalities, device=tokens.device)).sum(1)
            return self.learned[combination, target], {}, {}
        if self.mode == "mean":
            return self.bank.mean_embedding()[target], {}, {}
        query_ids = None if ids is None else [ids[i] for i in sample.tolist()]
        if self.support_selection == "nearest":
            index, valid, fallback = self.bank.nearest(observed, target, self.num_supports, tokens[sample], query_ids)
        else:
            index, valid, fallback = self.bank.sample(observed, target, self.num_supports, generator, query_ids)
        index, valid = index.to(tokens.device), valid.to(tokens.device)
        # the bank's ids are copied: the update after retrieval may overwrite slots
        choices = {
            "support_index": index,
            "support_valid": valid,
            "fallback": fallback,
            "bank_ids": list(self.bank.ids),
        }
        intra = self.bank.embeddings[index, target.unsqueeze(1)].to(tokens.dtype)  # P k n d
        inter = tokens[sample]  # P M n d (own observed modalities; the target itself is absent)
        if self.mode == "public_mean":
            has = torch.stack([valid.any(1), observed.any(1)], 1).to(tokens.dtype)[:, :, None, None]  # P 2 1 1
            means = torch.stack([_masked_mean(intra, valid), _masked_mean(inter, observed)], 1)  # P 2 n d
            return (has * means).sum(1) / has.sum(1).clamp_min(1.0), {}, choices  # 50/50, or the non-empty term
        fill, aux, routed = self._moe(intra, valid, inter, observed, target)
        return fill, aux, {**choices, **routed}

    def _moe(self, intra, valid, inter, observed, target) -> tuple[torch.Tensor, dict, dict]:
        p, k, n, d = intra.shape
        m = inter.shape[1]
        base = _masked_mean(intra, valid) if self.support_residual else None  # P n d, before the embeddings
        intra = intra + self.source_embed[0, target][:, None, None] + self.position
        inter = inter + self.source_embed[1][None, :, None] + self.position
        keys = torch.cat([self.null_key[target], intra.reshape(p, k * n, d), inter.reshape(p, m * n, d)], 1)
        key_valid = torch.cat(
            [valid.new_ones(p, 1), valid.repeat_interleave(n, 1), observed.repeat_interleave(n, 1)], 1
        )
        keys = self.norm_kv(keys)
        h, _ = self.attention(self.query[target], keys, keys, key_padding_mask=~key_valid, need_weights=False)
        if base is not None:
            h = h + base
        x = self.norm_moe(h).reshape(p * n, d)  # one routing decision per retrieved token
        allowed = self.allowed[target].repeat_interleave(n, 0)  # (p n) e
        clean = x @ self.w_gate
        noise_std = noise = None
        if self.training:
            noise_std = F.softplus(x @ self.w_noise) + 1e-2
            noise = torch.randn_like(clean)
        gates, indices, load = noisy_top_k_gating(clean, noise_std, noise, allowed, self.top_k)
        dense_gates = torch.zeros_like(clean).scatter(1, indices, gates)  # (p n) e
        expert_out = self.experts(x.unsqueeze(0).expand(self.num_experts, -1, -1))  # e (p n) d
        moe = torch.einsum("te,etd->td", dense_gates.to(expert_out.dtype), expert_out)
        choices = {"expert_index": indices.view(p, n, -1), "expert_gate": gates.view(p, n, -1).detach()}
        return h + moe.view(p, n, d), self._balance(dense_gates, load, target.repeat_interleave(n)), choices

    def _balance(self, gates: torch.Tensor, load: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean over the target modalities of this batch of cv^2 over that modality's allowed experts."""
        onehot = F.one_hot(target, self.num_modalities).to(gates.dtype)  # t m
        used = onehot.sum(0) > 0
        per_modality = torch.stack([onehot.t() @ gates, onehot.t() @ load])  # 2 m e (importance, load)
        allowed = per_modality[:, self.allowed].view(2, self.num_modalities, -1)[:, used]  # 2 m' a
        cv = _cv_squared_rows(allowed).mean(1)
        return {"importance": cv[0], "balance": cv[1]}

    def expert_names(self, modalities: Sequence[str] | None = None) -> list[str]:
        """Names of the candidate experts in ``"moe"`` mode: ``<modality>_<c>`` for each modality's block (index
        ``m * num_candidates + c``), then ``shared_<c>``; ``modalities`` defaults to ``m0, m1, ...``."""
        if self.mode != "moe":
            raise ValueError(f"mode '{self.mode}' has no candidate experts")
        names = list(modalities) if modalities is not None else [f"m{i}" for i in range(self.num_modalities)]
        if len(names) != self.num_modalities:
            raise ValueError(f"expected {self.num_modalities} modality names, got {len(names)}: {names}")
        own = [f"{name}_{c}" for name in names for c in range(self.num_candidates)]
        return own + [f"shared_{c}" for c in range(self.num_shared)]


def _masked_mean(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` ``(P, S, n, d)`` over the kept ``S`` entries (zeros where none)."""
    w = keep.to(x.dtype)[:, :, None, None]
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)
