"""Export a trained bundle's network as TorchScript (``models/model.ts``) and ONNX (``models/model.onnx``).

Usage::

    python -m medmoe.apps.export --bundle_root bundles/embed_m4oe [--ckpt_path bundles/embed_m4oe/models/model.pt] \\
        [--config_file CONFIG] [--out_dir DIR] [--formats ts,onnx] [--image_size '[32, 32]' ...]

The network is built from the bundle's ``configs/inference.json`` with the same options as training (any config id
can be set after the known arguments, ``--id value`` as for ``monai.bundle run``; values are parsed as JSON when they
can be), traced on batches of the inference cohort (the demo cohort by default; ``--cohort_csv``), checked against
the eager model and written next to the checkpoint. See docs/deploy.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from medmoe.export.exporter import export_bundle

__all__ = ["main"]


def _overrides(extra: Sequence[str]) -> dict:
    """``--id value`` pairs after the known arguments -> config overrides (JSON values where they parse)."""
    if len(extra) % 2 or not all(k.startswith("--") for k in extra[::2]):
        raise SystemExit(f"config overrides must be --id value pairs, got {' '.join(extra)}")
    out = {}
    for key, value in zip(extra[::2], extra[1::2], strict=True):
        try:
            out[key[2:]] = json.loads(value)
        except json.JSONDecodeError:
            out[key[2:]] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, export, print the written paths; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle_root", required=True, help="bundle folder (configs/inference.json)")
    parser.add_argument("--config_file", default=None, help="default <bundle_root>/configs/inference.json")
    parser.add_argument("--ckpt_path", default=None, help="checkpoint (default <bundle_root>/models/model.pt)")
    parser.add_argument("--out_dir", default=None, help="output folder (default: the checkpoint's folder)")
    parser.add_argument("--formats", default="ts,onnx", help="comma-separated: ts, onnx (default both)")
    parser.add_argument("--max_batches", type=int, default=4, help="inference batches that trace and check the export")
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    written = export_bundle(
        args.bundle_root,
        config_file=args.config_file,
        ckpt_path=args.ckpt_path,
        out_dir=args.out_dir,
        overrides=_overrides(extra),
        formats=[f.strip() for f in args.formats.split(",") if f.strip()],
        max_batches=args.max_batches,
    )
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
