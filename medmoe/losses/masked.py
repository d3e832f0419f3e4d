"""Per-task losses that ignore missing labels: masked cross-entropy and masked Dice + CE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn

__all__ = ["masked_cross_entropy", "masked_dice_ce", "present_key"]


def present_key(task: str) -> str:
    """Batch / target key of a segmentation task's per-sample ``(b,)`` bool "mask present" flag."""
    return f"{task}_present"


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """Cross-entropy over the samples whose label is not ``ignore_index``; 0 (with gradient) if none.

    Args:
        logits: ``(b, classes)``.
        labels: ``(b,)`` integer labels, ``ignore_index`` for a missing label.
    """
    labels = labels.to(logits.device).long().view(-1)
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)


def masked_dice_ce(
    logits: torch.Tensor, mask: torch.Tensor, present: torch.Tensor | None = None, loss: nn.Module | None = None
) -> torch.Tensor:
    """Dice + cross-entropy over the samples whose mask is present; 0 (with gradient) if none.

    The loss is computed on the present samples only, so an absent sample's mask content never matters.

    Args:
        logits: ``(b, K, *spatial)`` with ``K >= 2`` classes incl. background (softmax convention).
        mask: ``(b, 1, *spatial)`` or ``(b, *spatial)`` integer label map in ``[0, K)``.
        present: ``(b,)`` bool, ``None`` = all present.
        loss: the Dice-CE module (default ``DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)``:
            Dice over the foreground classes, CE over all).

    Raises:
        ValueError: on a mask whose shape does not match the logits or whose values are outside ``[0, K)``.
    """
    if present is None:
        present = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
    present = present.to(device=logits.device, dtype=torch.bool).view(-1)
    if not bool(present.any()):
        return logits.sum() * 0.0
    mask = mask.to(logits.device)
    if mask.dim() == logits.dim() - 1:
        mask = mask.unsqueeze(1)
    if mask.shape[0] != logits.shape[0] or mask.shape[1] != 1 or mask.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"mask must be (b, 1, {', '.join(map(str, logits.shape[2:]))}) for logits {tuple(logits.shape)}, "
            f"got {tuple(mask.shape)}"
        )
    logits, mask = logits[present], mask[present]
    if bool((mask < 0).any() | (mask >= logits.shape[1]).any()):
        raise ValueError(f"mask values must be class indices in [0, {logits.shape[1]}) for present samples")
    loss = loss or DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)
    return loss(logits.float(), mask.round().long())
