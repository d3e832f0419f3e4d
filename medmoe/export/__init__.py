"""Deployment: the options inference checks a checkpoint by, and the inference-only wrapper that is exported.

- :mod:`.options`: ``model_options.json`` beside ``model.pt`` and :func:`check_model_options`;
- :mod:`.wrapper`: :class:`InferenceWrapper`, plain tensors in, task outputs out (what ``model.ts`` / ``model.onnx``
  hold);
- :mod:`.exported`: :class:`ExportedNetwork`, a written ``model.ts`` as a bundle's network (``--use_exported``);
- :mod:`.exporter`: writing ``models/model.ts`` and ``models/model.onnx`` for a bundle (``python -m
  medmoe.apps.export``); :mod:`.files`: reading them back.
"""

from ..engines.model_options import (
    OPTIONS_FILENAME,
    check_model_options,
    check_tabular,
    model_options,
    write_model_options,
)
from .exported import ExportedNetwork
from .files import load_exported, read_metadata
from .wrapper import InferenceWrapper

__all__ = [
    "OPTIONS_FILENAME",
    "ExportedNetwork",
    "InferenceWrapper",
    "check_model_options",
    "check_tabular",
    "load_exported",
    "model_options",
    "read_metadata",
    "write_model_options",
]
