"""Per-modality 2D image embedders that output tokens ``(g, b, n, d)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.utils import ensure_tuple_rep
from torch import nn

__all__ = ["GroupedPatchEmbedding", "TimmEmbedding"]


class GroupedPatchEmbedding(nn.Module):
    """ViT patch embedding with separate weights per modality, all modalities in one grouped conv.

    Args:
        num_modalities: modalities ``g`` (each gets its own projection and position embedding).
        in_channels: channels per modality image.
        image_size: ``(H, W)`` (or an int) of every modality image.
        patch_size: patch side (or ``(ph, pw)``); must divide ``image_size``.
        hidden_size: token width ``d``.

    Shapes: images ``(b, g, c, H, W)`` -> tokens ``(g, b, n, d)`` with ``n = H W / (ph pw)``, row-major on
    the patch grid ``grid_size = (H / ph, W / pw)``.

    Raises:
        ValueError: if the patch size does not divide the image size, or on a wrong input shape.

    Example::

        >>> embed = GroupedPatchEmbedding(4, 1, 64, 8, 32)
        >>> embed(torch.randn(2, 4, 1, 64, 64)).shape
        torch.Size([4, 2, 64, 32])
    """

    def __init__(
        self,
        num_modalities: int,
        in_channels: int,
        image_size: int | Sequence[int],
        patch_size: int | Sequence[int],
        hidden_size: int,
    ) -> None:
        super().__init__()
        self.image_size, self.patch_size = ensure_tuple_rep(image_size, 2), ensure_tuple_rep(patch_size, 2)
        if any(s % p for s, p in zip(self.image_size, self.patch_size)):
            raise ValueError(f"patch_size {self.patch_size} must divide image_size {self.image_size}")
        self.num_modalities, self.in_channels, self.hidden_size = num_modalities, in_channels, hidden_size
        self.grid_size = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.num_tokens = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(
            num_modalities * in_channels,
            num_modalities * hidden_size,
            kernel_size=self.patch_size,
            stride=self.patch_size,
            groups=num_modalities,
        )
        self.position = nn.Parameter(torch.randn(num_modalities, 1, self.num_tokens, hidden_size) * 0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        expected = (self.num_modalities, self.in_channels, *self.image_size)
        if images.dim() != 5 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"expected images (batch, {', '.join(map(str, expected))}), got {tuple(images.shape)}")
        b = images.shape[0]
        tokens = self.proj(images.flatten(1, 2))  # b (g d) h w
        tokens = tokens.view(b, self.num_modalities, self.hidden_size, self.num_tokens).permute(1, 0, 3, 2)
        return tokens + self.position


class TimmEmbedding(nn.Module):
    """A timm CNN / ViT backbone per modality (``pretrained=False``) whose last feature map becomes tokens.

    The modalities run one after another (separate backbones); the MoE stages after it are batched.

    Args:
        model_name: a timm model name with ``features_only`` support, e.g. ``"resnet18"``.
        num_modalities, in_channels, image_size, hidden_size: as :class:`GroupedPatchEmbedding`.

    Shapes: images ``(b, g, c, H, W)`` -> tokens ``(g, b, n, d)``, row-major on the last feature map's
    ``grid_size``.
    """

    def __init__(
        self,
        model_name: str,
        num_modalities: int,
        in_channels: int,
        image_size: int | Sequence[int],
        hidden_size: int,
    ) -> None:
        super().__init__()
        import timm

        self.backbones = nn.ModuleList(
            timm.create_model(model_name, pretrained=False, features_only=True, out_indices=(-1,), in_chans=in_channels)
            for _ in range(num_modalities)
        )
        channels = self.backbones[0].feature_info.channels()[-1]
        self.proj = nn.Conv1d(num_modalities * channels, num_modalities * hidden_size, 1, groups=num_modalities)
        probe_net = self.backbones[0].eval()  # eval: the probe must not update BatchNorm statistics
        with torch.no_grad():
            probe = probe_net(torch.zeros(1, in_channels, *ensure_tuple_rep(image_size, 2)))[-1]
        probe_net.train()
        self.grid_size = (int(probe.shape[-2]), int(probe.shape[-1]))
        self.num_tokens = self.grid_size[0] * self.grid_size[1]
        self.num_modalities, self.hidden_size = num_modalities, hidden_size
        self.position = nn.Parameter(torch.randn(num_modalities, 1, self.num_tokens, hidden_size) * 0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        feats = torch.cat([net(images[:, i])[-1].flatten(2) for i, net in enumerate(self.backbones)], dim=1)
        tokens = self.proj(feats).view(b, self.num_modalities, self.hidden_size, self.num_tokens)
        return tokens.permute(1, 0, 3, 2) + self.position
