"""Task heads."""

from .classification import MultiTaskClassificationHead

__all__ = ["MultiTaskClassificationHead"]
