"""OCT volume embedder: a 2D patch embedding per B-scan, pooled over B-scans into one token grid ``(b, n, d)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["OCTEmbedding"]

POOLING = ("attention", "mean")


def _triple(value: Sequence[int]) -> tuple[int, int, int]:
    if len(value) != 3:
        raise ValueError(f"volume_size must be (B-scans, H, W), got {value}")
    return int(value[0]), int(value[1]), int(value[2])


class OCTEmbedding(nn.Module):
    """Tokens of an OCT volume ``(b, c, S, H, W)`` (``S`` B-scans of ``H x W``): per-B-scan patches, pooled over S.

    Every B-scan is cut into ``ph x pw`` patches by one shared 2D patch conv, gets a patch-position and a
    B-scan-position embedding, and the ``S`` tokens at each patch position are pooled into one:
    ``"attention"`` (a learned score per token, softmax over the B-scans, weighted sum) or ``"mean"``.

    Why 2D + pooling rather than a 3D patch embedding: OCT volumes are strongly anisotropic (GAMMA: 256 B-scans
    of 992 x 512, B-scans far apart) and the B-scan is the unit clinicians read (RNFL / cup profile), so a 2D
    kernel per B-scan matches the signal; the parameter count does not grow with ``S``; and the token count
    ``n = H W / (ph pw)`` does not depend on ``S``, so an OCT modality yields the same ``n`` as a fundus image of
    the same ``(H, W)`` and patch size, as M4oE's grouped ``(g, b, n, d)`` layout requires. Attention pooling
    lets each patch position pick the B-scans that matter (e.g. those through the optic disc).

    Args:
        in_channels: channels of the volume (1 for OCT).
        volume_size: ``(S, H, W)``.
        patch_size: patch side (or ``(ph, pw)``) within a B-scan; must divide ``(H, W)``.
        hidden_size: token width ``d``.
        pooling: ``"attention"`` or ``"mean"`` over the B-scans.

    Shapes: ``(b, c, S, H, W) -> (b, n, d)``, ``n = (H / ph) (W / pw)``, row-major on ``grid_size``.

    Raises:
        ValueError: on a patch size that does not divide ``(H, W)``, an unknown pooling, or a wrong input shape.

    Example::

        >>> embed = OCTEmbedding(1, (8, 32, 32), 8, 32)
        >>> embed(torch.randn(2, 1, 8, 32, 32)).shape
        torch.Size([2, 16, 32])
    """

    def __init__(
        self,
        in_channels: int,
        volume_size: Sequence[int],
        patch_size: int | Sequence[int],
        hidden_size: int,
        pooling: str = "attention",
    ) -> None:
        super().__init__()
        if pooling not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}, got '{pooling}'")
        self.volume_size = _triple(volume_size)
        self.patch_size = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(map(int, patch_size))
        s, h, w = self.volume_size
        if h % self.patch_size[0] or w % self.patch_size[1]:
            raise ValueError(f"patch_size {self.patch_size} must divide the B-scan size {(h, w)}")
        self.in_channels, self.hidden_size, self.pooling = in_channels, hidden_size, pooling
        self.grid_size = (h // self.patch_size[0], w // self.patch_size[1])
        self.num_tokens = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=self.patch_size, stride=self.patch_size)
        self.position = nn.Parameter(torch.randn(1, 1, self.num_tokens, hidden_size) * 0.02)
        self.bscan_position = nn.Parameter(torch.randn(1, s, 1, hidden_size) * 0.02)
        if pooling == "attention":
            self.score = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, 1))

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        expected = (self.in_channels, *self.volume_size)
        if volume.dim() != 5 or tuple(volume.shape[1:]) != expected:
            raise ValueError(f"expected a volume (batch, {', '.join(map(str, expected))}), got {tuple(volume.shape)}")
        b, c, s, h, w = volume.shape
        x = self.proj(volume.transpose(1, 2).reshape(b * s, c, h, w))  # (b s) d h' w'
        x = x.flatten(2).transpose(1, 2).reshape(b, s, self.num_tokens, self.hidden_size)  # b s n d
        x = x + self.position + self.bscan_position
        if self.pooling == "mean":
            return x.mean(1)
        weights = self.score(x).softmax(dim=1)  # b s n 1: softmax over the B-scans
        return (weights * x).sum(1)
