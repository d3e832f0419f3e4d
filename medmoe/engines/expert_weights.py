"""Evaluator handler writing I2MoE's interpretation: per-sample expert weights, their distribution, and plots."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine

from ..interpret import expert_weight_summary, plot_expert_weights, plot_sample_weights
from ..nets.contract import require_interpretations
from ..utils import atomic_write_csv
from .collector import EpochCollector

__all__ = ["ExpertWeightsWriter"]

logger = logging.getLogger(__name__)


class ExpertWeightsWriter(EpochCollector):
    """Collect the network's per-sample expert weights during evaluation and write them when it completes.

    The network's output must carry ``interpret["expert_weights"]`` ``(b, E)`` and ``interpret["expert_logits"]``
    ``{expert: {task: (b, classes)}}`` (declared in its ``interpretations``; :class:`medmoe.nets.I2MoE` does;
    papers/i2moe_paper.txt, Sec. 3.5); the experts are named by the network's ``expert_names``.
    Writes into ``output_dir``, atomically:

    - ``expert_weights.csv``: id, (split), ``present_<modality>`` (the output's ``modality_mask``),
      ``weight_<expert>`` per expert and ``<expert>_<task>_prob_<k>`` (each expert's own softmax output) — the
      local interpretation;
    - ``expert_weight_summary.csv``: per expert, mean / std / median / q05 / q95 / top1 of its weight over the
      scored samples (:func:`~medmoe.interpret.expert_weight_summary`) — the global interpretation;
    - ``expert_weights.png``: violin plot per expert; ``sample_weights.png``: stacked weights of the first
      ``max_samples`` scored samples.

    Engine output must not be decollated (``decollate=False``): the handler reads the model output in
    ``engine.state.output["pred"]``.

    Args:
        output_dir: folder for the files.
        network: the model (a DDP wrapper is unwrapped).
        id_key: batch key of the sample ids.
        tasks: task name -> classes, for the per-expert probabilities (default: all of ``expert_logits``).
        split_key, eval_split: when the evaluator runs over several splits, the summary and plots use only the
            samples whose ``split_key`` equals ``eval_split`` (the CSV keeps every sample with its split).
        max_samples: samples in ``sample_weights.png``.

    Raises:
        ValueError: if the network does not declare those interpretations.

    Example::

        >>> writer = ExpertWeightsWriter("eval", network=model, id_key="subject_id")  # doctest: +SKIP
        >>> writer.attach(evaluator)  # doctest: +SKIP
    """

    def __init__(
        self,
        output_dir: str | Path,
        network: torch.nn.Module,
        id_key: str = "id",
        tasks: Mapping[str, int] | None = None,
        split_key: str | None = None,
        eval_split: str = "test",
        max_samples: int = 16,
    ) -> None:
        self.network = require_interpretations(
            network, {"expert_weights", "expert_logits", "modality_mask"}, "ExpertWeightsWriter"
        )
        self.output_dir, self.id_key, self.tasks = Path(output_dir), id_key, dict(tasks) if tasks else None
        self.split_key, self.eval_split, self.max_samples = split_key, eval_split, int(max_samples)

    def _reset(self, _: Engine) -> None:
        self.ids: list[str] = []
        self.splits: list[str] = []
        self.weights: list[np.ndarray] = []
        self.present: list[np.ndarray] = []
        self.probs: dict[str, list[np.ndarray]] = {}

    def _collect(self, engine: Engine) -> None:
        self.ids += [str(i) for i in engine.state.batch[self.id_key]]
        if self.split_key:
            self.splits += [str(v) for v in engine.state.batch[self.split_key]]
        interpret = engine.state.output["pred"].interpret
        self.weights.append(interpret["expert_weights"].detach().float().cpu().numpy())
        self.present.append(interpret["modality_mask"].bool().cpu().numpy())  # which modalities each sample had
        for expert, outputs in interpret["expert_logits"].items():
            for task, logits in outputs.items():
                if self.tasks is None or task in self.tasks:
                    probs = logits.detach().float().softmax(-1).cpu().numpy()
                    self.probs.setdefault(f"{expert}_{task}", []).append(probs)

    def _write(self, _: Engine) -> None:
        names = list(self.network.expert_names)
        weights = np.concatenate(self.weights) if self.weights else np.zeros((0, len(names)))
        table = pd.DataFrame({"id": self.ids})
        if self.split_key:
            table["split"] = self.splits
        if self.present:
            present = np.concatenate(self.present)
            for j, modality in enumerate(self.network.modalities):
                table[f"present_{modality}"] = present[:, j]
        for i, name in enumerate(names):
            table[f"weight_{name}"] = weights[:, i]
        for column, chunks in self.probs.items():
            probs = np.concatenate(chunks)
            for k in range(probs.shape[1]):
                table[f"{column}_prob_{k}"] = probs[:, k]
        atomic_write_csv(self.output_dir / "expert_weights.csv", table, index=False)
        scored = (table["split"] == self.eval_split).to_numpy() if self.split_key else np.ones(len(table), bool)
        if not scored.any():
            logger.warning(f"no samples to summarise expert weights over (split '{self.eval_split}')")
            return
        summary = expert_weight_summary(weights[scored], names)
        atomic_write_csv(self.output_dir / "expert_weight_summary.csv", summary)
        plot_expert_weights(weights[scored], names, self.output_dir / "expert_weights.png")
        ids = table["id"][scored].tolist()
        plot_sample_weights(weights[scored], names, self.output_dir / "sample_weights.png", ids, self.max_samples)
        means = ", ".join(f"{n} {m:.3f}" for n, m in summary["mean"].items())
        logger.info(f"mean expert weights over {int(scored.sum())} samples: {means}")
