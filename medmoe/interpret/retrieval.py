"""MoE-Retriever interpretation: which supports and candidate experts built each retrieved embedding."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..utils.figures import new_figure, save_figure

__all__ = ["plot_retrieval_experts", "retrieval_rows", "retrieval_summary", "support_ids"]


def support_ids(choices: Mapping[str, object]) -> list[list]:
    """The training ids of each retrieved embedding's valid supports, from a retriever's ``choices`` (its
    ``support_index`` / ``support_valid`` and the ``bank_ids`` it read); empty without a support bank."""
    if "support_index" not in choices:
        return []
    bank_ids = choices["bank_ids"]
    return [
        [bank_ids[j] for j, ok in zip(row, good) if ok]
        for row, good in zip(torch.as_tensor(choices["support_index"]).tolist(), choices["support_valid"].tolist())
    ]


def retrieval_rows(
    choices: Mapping[str, object],
    ids: Sequence[object],
    modalities: Sequence[str],
    expert_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per retrieved embedding of one forward, from its ``interpret["retrieval"]`` (the choices of
    :meth:`medmoe.blocks.MoERetriever.forward`).

    Columns: ``id`` (the sample), ``modality`` (the absent one that was filled); with a support bank
    ``support_ids`` (``;``-joined training ids) and ``fallback`` (True where no training sample shared the
    observed modalities, so supports were drawn without that condition); in ``"moe"`` mode ``gate_<expert>`` per
    candidate expert: its gate averaged over the embedding's tokens (0 where the router did not pick it), so a
    row's gates sum to 1.

    Args:
        choices: the retriever's choices of the forward.
        ids: the batch's sample ids (``choices["sample"]`` indexes them).
        modalities: modality names (``choices["modality"]`` indexes them).
        expert_names: names of the candidate experts (``MoERetriever.expert_names``); needed when ``choices``
            has ``expert_index``.

    Raises:
        ValueError: if ``expert_index`` is present without ``expert_names`` or with a different expert count.

    Example:
        >>> rows = retrieval_rows({"sample": torch.tensor([1]), "modality": torch.tensor([0])}, ["a", "b"], ["cc"])
        >>> rows.to_dict("records")
        [{'id': 'b', 'modality': 'cc'}]
    """
    sample = torch.as_tensor(choices["sample"]).tolist()
    modality = torch.as_tensor(choices["modality"]).tolist()
    table = pd.DataFrame({"id": [str(ids[i]) for i in sample], "modality": [modalities[m] for m in modality]})
    if "support_index" in choices:
        table["support_ids"] = [";".join(str(s) for s in row) for row in support_ids(choices)]
        table["fallback"] = torch.as_tensor(choices["fallback"]).bool().tolist()
    if "expert_index" in choices:
        index = torch.as_tensor(choices["expert_index"]).long().cpu()  # P n k (may come from a GPU)
        gate = torch.as_tensor(choices["expert_gate"]).float().cpu()
        if expert_names is None:
            raise ValueError("expert_names are needed to name the candidate experts")
        dense = torch.zeros(index.shape[0], len(expert_names))
        if index.numel() and int(index.max()) >= len(expert_names):
            raise ValueError(f"expert index {int(index.max())} out of range for {len(expert_names)} expert names")
        dense.scatter_add_(1, index.flatten(1), gate.flatten(1))
        dense /= max(index.shape[1], 1)
        for j, name in enumerate(expert_names):
            table[f"gate_{name}"] = dense[:, j].numpy()
    return table


def retrieval_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per filled modality: ``retrieved`` (count), ``fallback_rate`` (with a bank) and the mean gate of each expert.

    Example:
        >>> table = pd.DataFrame({"id": ["a", "b"], "modality": ["cc", "cc"], "gate_cc_0": [1.0, 0.5]})
        >>> float(retrieval_summary(table).loc["cc", "gate_cc_0"])
        0.75
    """
    gates = [c for c in table.columns if c.startswith("gate_")]
    grouped = table.groupby("modality", sort=True)
    summary = pd.DataFrame({"retrieved": grouped.size()})
    if "fallback" in table:
        summary["fallback_rate"] = grouped["fallback"].mean()
    return summary.join(grouped[gates].mean()) if gates else summary


def plot_retrieval_experts(summary: pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """Heat map of the mean gate of each candidate expert (columns) for each filled modality (rows), PNG.

    Experts a modality may not use (another modality's block) show 0. Written atomically.

    Raises:
        ValueError: if ``summary`` has no ``gate_*`` columns or no rows.
    """
    gates = [c for c in summary.columns if c.startswith("gate_")]
    if not gates or summary.empty:
        raise ValueError("the summary has no retrieved embeddings with expert gates to plot")
    values = summary[gates].to_numpy(dtype=np.float64)
    fig, ax = new_figure((2.4 + 0.5 * len(gates), 1.4 + 0.45 * len(summary)))
    image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=max(values.max(), 1e-6), aspect="auto")
    ax.set_xticks(range(len(gates)), labels=[g[len("gate_") :] for g in gates], rotation=45, ha="right")
    counts = summary["retrieved"].astype(int).tolist()
    ax.set_yticks(range(len(summary)), labels=[f"{m} (n={n})" for m, n in zip(summary.index, counts, strict=True)])
    for (i, j), v in np.ndenumerate(values):
        colour = "white" if v < 0.5 * values.max() else "black"
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(image, ax=ax, label="mean gate")
    ax.set_xlabel("candidate expert")
    ax.set_title(title or "MoE-Retriever: experts used per filled modality")
    fig.tight_layout()
    save_figure(fig, path)
    return Path(path)
