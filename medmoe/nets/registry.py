"""Model registry: configs name models by string (``create_model("m4oe", ...)``)."""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatch

from torch import nn

__all__ = ["register_model", "create_model", "list_models"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a model class or factory under ``name``.

    Raises:
        ValueError: if ``name`` is already registered.
    """

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model '{name}' is already registered")
        _MODELS[name] = factory
        return factory

    return wrap


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model with keyword arguments only.

    Example::

        >>> model = create_model("m4oe", modalities=["cc", "mlo"], tasks={"density": 4})

    Raises:
        ValueError: for an unknown name (listing the registered ones).
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model '{name}'; registered models: {', '.join(list_models()) or 'none'}")
    return _MODELS[name](**kwargs)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _MODELS if fnmatch(n, pattern))
