"""Pre-LN transformer (ViT) block whose MLP is injected: a dense MLP or a Soft MoE."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import MLP, GroupedLayerNorm, SelfAttention

__all__ = ["TransformerBlock", "set_activation_checkpointing", "timm_block_key_map"]

TIMM_BLOCK_KEYS = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
"""The parameters of a timm ViT ``Block`` (``.weight`` and ``.bias`` each) that :func:`timm_block_key_map` maps."""


class TransformerBlock(nn.Module):
    """``x += attn(LN x); x += mlp(LN x)`` with the MLP built by ``mlp_layer`` (timm's injection style).

    Args:
        hidden_size: token width ``d``.
        mlp_dim: hidden width of the MLP (of each expert for an MoE layer).
        num_heads: attention heads.
        mlp_layer: a callable ``(hidden_size=, mlp_dim=, num_groups=, dropout_rate=) -> nn.Module``,
            e.g. :class:`~medmoe.layers.MLP` or ``functools.partial(SoftMoE, num_experts=8)``.
        num_groups: independent parameters per group (modality) on a leading group axis.
        dropout_rate: dropout in attention and MLP.
        activation_checkpointing: in training with gradients on, keep only the block's input for backward and run
            its forward again there (``torch.utils.checkpoint``, non-reentrant, random state restored so dropout
            draws the same masks): less memory, about one more forward of compute. Same values and gradients.

    Shapes: ``(b, m, d) -> (b, m, d)`` when ``num_groups == 1``; ``(g, b, m, d) -> (g, b, m, d)``.

    Example::

        >>> from functools import partial
        >>> from medmoe.layers import SoftMoE
        >>> block = TransformerBlock(32, 64, 4, mlp_layer=partial(SoftMoE, num_experts=4))
        >>> block(torch.randn(2, 10, 32)).shape
        torch.Size([2, 10, 32])
    """

    def __init__(
        self,
        hidden_size: int,
        mlp_dim: int,
        num_heads: int,
        mlp_layer: Callable[..., nn.Module] = MLP,
        num_groups: int = 1,
        dropout_rate: float = 0.0,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.num_groups, self.activation_checkpointing = num_groups, activation_checkpointing
        self.norm1 = GroupedLayerNorm(hidden_size, num_groups)
        self.attn = SelfAttention(hidden_size, num_heads, num_groups, dropout_rate)
        self.norm2 = GroupedLayerNorm(hidden_size, num_groups)
        self.mlp = mlp_layer(hidden_size=hidden_size, mlp_dim=mlp_dim, num_groups=num_groups, dropout_rate=dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeeze = x.dim() == 3
        if squeeze:
            x = x.unsqueeze(0)
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            x = checkpoint(self._residuals, x, use_reentrant=False)
        else:
            x = self._residuals(x)
        return x.squeeze(0) if squeeze else x

    def _residuals(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def set_activation_checkpointing(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Turn activation checkpointing on (or off) in every :class:`TransformerBlock` of ``model`` and every other
    module with a boolean ``activation_checkpointing`` switch (e.g. :class:`~medmoe.blocks.MToE`); returns ``model``.

    Raises:
        ValueError: if ``enabled`` and ``model`` has no such block (nothing would change).
    """
    blocks = [m for m in model.modules() if isinstance(getattr(m, "activation_checkpointing", None), bool)]
    if enabled and not blocks:
        raise ValueError(
            f"{type(model).__name__} has no TransformerBlock (or other block with an activation_checkpointing "
            "switch) to checkpoint"
        )
    for block in blocks:
        block.activation_checkpointing = bool(enabled)
    return model


def timm_block_key_map(
    block: nn.Module, prefix: str = "", mlp_name: str = "mlp"
) -> Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """Key map (for :func:`medmoe.encoders.load_pretrained`) from one timm ViT block to ``block``'s layout.

    timm's ``Block`` (``{prefix}norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``; linear
    weights ``(out, in)``) becomes ``block``'s grouped layout: every group (modality) gets a copy; linear weights are
    transposed to ``(g, in, out)``, biases ``(g, 1, out)``. A dense :class:`~medmoe.layers.MLP` takes ``fc1``/``fc2``;
    a Soft MoE (:class:`~medmoe.layers.SoftMoE`, :class:`~medmoe.layers.TaskSoftMoE`) gets them in every expert
    (``experts.w1 (g e, d, h)``, ...; sparse upcycling), its router is not in the file. Source keys outside
    ``prefix`` are dropped; keys under it that are not a timm block parameter stay (stripped of ``prefix``), so the
    loader reports them (e.g. LayerScale ``ls1.gamma``).

    Args:
        block: a :class:`TransformerBlock` or a block with the same ``norm1``, ``attn``, ``norm2`` and an MLP.
        prefix: the timm block's key prefix, e.g. ``"blocks.3."``.
        mlp_name: the attribute of ``block``'s MLP (``"moe"`` for :class:`~medmoe.blocks.MToE`).

    Equal to timm's block: the same qkv layout ``(3, heads, head_dim)``, LayerNorm eps 1e-6, exact GELU, no
    LayerScale; a dense block loaded this way gives timm's outputs (tested).
    """
    g = getattr(block, "num_groups", 1)
    mlp = getattr(block, mlp_name)
    experts = mlp.num_experts if hasattr(mlp, "experts") else None

    def convert(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix) :]
            layer, _, kind = name.rpartition(".")
            if layer not in TIMM_BLOCK_KEYS or kind not in ("weight", "bias"):
                out[name] = value
            elif layer.startswith("norm"):
                out[name] = value.unsqueeze(0).repeat(g, 1)
            else:
                tensor = (value.t() if kind == "weight" else value.unsqueeze(0)).unsqueeze(0)
                if not layer.startswith("mlp."):
                    out[name] = tensor.repeat(g, 1, 1)
                elif experts is None:
                    out[f"{mlp_name}.{name[4:]}"] = tensor.repeat(g, 1, 1)
                else:
                    index = "1" if layer == "mlp.fc1" else "2"
                    out[f"{mlp_name}.experts.{kind[0]}{index}"] = tensor.repeat(g * experts, 1, 1)
        return out

    return convert
