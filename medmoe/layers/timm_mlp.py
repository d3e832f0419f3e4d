"""Soft MoE behind timm's ``mlp_layer`` keywords: a drop-in for ``timm.layers.Mlp`` in timm's ViTs."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from .soft_moe import SoftMoE

__all__ = ["SoftMoEMlp"]


def _same_pair(value, name: str):
    """A timm ``(first, second)`` pair or a scalar -> the one value both must share."""
    first, second = value if isinstance(value, (tuple, list)) else (value, value)
    if first != second:
        raise ValueError(f"SoftMoEMlp needs one {name} for both expert layers, got {value!r}")
    return first


def _is_exact_gelu(act_layer: Callable[[], nn.Module] | str | None) -> bool:
    if act_layer is None:
        return True
    if isinstance(act_layer, str):
        return act_layer.lower() == "gelu"
    from timm.layers.activations import GELU as TimmGELU  # exact GELU (F.gelu)

    act = act_layer()
    return (isinstance(act, nn.GELU) and act.approximate == "none") or type(act) is TimmGELU


class SoftMoEMlp(nn.Module):
    """A :class:`~medmoe.layers.SoftMoE` with the constructor of ``timm.layers.Mlp``, for timm's ``mlp_layer=``.

    Puigcerver et al., "From Sparse to Soft Mixtures of Experts", ICLR 2024: the ViT block's MLP becomes a Soft MoE
    whose experts are GELU MLPs of width ``hidden_features``; routing, slots and experts as :class:`SoftMoE`.

    Args:
        in_features: token width ``d`` (timm's ``dim``).
        hidden_features: hidden width of each expert (timm: ``dim * mlp_ratio``); default ``in_features``.
        out_features: must be ``in_features`` (or None): the experts map ``d -> d``.
        act_layer: exact GELU (``nn.GELU``, timm's ``GELU`` or ``"gelu"``), the experts' activation.
        norm_layer: must be None (no norm inside the experts: timm's ``scale_mlp_norm=False``, its default).
        bias: must be True (the experts have biases).
        drop: dropout after the activation and after the output projection (one rate for both).
        num_experts: experts ``e``; ``num_slots``: slots per expert ``s``.
        device, dtype: where and in which dtype the parameters live (timm passes them).

    Shapes: ``(b, n, d) -> (b, n, d)``.

    Raises:
        ValueError: on a timm option the Soft MoE experts cannot honour (another activation, a norm, no bias,
            ``out_features != in_features``, two different dropout rates, ``use_conv``).

    Example::

        >>> import timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2,
        ...                         mlp_layer=SoftMoEMlp.partial(num_experts=4, num_slots=2))
        >>> vit(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 1000])
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[[], nn.Module] | str | None = nn.GELU,
        norm_layer: Callable[..., nn.Module] | None = None,
        bias: bool | tuple[bool, bool] = True,
        drop: float | tuple[float, float] = 0.0,
        use_conv: bool = False,
        num_experts: int = 4,
        num_slots: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if out_features not in (None, in_features):
            raise ValueError(f"SoftMoEMlp needs out_features == in_features ({in_features}), got {out_features}")
        if not _is_exact_gelu(act_layer):
            raise ValueError(f"SoftMoEMlp's experts use exact GELU; act_layer {act_layer!r} is not supported")
        if norm_layer is not None:
            raise ValueError(
                "SoftMoEMlp has no norm inside the experts; use norm_layer=None (timm scale_mlp_norm=False)"
            )
        if not _same_pair(bias, "bias"):
            raise ValueError("SoftMoEMlp's experts always have biases; use bias=True")
        if use_conv:
            raise ValueError("SoftMoEMlp works on tokens (b, n, d); use_conv=True is not supported")
        self.moe = SoftMoE(
            in_features,
            hidden_features or in_features,
            num_experts=num_experts,
            num_slots=num_slots,
            dropout_rate=float(_same_pair(drop, "dropout rate")),
        )
        if device is not None or dtype is not None:
            self.moe.to(device=device, dtype=dtype)

    @classmethod
    def partial(cls, num_experts: int = 4, num_slots: int = 1) -> Callable[..., SoftMoEMlp]:
        """``functools.partial(SoftMoEMlp, num_experts=..., num_slots=...)``: the value for timm's ``mlp_layer``."""
        return partial(cls, num_experts=num_experts, num_slots=num_slots)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"SoftMoEMlp expects tokens (batch, tokens, dim), got {tuple(x.shape)}")
        return self.moe(x)
