"""Reading an exported ``model.ts``: the graph and its ``medmoe_export.json`` metadata (see :mod:`.exporter`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["METADATA_NAME", "load_exported", "read_metadata"]

METADATA_NAME = "medmoe_export.json"  # TorchScript extra file / ONNX metadata property


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``medmoe_export.json`` metadata of an exported ``model.ts``."""
    files = {METADATA_NAME: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return json.loads(files[METADATA_NAME])


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """``torch.jit.load`` of an exported ``model.ts``, with an error that names the file.

    Raises:
        FileNotFoundError: naming the file and the export command.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"exported model not found: {path} (write it with python -m medmoe.apps.export --bundle_root ...)"
        )
    return torch.jit.load(str(path), map_location=device).eval()
