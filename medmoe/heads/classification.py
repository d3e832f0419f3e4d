"""Multi-task classification heads: one small linear head per task, any number of classes."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["MultiTaskClassificationHead"]


class MultiTaskClassificationHead(nn.Module):
    """LayerNorm + Linear per task on that task's feature vector.

    Args:
        hidden_size: feature width ``d``.
        tasks: task name -> number of classes (>= 2; binary tasks use 2 logits).
        dropout_rate: dropout before the linear layer.

    Shapes: ``(b, t, d) -> {task: (b, classes)}`` (task order = ``tasks`` order).

    Raises:
        ValueError: if a task has fewer than 2 classes or no tasks are given.
    """

    def __init__(self, hidden_size: int, tasks: Mapping[str, int], dropout_rate: float = 0.0) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("at least one task is required")
        for name, classes in tasks.items():
            if int(classes) < 2:
                raise ValueError(f"task '{name}' needs >= 2 classes (binary tasks use 2), got {classes}")
        self.tasks = dict(tasks)
        self.heads = nn.ModuleDict(
            {
                name: nn.Sequential(nn.LayerNorm(hidden_size), nn.Dropout(dropout_rate), nn.Linear(hidden_size, c))
                for name, c in self.tasks.items()
            }
        )

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(features[:, k]) for k, (name, head) in enumerate(self.heads.items())}
