"""Task heads."""

from .classification import MultiTaskClassificationHead
from .segmentation import SegmentationHead

__all__ = ["MultiTaskClassificationHead", "SegmentationHead"]
