"""Deployment: the options inference checks a checkpoint by.

- :mod:`.options`: ``model_options.json`` beside ``model.pt`` and :func:`check_model_options`.
"""

from .options import OPTIONS_FILENAME, check_model_options, check_tabular, model_options, write_model_options

__all__ = ["OPTIONS_FILENAME", "check_model_options", "check_tabular", "model_options", "write_model_options"]
