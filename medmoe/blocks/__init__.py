"""Compositions of layers: transformer blocks with injectable MLPs and M4oE's MSoE / MToE, the MoE-Retriever."""

from .m4oe_blocks import MSoE, MToE
from .retriever import MoERetriever, SupportBank
from .transformer import TransformerBlock

__all__ = ["MSoE", "MToE", "MoERetriever", "SupportBank", "TransformerBlock"]
