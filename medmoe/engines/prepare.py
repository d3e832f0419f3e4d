"""Turn a collated multimodal batch into (inputs, targets) for MONAI's engines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.engines import PrepareBatch

from ..losses.multitask import present_key

__all__ = ["MultimodalPrepareBatch"]


class MultimodalPrepareBatch(PrepareBatch):
    """``prepare_batch`` for :class:`monai.engines.SupervisedTrainer` / ``SupervisedEvaluator``.

    Inputs are a dict of the modality tensors plus ``modality_mask`` (the model gets the whole dict);
    targets a dict of task -> ``(b,)`` long labels (-1 = missing; a task absent from the batch, as in
    inference, is all -1). A segmentation task's target is its ``(b, 1, H, W)`` long label map plus
    ``"<task>_present"`` ``(b,)`` bool, taken from the batch (all True when the batch has the mask but no flag;
    when the batch has no mask, as in inference, a ``(b, 1, 1, 1)`` zero placeholder with all False).

    Args:
        modalities: modality keys.
        tasks: task names (or task -> classes).
        mask_key: the presence mask key.
        segmentation_tasks: names (or the model's mapping) of the segmentation tasks.
        id_key: optional batch key of the sample ids (e.g. ``"exam_id"``). When set and present in the batch, the
            ids are passed to the model under the same key (a list stays a list, a tensor is moved to ``device``),
            e.g. for the MoE-Retriever's support bank (``retriever_kwargs={"id_key": ...}``). Batches without it
            (inference) are fine. None (default): no ids in the inputs.

    Raises:
        KeyError: naming a modality or the mask missing from the batch.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        tasks: Mapping[str, int] | Sequence[str],
        mask_key: str = "modality_mask",
        segmentation_tasks: Mapping[str, Mapping] | Sequence[str] | None = None,
        id_key: str | None = None,
    ):
        self.modalities, self.tasks, self.mask_key = list(modalities), list(tasks), mask_key
        self.id_key = id_key
        self.segmentation_tasks = [t for t in (segmentation_tasks or []) if t not in self.tasks]

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
        if self.id_key is not None and batchdata.get(self.id_key) is not None:
            ids = batchdata[self.id_key]
            if torch.is_tensor(ids):
                ids = ids.to(device=device, non_blocking=non_blocking)
            elif not isinstance(ids, (list, tuple)) or len(ids) != n:
                raise ValueError(f"'{self.id_key}' must hold one id per sample ({n}), got {ids!r}")
            inputs[self.id_key] = list(ids) if isinstance(ids, tuple) else ids
        targets = {}
        for task in self.tasks:
            label = batchdata.get(task)
            label = torch.full((n,), -1) if label is None else torch.as_tensor(label)
            targets[task] = label.long().view(-1).to(device=device, non_blocking=non_blocking)
        for task in self.segmentation_tasks:
            mask, flag = batchdata.get(task), batchdata.get(present_key(task))
            if mask is None:
                mask, flag = torch.zeros(n, 1, 1, 1), torch.zeros(n, dtype=torch.bool)
            mask = torch.as_tensor(mask)
            flag = torch.ones(n, dtype=torch.bool) if flag is None else torch.as_tensor(flag).bool().view(-1)
            targets[task] = mask.round().long().to(device=device, non_blocking=non_blocking)
            targets[present_key(task)] = flag.to(device=device, non_blocking=non_blocking)
        return inputs, targets
