"""Fusion backbones over per-modality embeddings (the shared encoders and the vanilla "fusion" model built on
them live in :mod:`medmoe.nets.fusion_model`).

One call signature for every backbone: ``backbone(tokens, mask) -> {task: logits}`` with tokens
``(b, M, d)``, ``(b, M, n, d)`` or a list of per-modality ``(b, d)`` / ``(b, n, d)``, and ``mask``
``(b, M)`` bool (True = present). A backbone built with ``num_groups = g`` holds ``g`` independent
copies of its parameters on a leading group axis and also accepts grouped tokens ``(g, b, M, n, d)``,
returning ``(g, b, classes)`` per task: I2MoE stacks its interaction experts on that axis, so all
experts and all perturbed passes run as one batched computation (DESIGN.md, "Performance principles").

Absent modalities: their tokens are zeroed, excluded from attention keys (transformer), left out of
the average (late fusion) or left as zeros in the concatenation (early fusion).

Axis legend: ``g`` group (expert), ``b`` batch, ``m`` modality, ``n`` tokens per modality, ``d`` width,
``k`` concatenated task outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import MLP, GroupedLayerNorm, GroupedLinear

__all__ = [
    "BACKBONES",
    "EarlyFusion",
    "FusionBackbone",
    "LateFusion",
    "StackedBackbone",
    "TransformerFusion",
    "build_backbone",
    "split_tasks",
    "stacked",
]


def split_tasks(logits: torch.Tensor, tasks: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Split concatenated outputs ``(..., k)`` into ``{task: (..., classes)}``."""
    return dict(zip(tasks, logits.split(list(tasks.values()), dim=-1)))


class FusionBackbone(nn.Module):
    """Base class: input checks, masking and the task split; subclasses implement :meth:`fuse`.

    Args:
        num_modalities: ``M``.
        hidden_size: token width ``d``.
        tasks: task name -> number of outputs.
        num_tokens: tokens per modality ``n``.
        num_groups: independent parameter copies on a leading axis (1 = a plain model).
    """

    def __init__(
        self, num_modalities: int, hidden_size: int, tasks: Mapping[str, int], num_tokens: int = 1, num_groups: int = 1
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("at least one task is required")
        self.num_modalities, self.hidden_size, self.num_tokens = num_modalities, hidden_size, num_tokens
        self.num_groups, self.tasks = num_groups, {k: int(v) for k, v in tasks.items()}
        self.num_outputs = sum(self.tasks.values())

    def fuse(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Grouped tokens ``(g, b, m, n, d)`` (absent ones zero) and mask ``(b, m)`` -> logits ``(g, b, k)``."""
        raise NotImplementedError

    def forward(
        self, tokens: torch.Tensor | Sequence[torch.Tensor], mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        if isinstance(tokens, (list, tuple)):
            tokens = torch.stack(list(tokens), dim=1)
        grouped = tokens.dim() == 5
        if tokens.dim() == 3:
            tokens = tokens.unsqueeze(2)
        if tokens.dim() == 4:
            tokens = tokens.unsqueeze(0).expand(self.num_groups, *tokens.shape)
        g, b, m, n, d = tokens.shape
        if (g, m, n, d) != (self.num_groups, self.num_modalities, self.num_tokens, self.hidden_size):
            raise ValueError(
                f"tokens must be (b, {self.num_modalities}, {self.num_tokens}, {self.hidden_size}) or grouped "
                f"({self.num_groups}, b, ...), got {tuple(tokens.shape)}"
            )
        if mask is None:
            mask = torch.ones(b, m, dtype=torch.bool, device=tokens.device)
        mask = mask.to(device=tokens.device, dtype=torch.bool)
        if mask.shape != (b, m):
            raise ValueError(f"mask must be (batch, modalities) = {(b, m)}, got {tuple(mask.shape)}")
        tokens = torch.where(mask[None, :, :, None, None], tokens, 0.0)
        logits = self.fuse(tokens, mask)
        return split_tasks(logits if grouped or self.num_groups > 1 else logits[0], self.tasks)


class _MaskedBlock(nn.Module):
    """Pre-LN block ``x += attn(LN x); x += mlp(LN x)`` with a key mask, one parameter set per group."""

    def __init__(self, hidden_size: int, mlp_dim: int, num_heads: int, num_groups: int, dropout_rate: float) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm1 = GroupedLayerNorm(hidden_size, num_groups)
        self.qkv = GroupedLinear(hidden_size, 3 * hidden_size, num_groups)
        self.proj = GroupedLinear(hidden_size, hidden_size, num_groups)
        self.norm2 = GroupedLayerNorm(hidden_size, num_groups)
        self.mlp = MLP(hidden_size, mlp_dim, num_groups, dropout_rate)
        self.drop = nn.Dropout(dropout_rate)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        g, b, t, d = x.shape  # key_mask: (b, t) bool
        q, k, v = self.qkv(self.norm1(x)).view(g * b, t, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn_mask = key_mask[None, :, None, None, :].expand(g, b, 1, 1, t).reshape(g * b, 1, 1, t)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).transpose(1, 2).reshape(g, b, t, d)
        x = x + self.drop(self.proj(y))  # a real skip connection (the public code has none around attention)
        return x + self.mlp(self.norm2(x))


class TransformerFusion(FusionBackbone):
    """Joint self-attention over all modality tokens ("MulT" of the I2MoE code, with proper residuals).

    Tokens of all modalities (+ a learnable position/modality embedding) are concatenated and pass
    ``num_layers`` pre-LN blocks; the output is the per-modality token mean, concatenated over
    modalities (absent = 0), then a linear head. Absent modalities are never attended to.

    Args:
        num_modalities, hidden_size, tasks, num_tokens, num_groups: see :class:`FusionBackbone`.
        num_layers: transformer blocks.
        num_heads: attention heads.
        mlp_dim: MLP width (default ``2 * hidden_size``).
        dropout_rate: dropout in the blocks.

    Example::

        >>> fusion = TransformerFusion(2, 32, {"dx": 3})
        >>> fusion(torch.randn(4, 2, 32), torch.tensor([[1, 1], [1, 0], [0, 1], [1, 1]]).bool())["dx"].shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        num_modalities: int,
        hidden_size: int,
        tasks: Mapping[str, int],
        num_tokens: int = 1,
        num_groups: int = 1,
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_dim: int | None = None,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__(num_modalities, hidden_size, tasks, num_tokens, num_groups)
        seq = num_modalities * num_tokens
        self.pos_embedding = nn.Parameter(torch.randn(num_groups, 1, seq, hidden_size) * 0.02)
        self.blocks = nn.ModuleList(
            _MaskedBlock(hidden_size, mlp_dim or 2 * hidden_size, num_heads, num_groups, dropout_rate)
            for _ in range(num_layers)
        )
        self.norm = GroupedLayerNorm(hidden_size, num_groups)
        self.head = GroupedLinear(num_modalities * hidden_size, self.num_outputs, num_groups)

    def fuse(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        g, b, m, n, d = tokens.shape
        x = tokens.reshape(g, b, m * n, d) + self.pos_embedding
        key_mask = mask.repeat_interleave(n, dim=1)
        key_mask = key_mask | ~key_mask.any(1, keepdim=True)  # a sample with nothing present: attend to zeros
        for block in self.blocks:
            x = block(x, key_mask)
        pooled = self.norm(x).view(g, b, m, n, d).mean(3) * mask[None, :, :, None]  # g b m d
        return self.head(pooled.flatten(2))


class EarlyFusion(FusionBackbone):
    """Concatenate all tokens of all modalities (absent = 0), then a two-layer GELU MLP to the logits.

    Args:
        num_modalities, hidden_size, tasks, num_tokens, num_groups: see :class:`FusionBackbone`.
        mlp_dim: hidden width (default ``2 * hidden_size``).
        dropout_rate: dropout after the activation.
    """

    def __init__(
        self,
        num_modalities: int,
        hidden_size: int,
        tasks: Mapping[str, int],
        num_tokens: int = 1,
        num_groups: int = 1,
        mlp_dim: int | None = None,
        dropout_rate: float = 0.0,
        **_: object,
    ) -> None:
        super().__init__(num_modalities, hidden_size, tasks, num_tokens, num_groups)
        mlp_dim = mlp_dim or 2 * hidden_size
        self.fc1 = GroupedLinear(num_modalities * num_tokens * hidden_size, mlp_dim, num_groups)
        self.fc2 = GroupedLinear(mlp_dim, self.num_outputs, num_groups)
        self.drop = nn.Dropout(dropout_rate)

    def fuse(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.gelu(self.fc1(tokens.flatten(2)))))


class LateFusion(FusionBackbone):
    """A two-layer MLP head per modality on its flattened tokens; logits averaged over present modalities.

    Args:
        num_modalities, hidden_size, tasks, num_tokens, num_groups: see :class:`FusionBackbone`.
        mlp_dim: hidden width of each head (default ``2 * hidden_size``).
        dropout_rate: dropout after the activation.
    """

    def __init__(
        self,
        num_modalities: int,
        hidden_size: int,
        tasks: Mapping[str, int],
        num_tokens: int = 1,
        num_groups: int = 1,
        mlp_dim: int | None = None,
        dropout_rate: float = 0.0,
        **_: object,
    ) -> None:
        super().__init__(num_modalities, hidden_size, tasks, num_tokens, num_groups)
        mlp_dim = mlp_dim or 2 * hidden_size
        # one head per (group, modality), all in one bmm: group axis of size g * M
        self.fc1 = GroupedLinear(num_tokens * hidden_size, mlp_dim, num_groups * num_modalities)
        self.fc2 = GroupedLinear(mlp_dim, self.num_outputs, num_groups * num_modalities)
        self.drop = nn.Dropout(dropout_rate)

    def fuse(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        g, b, m, n, d = tokens.shape
        x = tokens.reshape(g, b, m, n * d).transpose(1, 2).reshape(g * m, b, n * d)
        per_modality = self.fc2(self.drop(F.gelu(self.fc1(x)))).view(g, m, b, -1)
        weight = mask.T.to(per_modality.dtype)[None, :, :, None]  # 1 m b 1
        return (per_modality * weight).sum(1) / weight.sum(1).clamp_min(1.0)


class StackedBackbone(FusionBackbone):
    """``num_groups`` copies of any single-copy backbone, run as one ``torch.func.vmap`` call over the copies.

    For backbones without a group axis (any module ``(tokens (b, M, n, d), mask (b, M)) -> {task: logits}``):
    the copies' parameters and buffers are stacked on a leading axis (``torch.func.stack_module_state``)
    and ``torch.func.functional_call`` runs them under ``vmap``, so I2MoE still makes one batched call.

    Args:
        factory: zero-argument callable returning one copy of the backbone.
        num_modalities, hidden_size, tasks, num_tokens, num_groups: see :class:`FusionBackbone`.

    Example::

        >>> fusion = StackedBackbone(lambda: LateFusion(2, 8, {"y": 3}), 2, 8, {"y": 3}, num_groups=4)
        >>> fusion(torch.randn(4, 5, 2, 1, 8), torch.ones(5, 2, dtype=torch.bool))["y"].shape
        torch.Size([4, 5, 3])
    """

    def __init__(
        self,
        factory: Callable[[], nn.Module],
        num_modalities: int,
        hidden_size: int,
        tasks: Mapping[str, int],
        num_tokens: int = 1,
        num_groups: int = 1,
    ) -> None:
        super().__init__(num_modalities, hidden_size, tasks, num_tokens, num_groups)
        copies = [factory() for _ in range(num_groups)]
        params, buffers = torch.func.stack_module_state(copies)
        self._param_names, self._buffer_names = list(params), list(buffers)
        self.stacked_params = nn.ParameterList(nn.Parameter(params[k]) for k in self._param_names)
        for i, k in enumerate(self._buffer_names):
            self.register_buffer(f"stacked_buffer_{i}", buffers[k])
        self.__dict__["_base"] = copies[0].to("meta")  # structure only; never registered as a submodule

    def fuse(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        params = dict(zip(self._param_names, self.stacked_params))
        buffers = {k: getattr(self, f"stacked_buffer_{i}") for i, k in enumerate(self._buffer_names)}
        self._base.train(self.training)  # not a registered submodule: train() / eval() do not reach it

        def one_copy(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
            out = torch.func.functional_call(self._base, (p, b), (x, mask))
            return torch.cat(list(out.values()), dim=-1)

        return torch.vmap(one_copy, randomness="different")(params, buffers, tokens)


def stacked(factory: Callable[..., nn.Module]) -> Callable[..., FusionBackbone]:
    """Adapt a single-copy backbone factory to :func:`build_backbone` (any ``num_groups``) via :class:`StackedBackbone`.

    ``factory`` is called with ``num_modalities, hidden_size, tasks, num_tokens`` and the extra keywords.

    Example::

        >>> I2MoE(..., backbone=stacked(MyFusion))  # doctest: +SKIP
    """

    def build(num_modalities, hidden_size, tasks, num_tokens=1, num_groups=1, **kwargs) -> FusionBackbone:
        def one() -> nn.Module:
            return factory(
                num_modalities=num_modalities, hidden_size=hidden_size, tasks=tasks, num_tokens=num_tokens, **kwargs
            )

        return StackedBackbone(one, num_modalities, hidden_size, tasks, num_tokens, num_groups)

    return build


BACKBONES: dict[str, type[FusionBackbone]] = {
    "transformer": TransformerFusion,
    "early": EarlyFusion,
    "late": LateFusion,
}


def build_backbone(
    backbone: str | Callable[..., FusionBackbone],
    num_modalities: int,
    hidden_size: int,
    tasks: Mapping[str, int],
    num_tokens: int = 1,
    num_groups: int = 1,
    **kwargs,
) -> FusionBackbone:
    """Build a backbone by name (``"transformer"``, ``"early"``, ``"late"``) or from a factory.

    A factory is called with the same keywords and must return a module with the
    :class:`FusionBackbone` call signature and ``num_groups`` parameter copies on a leading axis; wrap a
    backbone without a group axis with :func:`stacked` (``torch.func.vmap`` over stacked copies).

    Raises:
        ValueError: for an unknown name.
    """
    if isinstance(backbone, str):
        if backbone not in BACKBONES:
            raise ValueError(f"unknown fusion backbone '{backbone}'; choose from {sorted(BACKBONES)}")
        backbone = BACKBONES[backbone]
    return backbone(
        num_modalities=num_modalities,
        hidden_size=hidden_size,
        tasks=tasks,
        num_tokens=num_tokens,
        num_groups=num_groups,
        **kwargs,
    )
