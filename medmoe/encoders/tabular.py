"""Tabular encoder that embeds groups of features as tokens (a "patch embedding" of the feature vector).

The MLP alternative (I2MoE's ADNI encoders, a one-hidden-layer MLP split into tokens) is
:class:`~medmoe.encoders.VectorEncoder`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FeatureTokenizer"]


class FeatureTokenizer(nn.Module):
    """Split a feature vector into ``num_tokens`` contiguous groups and embed each group with its own weights.

    Group ``i`` holds features ``[i p, (i + 1) p)`` with ``p = ceil(in_features / num_tokens)`` (the last group is
    zero-padded); token ``i = x_i W_i + b_i`` with ``W_i`` ``(p, d)``, then a GELU MLP shared by the tokens with a
    residual and a LayerNorm. With ``num_tokens = in_features`` each feature is one token, as the FT-Transformer's
    feature tokenizer (Gorishniy et al., NeurIPS 2021, Sec. 3.3); with ``num_tokens = 1`` it is a linear
    embedding followed by an MLP. All groups run in one einsum (``b n p, n p d -> b n d``).

    Args:
        in_features: values per sample (e.g. the width of a preprocessed tabular block).
        hidden_size: token width ``d``.
        num_tokens: tokens per sample ``n`` (at most ``in_features``).
        mlp_dim: hidden width of the token MLP (default ``2 * hidden_size``).
        dropout_rate: dropout in the token MLP.

    Shapes: ``(b, in_features) -> (b, num_tokens, hidden_size)``.

    Raises:
        ValueError: if ``num_tokens`` is not in ``[1, in_features]``; at call time if the input does not have
            ``in_features`` values per sample.

    Example::

        >>> FeatureTokenizer(7, 16, num_tokens=3)(torch.randn(4, 7)).shape
        torch.Size([4, 3, 16])
    """

    def __init__(
        self,
        in_features: int,
        hidden_size: int,
        num_tokens: int = 1,
        mlp_dim: int | None = None,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if not 1 <= num_tokens <= in_features:
            raise ValueError(f"num_tokens must be in [1, in_features={in_features}], got {num_tokens}")
        self.in_features, self.hidden_size, self.num_tokens = int(in_features), hidden_size, num_tokens
        self.group_size = math.ceil(self.in_features / num_tokens)
        self.weight = nn.Parameter(torch.randn(num_tokens, self.group_size, hidden_size) / math.sqrt(self.group_size))
        self.bias = nn.Parameter(torch.zeros(num_tokens, hidden_size))
        mlp_dim = mlp_dim or 2 * hidden_size
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, mlp_dim), nn.GELU(), nn.Dropout(dropout_rate), nn.Linear(mlp_dim, hidden_size)
        )
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        if x.shape[1] != self.in_features:
            raise ValueError(f"expected {self.in_features} values per sample after flattening, got {x.shape[1]}")
        padded = F.pad(x, (0, self.num_tokens * self.group_size - self.in_features))
        groups = padded.view(x.shape[0], self.num_tokens, self.group_size)
        tokens = torch.einsum("b n p, n p d -> b n d", groups, self.weight) + self.bias
        return self.norm(tokens + self.mlp(tokens))
