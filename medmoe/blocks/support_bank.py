"""Cache of training-split embeddings per modality for the MoE-Retriever's supporting groups.

Only training samples are ever written (the public code's leak: validation / test samples as supports); rows are
keyed by sample id (one row per id, the newest embedding), and under ``torch.distributed`` every rank writes the
whole global batch so that all ranks hold the same bank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["SupportBank", "exclude_banks_from_ddp_broadcast"]


class SupportBank(nn.Module):
    """Cache of training-split token embeddings ``(capacity, M, n, d)`` with presence pattern and sample id.

    One row per training sample: a sample seen again (same id, e.g. in a later epoch) overwrites its own row
    with the newer embedding instead of taking a second one, so the supporting group never holds stale copies of
    one sample. New samples take the least recently written rows (empty ones first), i.e. FIFO eviction.
    Rows whose id is None are never de-duplicated.

    Memory: ``capacity * M * n * d`` floats (fp32), e.g. 256 x 4 views x 64 tokens x 64 = 16.8 MB. The cache is
    a buffer, so it is saved in checkpoints and an evaluator that loads one retrieves from the training cache.
    Ids are kept as extra state (a list). Stored embeddings are detached: no gradient flows into the cache.

    Distributed training: when ``torch.distributed`` is initialised with more than one rank and ``sync`` is True,
    :meth:`update` all-gathers the batch (embeddings, mask, ids) from every rank first, so every rank writes the
    same rows in the same order and all ranks hold one identical bank of the global training batch. Every rank
    must then call :meth:`update` in lockstep (the retriever does, once per training forward). With ``sync``
    False each rank keeps its own bank.

    Args:
        num_modalities: ``M``.
        num_tokens: ``n`` tokens per modality embedding.
        hidden_size: ``d``.
        capacity: rows kept.
        sync: all-gather updates across ranks when ``torch.distributed`` is initialised.

    Raises:
        ValueError: if ``capacity < 1``.

    Example::

        >>> bank = SupportBank(2, 4, 8, capacity=16)
        >>> bank.update(["a", "b"], torch.randn(2, 2, 4, 8), torch.tensor([[True, True], [True, False]]), True)
        2
    """

    def __init__(
        self, num_modalities: int, num_tokens: int, hidden_size: int, capacity: int = 256, sync: bool = True
    ) -> None:
        super().__init__()
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.sync = capacity, sync
        self.register_buffer("embeddings", torch.zeros(capacity, num_modalities, num_tokens, hidden_size))
        self.register_buffer("presence", torch.zeros(capacity, num_modalities, dtype=torch.bool))
        self.register_buffer("filled", torch.zeros(capacity, dtype=torch.bool))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))  # rows written so far (write clock)
        # write clock of each row; empty rows count as older than any write, in slot order
        self.register_buffer("stamp", torch.arange(capacity, dtype=torch.long) - capacity)
        self.ids: list = [None] * capacity
        self._slot: dict = {}  # id -> its row, kept with ``ids`` so lookups never scan the bank

    def get_extra_state(self) -> dict:
        return {"ids": list(self.ids)}

    def set_extra_state(self, state: dict) -> None:
        self.ids = list(state["ids"])
        self._slot = {i: s for s, i in enumerate(self.ids) if i is not None}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        if f"{prefix}embeddings" in state_dict and f"{prefix}stamp" not in state_dict:  # bank saved before `stamp`
            state_dict[f"{prefix}stamp"] = torch.arange(self.capacity, dtype=torch.long) - self.capacity
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def update(self, ids, embeddings: torch.Tensor, mask: torch.Tensor, split_is_train: bool) -> int:
        """Store the training samples of a batch (rows with at least one present modality).

        Args:
            ids: ``B`` sample ids (list or tensor) or None. A known id overwrites its own row; within a batch the
                last occurrence of an id wins.
            embeddings: ``(B, M, n, d)``; absent modalities are stored as zeros and never read.
            mask: ``(B, M)`` bool presence.
            split_is_train: must be True: the bank holds training-split embeddings only (never validation or test:
                the public code leaks test inputs into the supporting group).

        Returns: the number of rows written (over all ranks when gathering).

        Raises:
            ValueError: if ``split_is_train`` is False, the shapes disagree or ``ids`` has the wrong length.
        """
        if not split_is_train:
            raise ValueError("SupportBank.update takes training-split samples only (split_is_train=False given)")
        if embeddings.shape[:2] != mask.shape or embeddings.shape[1:] != self.embeddings.shape[1:]:
            raise ValueError(
                f"embeddings must be (B, {', '.join(map(str, self.embeddings.shape[1:]))}) with mask (B, M), "
                f"got {tuple(embeddings.shape)} and {tuple(mask.shape)}"
            )
        ids = [None] * mask.shape[0] if ids is None else (ids.tolist() if torch.is_tensor(ids) else list(ids))
        if len(ids) != mask.shape[0]:
            raise ValueError(f"ids must have one entry per sample ({mask.shape[0]}), got {len(ids)}")
        embeddings = embeddings.detach().to(self.embeddings.device, self.embeddings.dtype)
        mask = mask.to(self.presence.device, torch.bool)
        if self.sync:
            embeddings, mask, ids = _all_gather_batch(embeddings, mask, ids)
        rows, slots = self._assign(ids, mask.any(1).tolist())
        if not rows:
            return 0
        rows_t = torch.tensor(rows, device=self.embeddings.device)
        slots_t = torch.tensor(slots, device=self.embeddings.device)
        mask_rows = mask[rows_t]
        self.embeddings[slots_t] = embeddings[rows_t] * mask_rows[:, :, None, None]
        self.presence[slots_t] = mask_rows
        self.filled[slots_t] = True
        self.stamp[slots_t] = self.pointer + torch.arange(len(rows), device=self.stamp.device)
        self.pointer.add_(len(rows))
        for slot, row in zip(slots, rows):  # bookkeeping of B ids, no tensor work
            old, new = self.ids[slot], ids[row]
            if old is not None and self._slot.get(old) == slot:
                del self._slot[old]
            self.ids[slot] = new
            if new is not None:
                self._slot[new] = slot
        return len(rows)

    def _assign(self, ids: list, keep: list[bool]) -> tuple[list[int], list[int]]:
        """Rows of the batch to write and their slots: known ids -> their row, new ones -> least recently written."""
        last = {i: r for r, i in enumerate(ids) if keep[r] and i is not None}  # last occurrence of each id
        rows = [r for r, i in enumerate(ids) if keep[r] and (i is None or last[i] == r)]
        known = {r: self._slot[ids[r]] for r in rows if ids[r] is not None and ids[r] in self._slot}
        new_rows = [r for r in rows if r not in known]
        free = self.capacity - len(known)
        new_rows = new_rows[len(new_rows) - free :] if len(new_rows) > free else new_rows  # keep the last rows
        order = self.stamp.clone()
        if known:
            order[list(known.values())] = torch.iinfo(torch.long).max  # refreshed rows are not evicted
        new_slots = order.topk(len(new_rows), largest=False).indices.tolist() if new_rows else []
        slot_of = {**known, **dict(zip(new_rows, new_slots))}
        rows = sorted(slot_of)
        return rows, [slot_of[r] for r in rows]

    def candidates(
        self, observed: torch.Tensor, targets: torch.Tensor, query_ids: list | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validity matrix ``(P, capacity)`` of support rows for ``P`` (observed pattern, target modality) queries.

        A row is valid if it is filled, has the target modality, has every observed modality of the query and is
        not the query sample itself (same id: a training exam seen in an earlier epoch, possibly with the
        modality present, must not support itself). Where no row shares all observed modalities, rows that
        merely have the target (and are not the sample) are used (``fallback``).

        Args:
            observed: ``(P, M)`` bool.
            targets: ``(P,)`` long.
            query_ids: ``P`` ids of the query samples, or None (no self-exclusion; None ids never match).

        Returns: ``(valid (P, capacity) bool, fallback (P,) bool)``.
        """
        have_target = self.presence[:, targets].t() & self.filled  # P C
        own = [(p, self._slot[i]) for p, i in enumerate(query_ids or ()) if i is not None and i in self._slot]
        if own:  # a query's own row (same id) never supports it
            queries, rows = zip(*own)
            have_target[list(queries), list(rows)] = False
        shares = (self.presence.unsqueeze(0) | ~observed.unsqueeze(1)).all(-1)  # (1 C M | P 1 M) -> P C
        full = have_target & shares
        fallback = ~full.any(1)
        return torch.where(fallback.unsqueeze(1), have_target, full), fallback

    def sample(
        self,
        observed: torch.Tensor,
        targets: torch.Tensor,
        k: int,
        generator: torch.Generator | None = None,
        query_ids: list | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Draw ``k`` support rows without replacement for each of ``P`` queries, batched.

        Args:
            observed: ``(P, M)`` bool observed modalities of each query sample.
            targets: ``(P,)`` target (missing) modality of each query.
            k: supports per query (``<= capacity``).
            generator: optional RNG for ``torch.multinomial``.
            query_ids: ``P`` query sample ids: a sample never supports itself (see :meth:`candidates`).

        Returns: ``(index (P, k) long, valid (P, k) bool, fallback (P,) bool)``; a slot is invalid when fewer than
        ``k`` candidates exist; ``fallback`` marks the queries that fell back to "has the target" only.
        """
        if k > self.capacity:
            raise ValueError(f"k ({k}) must be <= the bank capacity ({self.capacity})")
        device = self.presence.device
        valid, fallback = self.candidates(observed.to(device), targets.to(device), query_ids)
        # invalid rows get a tiny weight so multinomial never runs out of categories; they are masked afterwards
        weights = valid.to(torch.float32).clamp_min(1e-20)
        index = torch.multinomial(weights, k, replacement=False, generator=generator)
        return index, valid.gather(1, index), fallback

    def nearest(
        self,
        observed: torch.Tensor,
        targets: torch.Tensor,
        k: int,
        query: torch.Tensor,
        query_ids: list | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The ``k`` eligible rows most similar to each of ``P`` queries, batched (one einsum + one top-k).

        Eligibility is that of :meth:`candidates` (training rows only, have the target, share the query's observed
        modalities, not the query sample itself). Similarity: each modality's tokens are mean-pooled and
        L2-normalised, for the query and for every row; the score is the mean over the modalities that the query
        observes *and* the row has of their cosine similarities, i.e. the cosine similarity of the concatenated
        normalised embeddings over those modalities. The choice is discrete, so no gradient flows through it (the
        bank is detached anyway); it is deterministic, in training and evaluation alike (ties go to the lower
        row).

        Args:
            observed: ``(P, M)`` bool observed modalities of each query sample.
            targets: ``(P,)`` target (missing) modality of each query.
            k: supports per query (``<= capacity``).
            query: ``(P, M, n, d)`` the query samples' tokens; only observed modalities are read.
            query_ids: ``P`` query sample ids: a sample never supports itself.

        Returns: ``(index (P, k) long, valid (P, k) bool, fallback (P,) bool)``, ordered from most to least
        similar; a slot is invalid when fewer than ``k`` eligible rows exist; ``fallback`` as in :meth:`sample`.

        Raises:
            ValueError: if ``k > capacity`` or ``query`` does not match the bank's ``(M, n, d)``.
        """
        if k > self.capacity:
            raise ValueError(f"k ({k}) must be <= the bank capacity ({self.capacity})")
        if query.shape[1:] != self.embeddings.shape[1:] or query.shape[0] != observed.shape[0]:
            raise ValueError(
                f"query must be (P={observed.shape[0]}, {', '.join(map(str, self.embeddings.shape[1:]))}), "
                f"got {tuple(query.shape)}"
            )
        device = self.presence.device
        observed = observed.to(device)
        valid, fallback = self.candidates(observed, targets.to(device), query_ids)
        with torch.no_grad():
            q = F.normalize(query.detach().to(device, torch.float32).mean(2), dim=-1)  # P M d
            bank = F.normalize(self.embeddings.float().mean(2), dim=-1)  # C M d
            both = (observed.unsqueeze(1) & self.presence.unsqueeze(0)).float()  # P C M
            score = torch.einsum("pmd,cmd->pcm", q, bank).mul(both).sum(-1) / both.sum(-1).clamp_min(1.0)
            score = score.masked_fill(~valid, float("-inf"))
            # top-k as a stable descending sort: most similar first, ties to the lower row (topk leaves ties open)
            index = score.sort(dim=1, descending=True, stable=True).indices[:, :k]
        return index, valid.gather(1, index), fallback

    def mean_embedding(self) -> torch.Tensor:
        """Mean token embedding ``(M, n, d)`` of each modality over the cached rows that have it (zeros if none)."""
        weight = (self.presence & self.filled.unsqueeze(1)).to(self.embeddings.dtype)  # C M
        total = torch.einsum("cm,cmnd->mnd", weight, self.embeddings)
        return total / weight.sum(0).clamp_min(1.0)[:, None, None]


def _all_gather_batch(
    embeddings: torch.Tensor, mask: torch.Tensor, ids: list
) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Concatenate a batch over all ranks (rank order) when ``torch.distributed`` runs with several ranks."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return embeddings, mask, ids
    world = dist.get_world_size()
    size = torch.tensor([mask.shape[0]], device=embeddings.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    pad = max(sizes) - mask.shape[0]
    flat = torch.cat([embeddings.flatten(1), mask.to(embeddings.dtype)], 1)  # one collective for both
    flat = F.pad(flat, (0, 0, 0, pad))
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    flat = torch.cat([g[:s] for g, s in zip(gathered, sizes)])
    m = mask.shape[1]
    all_ids: list = [None] * world
    dist.all_gather_object(all_ids, ids)
    return flat[:, :-m].view(-1, *embeddings.shape[1:]), flat[:, -m:] > 0.5, [i for part in all_ids for i in part]


def exclude_banks_from_ddp_broadcast(model: nn.Module) -> nn.Module:
    """Keep :class:`DistributedDataParallel` from broadcasting the buffers of every :class:`SupportBank` in
    ``model``; call it on the unwrapped model before wrapping it (returns ``model``).

    DDP copies rank 0's buffers to every rank before each training forward (``broadcast_buffers=True``, its
    default). For a bank that is redundant with ``sync=True`` (the ranks already hold identical banks, and the
    copy moves ``capacity x M x n x d`` floats per step, e.g. 16.8 MB) and wrong with ``sync=False`` (rank 0's
    embeddings would overwrite the other ranks' while their id lists stay their own). Other buffers (e.g. batch
    norm statistics) are still broadcast. Uses DDP's ``_set_params_and_buffers_to_ignore_for_model``, keeping
    any names already set.

    Example::

        >>> model = exclude_banks_from_ddp_broadcast(model)  # doctest: +SKIP
        >>> ddp = DistributedDataParallel(model)  # doctest: +SKIP
    """
    names = [
        f"{prefix}.{name}" if prefix else name
        for prefix, module in model.named_modules()
        if isinstance(module, SupportBank)
        for name, _ in module.named_buffers(recurse=False)
    ]
    ignored = list(getattr(model, "_ddp_params_and_buffers_to_ignore", []))
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, sorted({*ignored, *names}))
    return model
