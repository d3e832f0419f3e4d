"""An exported ``model.ts`` as a bundle network: the batch dict in, task outputs out, no medmoe model code.

``inference.json --use_exported True`` builds :class:`ExportedNetwork` instead of the network definition, so the
forward pass is the TorchScript graph written by :mod:`medmoe.export.exporter`. Its outputs are the task
predictions only: no auxiliary losses and no interpretation outputs (expert weights, modality contributions,
retrieval choices stay eager-only), so a bundle disables the writers of those when it runs from the exported file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..engines.model_options import compare_options
from ..nets.contract import ModelOutput, MultimodalModel
from .files import load_exported, read_metadata

__all__ = ["ExportedNetwork"]


class ExportedNetwork(MultimodalModel):
    """``model.ts`` behind the model contract: ``forward(batch) -> ModelOutput`` of the exported task outputs.

    Args:
        path: the exported ``model.ts``.
        modalities: the config's modalities; must be the file's input order.
        device: where the graph runs.
        **options: more config options to check against the file's model options (``tasks``,
            ``segmentation_tasks``).

    Raises:
        FileNotFoundError: naming ``path`` and the export command.
        ValueError: naming each option that differs from the exported model's.
    """

    def __init__(self, path: str | Path, modalities: list[str], device: str | torch.device = "cpu", **options: Any):
        super().__init__()
        self.path = Path(path)
        self.graph = load_exported(self.path, device)
        self.metadata = read_metadata(self.path)
        compare_options(
            self.metadata["model_options"], f"the exported model {self.path}", modalities=modalities, **options
        )
        self.modalities = list(modalities)
        self.output_names = list(self.metadata["outputs"])

    def forward(self, batch: Mapping[str, Any]) -> ModelOutput:
        inputs = [torch.as_tensor(batch[k]).as_subclass(torch.Tensor) for k in [*self.modalities, "modality_mask"]]
        return ModelOutput(dict(zip(self.output_names, self.graph(*inputs), strict=True)))
