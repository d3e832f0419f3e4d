"""M4oE's two MoE stages (M4oE paper, Sec. 3.2): per-modality MSoE and the shared MToE."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import GroupedLayerNorm, SelfAttention, SoftMoE, TaskSoftMoE
from .transformer import TransformerBlock

__all__ = ["MSoE", "MToE"]


class MSoE(nn.Module):
    """Modality-specific Soft MoE: ``depth`` ViT blocks per modality whose MLPs are Soft MoEs.

    Every modality has its own parameters; all modalities run together on a group axis.

    Args:
        num_modalities: modalities ``g``.
        hidden_size, mlp_dim, num_heads, dropout_rate: transformer block sizes.
        depth: blocks per modality.
        num_experts: Soft MoE experts per block; ``num_slots`` slots per expert.

    Shapes: ``(g, b, m, d) -> (g, b, m, d)``.
    """

    def __init__(
        self,
        num_modalities: int,
        hidden_size: int,
        mlp_dim: int,
        num_heads: int,
        depth: int = 1,
        num_experts: int = 8,
        num_slots: int = 1,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        moe = partial(SoftMoE, num_experts=num_experts, num_slots=num_slots)
        self.blocks = nn.Sequential(
            *(
                TransformerBlock(hidden_size, mlp_dim, num_heads, moe, num_modalities, dropout_rate)
                for _ in range(depth)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class MToE(nn.Module):
    """Modality-task Soft MoE block over the concatenated tokens of all modalities.

    A pre-LN block: joint self-attention across all modality tokens, then a
    :class:`~medmoe.layers.TaskSoftMoE` with one slot per (expert, task); task ``k`` gets
    ``x + Y_k`` (Eqs. 1-2).

    Shapes: ``(b, m, d) -> ((b, t, m, d), combine (b, m, e, t))``: the task features and this call's combine
    weights (with gradient).

    ``activation_checkpointing`` (set by :func:`~medmoe.blocks.set_activation_checkpointing`): in training with
    gradients on, keep only the input for backward and recompute the block there, as a
    :class:`~medmoe.blocks.TransformerBlock` does (its attention over all modalities' tokens is the largest
    activation of M4oE at full resolution).
    """

    def __init__(
        self,
        hidden_size: int,
        mlp_dim: int,
        num_heads: int,
        num_experts: int,
        num_tasks: int,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = GroupedLayerNorm(hidden_size)
        self.attn = SelfAttention(hidden_size, num_heads, dropout_rate=dropout_rate)
        self.norm2 = GroupedLayerNorm(hidden_size)
        self.moe = TaskSoftMoE(hidden_size, mlp_dim, num_experts, num_tasks, dropout_rate)
        self.activation_checkpointing = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self._block, x, use_reentrant=False)
        return self._block(x)

    def _block(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x + self.attn(self.norm1(x.unsqueeze(0))).squeeze(0)
        features, combine = self.moe(self.norm2(x.unsqueeze(0)).squeeze(0))
        return x.unsqueeze(1) + features, combine
