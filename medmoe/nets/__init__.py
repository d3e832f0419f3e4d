"""Full models and the registry (``create_model`` / ``list_models``)."""

from .m4oe import M4oE
from .registry import create_model, list_models, register_model

__all__ = ["M4oE", "create_model", "list_models", "register_model"]
