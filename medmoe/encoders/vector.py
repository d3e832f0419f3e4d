"""Vector (tabular / pre-extracted feature) encoder: flatten -> one-hidden-layer MLP -> tokens."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["VectorEncoder"]


class VectorEncoder(nn.Module):
    """One-hidden-layer MLP that turns a flattened per-sample input into ``num_tokens`` tokens.

    I2MoE (papers/i2moe_paper.txt, appendix F) encodes tabular ADNI modalities with a one-hidden-layer
    MLP; the public code splits the output into "patches" (tokens). Any ``(b, ...)`` input is flattened,
    so an image works too (the registry's contract tests feed ``(b, 1, 16, 16)``).

    Args:
        in_features: number of values per sample after flattening.
        hidden_size: token width ``d``.
        num_tokens: tokens per sample ``n``.
        mlp_dim: hidden width (default ``hidden_size``).
        dropout_rate: dropout after the activation.

    Shapes: ``(b, *) -> (b, num_tokens, hidden_size)``.

    Raises:
        ValueError: at call time, if the flattened input does not have ``in_features`` values.

    Example::

        >>> VectorEncoder(10, 32, num_tokens=2)(torch.randn(4, 10)).shape
        torch.Size([4, 2, 32])
    """

    def __init__(
        self, in_features: int, hidden_size: int, num_tokens: int = 1, mlp_dim: int | None = None, dropout_rate=0.0
    ) -> None:
        super().__init__()
        self.in_features, self.hidden_size, self.num_tokens = int(in_features), hidden_size, num_tokens
        mlp_dim = mlp_dim or hidden_size
        self.net = nn.Sequential(
            nn.Linear(self.in_features, mlp_dim),
            nn.GELU(),
            nn.Dropout(dropout_rate),
            nn.Linear(mlp_dim, num_tokens * hidden_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if x.shape[1] != self.in_features:
            raise ValueError(f"expected {self.in_features} values per sample after flattening, got {x.shape[1]}")
        return self.net(x).view(x.shape[0], self.num_tokens, self.hidden_size)
