"""Per-modality encoders that output tokens."""

from .patch import GroupedPatchEmbedding, TimmEmbedding

__all__ = ["GroupedPatchEmbedding", "TimmEmbedding"]
