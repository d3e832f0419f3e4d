"""Turn a collated multimodal batch into (inputs, targets) for MONAI's engines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.engines import PrepareBatch

__all__ = ["MultimodalPrepareBatch"]


class MultimodalPrepareBatch(PrepareBatch):
    """``prepare_batch`` for :class:`monai.engines.SupervisedTrainer` / ``SupervisedEvaluator``.

    Inputs are a dict of the modality tensors plus ``modality_mask`` (the model gets the whole dict);
    targets a dict of task -> ``(b,)`` long labels (-1 = missing; a task absent from the batch, as in
    inference, is all -1).

    Args:
        modalities: modality keys.
        tasks: task names (or task -> classes).
        mask_key: the presence mask key.

    Raises:
        KeyError: naming a modality or the mask missing from the batch.
    """

    def __init__(
        self, modalities: Sequence[str], tasks: Mapping[str, int] | Sequence[str], mask_key: str = "modality_mask"
    ):
        self.modalities, self.tasks, self.mask_key = list(modalities), list(tasks), mask_key

    def __call__(
        self,
        batchdata: Mapping[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        inputs = {}
        for key in [*self.modalities, self.mask_key]:
            if key not in batchdata:
                raise KeyError(f"batch has no key '{key}' (keys: {sorted(map(str, batchdata))})")
            inputs[key] = torch.as_tensor(batchdata[key]).to(device=device, non_blocking=non_blocking, **kwargs)
        n = inputs[self.mask_key].shape[0]
        targets = {}
        for task in self.tasks:
            label = batchdata.get(task)
            label = torch.full((n,), -1) if label is None else torch.as_tensor(label)
            targets[task] = label.long().view(-1).to(device=device, non_blocking=non_blocking)
        return inputs, targets
