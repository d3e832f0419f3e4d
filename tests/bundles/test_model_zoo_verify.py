"""What the MONAI model zoo's CI verify step (``ci/verify_bundle.py`` of Project-MONAI/model-zoo) checks, run on each
bundle, offline.

The model zoo's ``verify(bundle)``, in its order, and what runs here:

1. ``verify_bundle_directory``: ``configs/metadata.json`` and ``LICENSE`` exist; ``models/model.pt`` and
   ``configs/inference.json`` are preferred. Same here, with ``model.pt`` written as in step 5.
2. ``verify_version_changes``: ``version`` and ``changelog`` present, ``version`` a key of ``changelog``. Same (the
   "version not yet published" part needs the zoo's ``model_info.json`` and does not apply).
3. ``verify_metadata_format``: ``monai.bundle.verify_metadata`` against the schema the metadata names. Same, with the
   schema vendored in ``tests/bundles/model_zoo_schema/`` (Apache-2.0, see the README there) instead of a download.
4. ``verify_bundle_properties``: only for bundles with ``supported_apps`` in their metadata (none of ours): skipped
   by the zoo too.
5. fake weights (``_produce_fake_weights``): ``network_def`` of ``configs/inference.json`` alone, its state dict saved
   as ``models/model.pt``. Same, plus what medmoe's inference needs beside it (``model_options.json``, and for
   adni_i2moe the tabular preprocessing that training writes).
6. ``verify_data_shape`` (``monai.bundle.verify_net_in_out``): builds ``network_def`` from the inference config and
   feeds ONE tensor of the metadata's input shape. medmoe networks take a batch dict (one tensor per modality and a
   ``modality_mask``), so the closest equivalent runs here: every input of ``network_data_format`` as a tensor of its
   declared shape and dtype in one batch dict, and every declared output checked for shape and dtype.
7. ``verify_torchscript`` (``monai.bundle.ckpt_export`` then ``torch.jit.load`` of ``models/model.ts``):
   ``ckpt_export`` scripts the network or traces it with one tensor, which medmoe networks cannot take; their export
   is ``python -m medmoe.apps.export`` (a traced tensors-in wrapper). Here: that export writes ``models/model.ts``,
   ``torch.jit.load`` loads it, and it runs on the metadata's input shapes (positional tensors in its recorded input
   order) and returns the metadata's output shapes, equal to the eager network on the same inputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from bundle_runner import REPO
from monai.bundle import ConfigParser, verify_metadata

from medmoe.engines.model_options import write_model_options
from medmoe.export import read_metadata
from medmoe.export.exporter import export_bundle

SCHEMA = Path(__file__).parent / "model_zoo_schema" / "meta_schema_20240725.json"
NAMES = sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())
BATCH = 2


def _parser(root: Path, config: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / config))
    parser.update({"bundle_root": str(root), "device": "cpu"})
    return parser


def _fake_weights(root: Path) -> Path:
    """The zoo's ``_produce_fake_weights`` (network_def of inference.json), plus medmoe's files beside model.pt."""
    models = root / "models"
    models.mkdir()
    if (root / "configs" / "train.json").is_file() and "tabular_state" in _parser(root, "inference.json"):
        _parser(root, "train.json").get_parsed_content("tabular").to_json(models / "tabular_preprocessing.json")
    torch.manual_seed(0)
    network = _parser(root, "inference.json").get_parsed_content("network_def")
    torch.save(network.state_dict(), models / "model.pt")
    write_model_options(models / "model.pt", network)
    return models / "model.pt"


def _inputs(data_format: dict) -> dict[str, torch.Tensor]:
    """One tensor per declared input: (BATCH, channels, *spatial_shape), or (BATCH, channels) for vectors/masks."""
    generator = torch.Generator().manual_seed(0)
    batch = {}
    for key, spec in data_format["inputs"].items():
        shape = [BATCH, spec["num_channels"], *spec["spatial_shape"]]
        if spec["dtype"] == "bool":
            batch[key] = torch.ones(shape, dtype=torch.bool)
        else:
            low, high = spec["value_range"] if len(spec["value_range"]) == 2 else (0.0, 1.0)
            batch[key] = low + (high - low) * torch.rand(shape, generator=generator)
    return batch


def _check_outputs(outputs: dict[str, torch.Tensor], data_format: dict) -> None:
    for key, spec in data_format["outputs"].items():
        assert tuple(outputs[key].shape) == (BATCH, spec["num_channels"], *spec["spatial_shape"]), key
        assert str(outputs[key].dtype) == f"torch.{spec['dtype']}", key
        assert torch.isfinite(outputs[key]).all(), key


@pytest.mark.parametrize("name", NAMES)
def test_model_zoo_verify(name: str, tmp_path: Path) -> None:
    root = tmp_path / name
    shutil.copytree(REPO / "bundles" / name, root, ignore=shutil.ignore_patterns("models", "eval", "inference", "runs"))
    ckpt = _fake_weights(root)

    # 1. directory: necessary and preferred files
    for file in ("configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.json"):
        assert (root / file).is_file(), file
    # 2. version and changelog
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    # 3. metadata against the schema it names (vendored: the zoo's CI copies it to eval/schema.json)
    assert meta["schema"].rsplit("/", 1)[-1] == SCHEMA.name
    (root / "eval").mkdir()
    shutil.copy(SCHEMA, root / "eval" / "schema.json")
    verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(root / "eval" / "schema.json"))

    # 6. data shape: network_def of the standalone inference config on the declared inputs
    data_format = meta["network_data_format"]
    network = _parser(root, "inference.json").get_parsed_content("network_def").eval()
    network.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    batch = _inputs(data_format)
    with torch.no_grad():
        eager = network(batch)
    _check_outputs(eager, data_format)

    # 7. the exported TorchScript: written by medmoe's export, loaded with torch.jit.load, run on the declared shapes
    written = export_bundle(root, formats=["ts"], max_batches=1)
    assert written["ts"] == root / "models" / "model.ts"
    exported = torch.jit.load(str(written["ts"]))
    order = read_metadata(written["ts"])
    assert sorted(order["inputs"]) == sorted(data_format["inputs"]) and set(data_format["outputs"]) <= set(
        order["outputs"]
    )
    with torch.no_grad():
        outputs = dict(zip(order["outputs"], exported(*[batch[k] for k in order["inputs"]]), strict=True))
    _check_outputs(outputs, data_format)
    for key in data_format["outputs"]:
        assert (outputs[key].softmax(1) - eager[key].softmax(1)).abs().max() <= 1e-4, key


def test_schema_rejects_metadata_without_a_required_key(tmp_path: Path) -> None:
    meta = json.loads((REPO / "bundles" / NAMES[0] / "configs" / "metadata.json").read_text())
    del meta["authors"]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="'authors' is a required property"):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(SCHEMA))
