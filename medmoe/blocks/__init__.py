"""Compositions of layers: transformer blocks with injectable MLPs and M4oE's MSoE / MToE."""

from .m4oe_blocks import MSoE, MToE
from .transformer import TransformerBlock

__all__ = ["MSoE", "MToE", "TransformerBlock"]
