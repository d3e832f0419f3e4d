"""Compositions of layers: transformer blocks with injectable MLPs and M4oE's MSoE / MToE, the MoE-Retriever and
the missing-modality fill built on it."""

from .m4oe_blocks import MSoE, MToE
from .missing_fill import MissingModalityFill
from .retriever import MoERetriever, SupportBank
from .support_bank import exclude_banks_from_ddp_broadcast
from .transformer import TransformerBlock, set_activation_checkpointing

__all__ = [
    "MSoE",
    "MToE",
    "MissingModalityFill",
    "MoERetriever",
    "SupportBank",
    "TransformerBlock",
    "exclude_banks_from_ddp_broadcast",
    "set_activation_checkpointing",
]
