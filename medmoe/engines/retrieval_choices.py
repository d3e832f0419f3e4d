"""Evaluator handler writing the MoE-Retriever's choices: supports and candidate experts per retrieved embedding."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from ignite.engine import Engine

from ..blocks.retriever import MoERetriever
from ..interpret.retrieval import plot_retrieval_experts, retrieval_rows, retrieval_summary
from ..nets.contract import require_interpretations
from ..utils import atomic_write_csv
from .collector import EpochCollector

__all__ = ["RetrievalWriter", "find_retriever"]

logger = logging.getLogger(__name__)


def find_retriever(network: torch.nn.Module) -> MoERetriever:
    """The one :class:`~medmoe.blocks.MoERetriever` inside ``network`` (a DDP wrapper is unwrapped).

    Raises:
        ValueError: if the network has none (it was built without ``missing_modality="retriever"``) or several.
    """
    network = getattr(network, "module", network)
    found = [m for m in network.modules() if isinstance(m, MoERetriever)]
    if len(found) != 1:
        raise ValueError(
            f"{type(network).__name__} has {len(found)} MoERetriever modules, expected 1 "
            "(build the model with missing_modality='retriever')"
        )
    return found[0]


class RetrievalWriter(EpochCollector):
    """Collect what the MoE-Retriever did for every absent modality during evaluation; write it when it completes.

    Reads ``interpret["retrieval"]`` of the model output in ``engine.state.output["pred"]`` (``decollate=False``).

    Files in ``output_dir`` (written atomically):

    - ``retrieval.csv``: one row per retrieved embedding: ``id``, ``modality`` (the absent one), ``support_ids``
      (the training samples it was retrieved from), ``fallback`` and, in ``"moe"`` mode, ``gate_<expert>`` (each
      candidate expert's gate averaged over the embedding's tokens; experts are ``<modality>_<c>`` for each
      modality's own block and ``shared_<c>``), see :func:`~medmoe.interpret.retrieval_rows`;
    - ``retrieval_summary.csv``: per filled modality, the count, the fallback rate and the mean gate per expert;
    - ``retrieval_experts.png``: the mean gates as a heat map (``"moe"`` mode).

    With no absent modality in the evaluated data the CSV has only its header and no plot is written (logged).

    Args:
        output_dir: folder for the files.
        network: the model; it must contain exactly one ``MoERetriever`` (:func:`find_retriever`) and declare the
            ``retrieval`` interpretation.
        modalities: modality names in the model's order.
        id_key: batch key of the sample ids.

    Raises:
        ValueError: if the network has no retriever, or ``modalities`` does not match it.

    Example::

        >>> writer = RetrievalWriter("eval", network=model, modalities=views, id_key="exam_id")  # doctest: +SKIP
        >>> writer.attach(evaluator)  # doctest: +SKIP
    """

    def __init__(
        self, output_dir: str | Path, network: torch.nn.Module, modalities: Sequence[str], id_key: str = "id"
    ) -> None:
        self.retriever = find_retriever(network)
        self.modalities = list(modalities)
        if len(self.modalities) != self.retriever.num_modalities:
            raise ValueError(
                f"the retriever fills {self.retriever.num_modalities} modalities, got names {self.modalities}"
            )
        require_interpretations(network, {"retrieval"}, "RetrievalWriter")
        self.expert_names = self.retriever.expert_names(self.modalities) if self.retriever.mode == "moe" else None
        self.output_dir, self.id_key = Path(output_dir), id_key

    def _reset(self, _: Engine) -> None:
        self.tables: list[pd.DataFrame] = []

    def _collect(self, engine: Engine) -> None:
        ids = engine.state.batch[self.id_key]
        choices = engine.state.output["pred"].interpret["retrieval"]
        self.tables.append(retrieval_rows(choices, ids, self.modalities, self.expert_names))

    def _write(self, _: Engine) -> None:
        table = pd.concat(self.tables, ignore_index=True) if self.tables else pd.DataFrame(columns=["id", "modality"])
        atomic_write_csv(self.output_dir / "retrieval.csv", table, index=False)
        if table.empty:
            logger.info("no modality was absent in the evaluated samples: nothing was retrieved")
            return
        summary = retrieval_summary(table)
        atomic_write_csv(self.output_dir / "retrieval_summary.csv", summary)
        if self.expert_names is not None:
            plot_retrieval_experts(summary, self.output_dir / "retrieval_experts.png")
        counts = ", ".join(f"{m} {n}" for m, n in summary["retrieved"].items())
        logger.info(f"retrieved embeddings per modality: {counts}")
