"""Full models and the registry (``create_model`` / ``list_models``)."""

from .i2m2 import I2M2
from .m4oe import M4oE
from .registry import create_model, list_models, register_model

__all__ = ["I2M2", "M4oE", "create_model", "list_models", "register_model"]
