"""A model file for sharing outside the hospital: the weights, without the training data a checkpoint carries.

``model.pt`` / ``last.pt`` of a configuration with the MoE-Retriever (``missing_modality: retriever``, modes
``moe`` / ``mean`` / ``public_mean``) hold its support bank (:class:`~medmoe.blocks.SupportBank`): token embeddings
of up to ``capacity`` training samples and their exam ids. :func:`write_shared_model` writes a copy whose banks are
empty (zero embeddings, no rows filled, no ids) and a JSON beside it that says which kind the file is::

    python -m medmoe.engines.sharing models/model.pt shared/model.pt   # + shared/model.json

What the recipient's model does with an empty bank: the retriever finds no supporting samples (``fallback`` is
flagged in ``retrieval.csv``), so a missing view is filled from the sample's own observed views and the
retriever's learned null key only (mode ``moe``), or from the own views alone (``public_mean``); ``mean`` fills
zeros. Predictions then differ from the hospital's own model for samples with missing views. Training (or
fine-tuning with ``--init_weights shared/model.pt``) on the recipient's own training split refills the bank.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..utils import atomic_torch_save, atomic_write_text
from .checkpoint_io import read_checkpoint

__all__ = ["SHARED_KIND", "strip_training_data", "write_shared_model"]

logger = logging.getLogger(__name__)

SHARED_KIND = "shared"  # "kind" in the file and its JSON; training checkpoints are plain state dicts
_BANK = ("embeddings", "presence", "filled", "pointer", "stamp", "_extra_state")


def _bank_prefixes(state: Mapping) -> list[str]:
    """Prefixes ``p`` with every SupportBank entry ``p + name`` in ``state``."""
    prefixes = [k[: -len("embeddings")] for k in state if k.endswith("embeddings")]
    return sorted(p for p in prefixes if all(f"{p}{name}" in state for name in _BANK))


def strip_training_data(state: Mapping[str, object]) -> tuple[dict, list[str]]:
    """A copy of a model state dict whose support banks hold no training sample; and the banks' prefixes.

    Shapes are kept, so the copy loads into the same network with ``load_state_dict`` (strict).
    """
    out = dict(state)
    prefixes = _bank_prefixes(state)
    for p in prefixes:
        capacity = out[f"{p}filled"].shape[0]
        out[f"{p}embeddings"] = torch.zeros_like(out[f"{p}embeddings"])
        out[f"{p}presence"] = torch.zeros_like(out[f"{p}presence"])
        out[f"{p}filled"] = torch.zeros_like(out[f"{p}filled"])
        out[f"{p}pointer"] = torch.zeros_like(out[f"{p}pointer"])
        out[f"{p}stamp"] = torch.arange(capacity, dtype=out[f"{p}stamp"].dtype) - capacity
        out[f"{p}_extra_state"] = {"ids": [None] * capacity}
    return out, prefixes


def write_shared_model(source: str | Path, target: str | Path) -> Path:
    """Write ``target`` (the weights of ``source`` without training data) and ``target`` with ``.json``.

    Args:
        source: a ``model.pt`` (state dict) or ``last.pt`` (its ``model`` entry is taken; optimizer state, random
            states and the training position are left out).
        target: the file to write; the JSON beside it says ``"kind": "shared"``, ``"contains_training_data":
            false`` and which banks were emptied.

    Returns:
        ``target`` as a ``Path``.

    Raises:
        ValueError: naming ``source`` if it is not a checkpoint (see :func:`read_checkpoint`).
    """
    source, target = Path(source), Path(target)
    state = read_checkpoint(source)
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping):
        raise ValueError(f"checkpoint {source} holds a {type(state).__name__}, not a state dict")
    stripped, banks = strip_training_data(state)
    atomic_torch_save(target, {"kind": SHARED_KIND, "model": stripped})
    metadata = {
        "file": target.name,
        "kind": SHARED_KIND,
        "contains_training_data": False,
        "support_banks_emptied": [p.rstrip(".") for p in banks],
        "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "note": "weights only: no support-bank embeddings, no training ids, no optimizer or random states",
    }
    atomic_write_text(target.with_suffix(".json"), json.dumps(metadata, indent=2) + "\n")
    logger.info(f"wrote {target}: {len(banks)} support bank(s) emptied")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m medmoe.engines.sharing SOURCE TARGET``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="model.pt or last.pt")
    parser.add_argument("target", help="the file for sharing (a JSON with the same stem is written beside it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_shared_model(args.source, args.target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
