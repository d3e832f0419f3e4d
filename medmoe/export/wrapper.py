"""The inference-only form of a medmoe model that TorchScript and ONNX export: plain tensors in, task outputs out.

A registered model (:class:`~medmoe.nets.contract.MultimodalModel`) takes the batch dict and returns a
:class:`~medmoe.nets.contract.ModelOutput` with auxiliary losses and interpretation outputs. An exported graph
takes positional tensors only, so :class:`InferenceWrapper` fixes the order:

- inputs: one tensor per modality in the model's ``modalities`` order (each as the bundle's preprocessing gives it,
  batch first; an absent modality is the placeholder ``FillMissingModalitiesd`` writes), then ``modality_mask``
  ``(B, M)`` bool in the same order;
- outputs: one tensor per task in ``output_names`` order (the model's output dict order: classification tasks,
  then segmentation tasks), the raw task outputs of the eager model (classification logits ``(B, classes)``,
  segmentation logits ``(B, classes, H, W)``); probabilities are their softmax over dim 1, as the bundles' writers
  compute them.

Not exported (eager only): auxiliary losses (training only) and every ``interpret`` output (expert weights,
modality contributions, retrieval choices, ...). The trace runs the plain PyTorch Soft MoE (no fused autograd
function, no native kernel: :func:`medmoe.layers.native.fused_applies` is false while tracing).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["InferenceWrapper"]


class InferenceWrapper(nn.Module):
    """``(*modality tensors, modality_mask) -> tuple of task outputs`` around a model in eval mode.

    Args:
        model: a registered medmoe model (its ``modalities`` attribute gives the input order).
        output_names: the task names in output order (the keys of one eager forward's output).

    Example::

        >>> wrapper = InferenceWrapper(model, list(model(batch)))
        >>> logits = wrapper(*[batch[m] for m in model.modalities], batch["modality_mask"])
    """

    def __init__(self, model: nn.Module, output_names: list[str]) -> None:
        super().__init__()
        self.model = model.eval()
        self.modalities = list(model.modalities)
        self.output_names = list(output_names)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.modalities) + 1:
            raise ValueError(
                f"expected {len(self.modalities)} modality tensors ({', '.join(self.modalities)}) and modality_mask, "
                f"got {len(inputs)} tensors"
            )
        batch = dict(zip(self.modalities, inputs[:-1], strict=True))
        batch["modality_mask"] = inputs[-1]
        out = self.model(batch)
        return tuple(out[name] for name in self.output_names)
