"""The model contract: what every registered model's forward returns (DESIGN.md, "Contracts").

A model takes the batch dict and returns a :class:`ModelOutput`: a plain ``dict`` of task name -> prediction
tensor (so MONAI's decollate, post-transforms and metrics see only the tasks), carrying two more fields that
belong to the same forward call:

- ``aux_losses``: auxiliary loss name -> scalar tensor with gradient (interaction, mutual information,
  retriever load balancing, ...). :class:`~medmoe.losses.MultiTaskLoss` reads them from the output it is given.
- ``interpret``: interpretation outputs, keyed by the names in :data:`INTERPRETATIONS`.

Nothing of a forward is kept on the model, so a second forward in the same step (activation checkpointing, a
second view of a batch) cannot change what the first one returned, and no loss or handler needs a reference to
the network. A model declares which ``interpret`` keys its forward fills in ``interpretations``; evaluation
handlers check that declaration when they are built instead of probing the model with ``hasattr``.

Example::

    >>> out = ModelOutput({"dx": torch.zeros(2, 3)}, aux_losses={"interaction": torch.tensor(0.5)})
    >>> list(out), float(out.aux_losses["interaction"]), out.interpret
    (['dx'], 0.5, {})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn

__all__ = [
    "INTERPRETATIONS",
    "ModelOutput",
    "MultimodalModel",
    "declared_interpretations",
    "presence_mask",
    "require_interpretations",
    "zero_absent",
]

#: ``interpret`` keys with a fixed meaning (each model fills the ones it declares in ``interpretations``).
INTERPRETATIONS = {
    "modality_mask": "(b, M) bool: the true presence of each modality in the batch",
    "expert_weights": "(b, E): per-sample expert weights, columns in the model's expert_names order (I2MoE)",
    "expert_logits": "{expert: {task: (b, classes)}}: each expert's own output, with gradient (I2MoE, I2M2)",
    "expert_presence": "{expert: (b,) bool}: the samples each expert took part in (I2M2)",
    "interaction_losses": "{expert: scalar}: unweighted per-expert interaction losses, training passes (I2MoE)",
    "pass_logits": "(E, 1 + M, b, k): every expert's output of the clean and perturbed passes (I2MoE)",
    "modality_expert_task_joint": "(b, M, E, T) fp32, detached: the MToE joint the MI loss uses (M4oE)",
    "modality_task_joint": "(b, M, T) fp32, detached: P(M, T), absent modalities 0 (M4oE)",
    "modality_contributions": "(b, T, M) fp32, detached: P(M | T) (M4oE)",
    "retrieval": "the MoE-Retriever's choices (medmoe.blocks.MoERetriever); only with a retriever fill",
}


class ModelOutput(dict):
    """Task name -> prediction tensor, plus this forward's ``aux_losses`` and ``interpret`` (see module doc).

    The dict holds the task predictions only; the two fields are attributes. ``ModelOutput`` is a
    ``torch.utils._pytree`` node, so DDP and ``torch.compile`` see every tensor in it. One limit: DDP's
    ``find_unused_parameters=True`` searches the graph from the dict's values only, so a parameter that only an
    auxiliary loss uses (the retriever's noise gate) would be taken as unused; keep the default ``False`` (as the
    bundles' ``multi_gpu_train.json`` do), with which every gradient is all-reduced.

    Args:
        predictions: task name -> prediction tensor.
        aux_losses: auxiliary loss name -> scalar tensor (default none).
        interpret: interpretation name -> value (default none), names from :data:`INTERPRETATIONS`.
    """

    def __init__(
        self,
        predictions: Mapping[str, torch.Tensor] = (),
        aux_losses: Mapping[str, torch.Tensor] | None = None,
        interpret: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(predictions)
        self.aux_losses: dict[str, torch.Tensor] = dict(aux_losses or {})
        self.interpret: dict[str, Any] = dict(interpret or {})

    def __repr__(self) -> str:
        return (
            f"ModelOutput({dict.__repr__(self)}, aux_losses={sorted(self.aux_losses)}, "
            f"interpret={sorted(self.interpret)})"
        )


def _flatten(out: ModelOutput) -> tuple[list, None]:
    return [dict(out), out.aux_losses, out.interpret], None


def _unflatten(children, _context) -> ModelOutput:
    predictions, aux_losses, interpret = children
    return ModelOutput(predictions, aux_losses, interpret)


pytree.register_pytree_node(ModelOutput, _flatten, _unflatten)


class MultimodalModel(nn.Module):
    """Base class of every registered model: the documented contract.

    A model

    - takes the batch dict (modality keys, ``modality_mask``, optional ids) and returns a :class:`ModelOutput`
      from :meth:`forward`, whose keys are the model's tasks;
    - puts its auxiliary losses into ``output.aux_losses`` (always the same names for a given configuration and
      mode) and its interpretation into ``output.interpret``: every key it declares in ``interpretations``, plus
      keys of :data:`INTERPRETATIONS` that exist only in some modes (e.g. I2MoE's ``pass_logits`` in training);
    - keeps nothing from a forward on itself (caches that are part of the model, like the retriever's support
      bank, are model state, not forward outputs);
    - names its input keys in ``modalities`` (``modality_mask`` column order) and, if it has experts that the
      interpretation names, lists them in ``expert_names``.

    ``tests/nets/test_contract.py`` checks every registered model against this.

    Attributes:
        modalities: batch keys of the modalities, in model order.
        interpretations: the ``interpret`` keys :meth:`forward` always fills (a subset of :data:`INTERPRETATIONS`).
    """

    modalities: list[str]
    interpretations: frozenset[str] = frozenset()

    def forward(self, batch: Mapping[str, Any]) -> ModelOutput:  # pragma: no cover - abstract
        """Predictions, auxiliary losses and interpretation of one batch."""
        raise NotImplementedError


def declared_interpretations(network: nn.Module | None) -> frozenset[str]:
    """The ``interpret`` keys ``network`` (a DDP wrapper unwrapped) declares; none for a non-contract module."""
    module = getattr(network, "module", network)
    return module.interpretations if isinstance(module, MultimodalModel) else frozenset()


def require_interpretations(network: nn.Module, names: set[str] | frozenset[str], user: str) -> MultimodalModel:
    """``network`` (a DDP wrapper unwrapped) if it is a :class:`MultimodalModel` declaring ``names``.

    Args:
        network: the model given to a handler.
        names: the ``interpret`` keys the handler reads.
        user: the handler's name, for the error message.

    Raises:
        ValueError: naming what the network lacks.
    """
    module = getattr(network, "module", network)
    declared = declared_interpretations(module)
    if not set(names) <= declared:
        have = f"declares {sorted(declared)}" if isinstance(module, MultimodalModel) else "is no MultimodalModel"
        raise ValueError(
            f"{user} needs a model whose forward gives interpret {sorted(names)}; {type(module).__name__} {have}"
        )
    return module


def presence_mask(
    batch: Mapping[str, Any], modalities: list[str], key: str = "modality_mask", read: list[str] | None = None
) -> torch.Tensor:
    """The batch's ``(b, M)`` bool presence mask (``batch[key]``; all present if the batch has none).

    Args:
        batch: the batch dict.
        modalities: the model's modality keys, in ``modality_mask`` column order.
        key: batch key of the mask.
        read: the modality keys the model reads (default all ``modalities``): each must be in the batch.

    Raises:
        KeyError: if the batch lacks a modality key the model reads.
        ValueError: on a mask that is not ``(batch, len(modalities))``.
    """
    read = modalities if read is None else read
    missing = [k for k in read if k not in batch]
    if missing:
        raise KeyError(f"batch has no key(s) {missing}; expected modalities {read}")
    first = batch[read[0]]
    mask = batch.get(key)
    if mask is None:
        mask = torch.ones(first.shape[0], len(modalities), dtype=torch.bool, device=first.device)
    mask = mask.to(device=first.device, dtype=torch.bool)
    if mask.shape != (first.shape[0], len(modalities)):
        raise ValueError(f"'{key}' must be (batch, {len(modalities)}), got {tuple(mask.shape)}")
    return mask


def zero_absent(images: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``images`` with absent samples zeroed (the data layer's NaN placeholder never reaches a network).

    Args:
        images: a modality's batch ``(b, ...)``.
        present: bool, broadcastable against ``images`` (e.g. ``(b, 1, 1, 1)``).

    Raises:
        ValueError: on non-finite values in a present sample.
    """
    if not bool(torch.isfinite(images).logical_or(~present).all()):
        raise ValueError("non-finite values in a modality marked present in the modality_mask")
    return torch.where(present, images, torch.zeros((), dtype=images.dtype, device=images.device))
