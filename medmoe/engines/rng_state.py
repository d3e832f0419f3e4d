"""Random-number states of a training run, as plain tensors and numbers, for an exact resume from ``last.pt``.

A resumed run repeats the uninterrupted one bit for bit only if every generator is where it was when ``last.pt``
was written: PyTorch's (CPU and every CUDA device: dropout, the shuffling sampler's seed, DataLoader worker seeds),
NumPy's and Python's global ones, an explicit ``generator`` of the DataLoader or of its sampler, and the
``numpy.random.RandomState`` that each MONAI random transform of the training pipeline keeps (``Randomizable.R``;
with ``num_workers > 0`` the workers reseed them from PyTorch's generator, so those are covered too). The states
are stored as tensors and numbers, so ``last.pt`` still loads with ``torch.load(..., weights_only=True)``.

Not covered: other processes (under DDP every rank restores rank 0's states, so a DDP resume is not exact).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["capture_random_states", "restore_random_states"]

_MAX_DEPTH = 8


def _numpy_state(state: tuple) -> dict:
    """A ``RandomState.get_state()`` tuple as tensors and numbers."""
    name, keys, pos, has_gauss, cached = state
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "gauss": [has_gauss, cached],
    }


def _numpy_tuple(state: Mapping) -> tuple:
    has_gauss, cached = state["gauss"]
    return state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], has_gauss, cached


def _owned(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] in ("monai", "medmoe", "transforms")


def _random_transforms(root: Any) -> Iterator[np.random.RandomState]:
    """Every ``RandomState`` reachable from ``root`` through MONAI / medmoe objects, lists and dicts, each once."""
    seen: set[int] = set()

    def walk(obj: Any, depth: int) -> Iterator[np.random.RandomState]:
        if id(obj) in seen or depth > _MAX_DEPTH:
            return
        seen.add(id(obj))
        if isinstance(obj, np.random.RandomState):
            yield obj
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                yield from walk(item, depth + 1)
        elif isinstance(obj, dict):
            for item in obj.values():
                yield from walk(item, depth + 1)
        elif _owned(obj) and hasattr(obj, "__dict__") and not isinstance(obj, torch.nn.Module):
            for name, value in vars(obj).items():
                if name not in ("data", "_cache"):  # the records and the cached items hold no generators
                    yield from walk(value, depth + 1)

    yield from walk(root, 0)


def _generators(loader: Any) -> list[torch.Generator]:
    found = [getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)]
    return [g for g in found if isinstance(g, torch.Generator)]


def capture_random_states(data_loader: Any = None) -> dict:
    """The states of every random generator a training epoch draws from (see the module docstring).

    Args:
        data_loader: the training DataLoader (its generators and its dataset's random transforms), or None.

    Returns:
        A dict of tensors, numbers and strings (``torch.load(..., weights_only=True)`` reads it back).
    """
    version, python_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": _numpy_state(np.random.get_state()),
        "python": {"version": version, "state": torch.tensor(python_state, dtype=torch.int64), "gauss": gauss},
        "loader_generators": [g.get_state() for g in _generators(data_loader)],
        "transforms": [_numpy_state(r.get_state()) for r in _random_transforms(getattr(data_loader, "dataset", None))],
    }
    return state


def restore_random_states(state: Mapping, data_loader: Any = None, where: str = "last.pt") -> None:
    """Put every generator back to ``state`` from :func:`capture_random_states`.

    Raises:
        ValueError: naming ``where`` when the training pipeline has another number of random transforms or
            generators than the run that wrote the state (another config).
    """
    transforms = list(_random_transforms(getattr(data_loader, "dataset", None)))
    generators = _generators(data_loader)
    if len(transforms) != len(state["transforms"]) or len(generators) != len(state["loader_generators"]):
        raise ValueError(
            f"{where}: the random states are of a training pipeline with {len(state['transforms'])} random "
            f"transform(s) and {len(state['loader_generators'])} DataLoader generator(s); this one has "
            f"{len(transforms)} and {len(generators)} (another preprocessing config?)"
        )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(_numpy_tuple(state["numpy"]))
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["state"]), python["gauss"]))
    for generator, saved in zip(generators, state["loader_generators"]):
        generator.set_state(saved)
    for generator, saved in zip(transforms, state["transforms"]):
        generator.set_state(_numpy_tuple(saved))
