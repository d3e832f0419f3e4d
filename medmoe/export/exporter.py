"""Write a bundle's network as ``models/model.ts`` (TorchScript) and ``models/model.onnx`` (ONNX), and check both.

The network is built from the bundle's standalone ``configs/inference.json`` (so the export sees exactly the
options inference uses), its ``model_options.json`` is checked, the checkpoint loaded, and
:class:`~medmoe.export.wrapper.InferenceWrapper` traced with ``torch.jit.trace`` on batches of the inference
cohort (the demo cohort by default). The same trace is written as ONNX (the TorchScript-based exporter, a dynamic
batch axis). Before anything is written, the traced module is run on every example batch and compared with the
eager model: a graph that does not reproduce the eager outputs (control flow that tracing fixed to the example
batch) is refused with the largest difference, never written.

Each file carries ``medmoe_export.json`` (TorchScript extra file; ONNX metadata property of the same name): the
input order (modalities, then ``modality_mask``), input shapes without the batch axis, the output names, the
checkpoint's model options and ``contains_training_data`` (a retriever's support bank of training embeddings is
part of the graph; export from ``python -m medmoe.engines.sharing``'s file to share a model outside the hospital).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser

from ..engines.checkpoint import load_weights
from ..engines.model_options import check_model_options, model_options
from ..engines.sharing import strip_training_data
from ..utils import atomic_write_bytes
from .files import METADATA_NAME
from .wrapper import InferenceWrapper

__all__ = ["export_bundle", "export_network"]

logger = logging.getLogger(__name__)

_OPSET = 17


def _inputs(batch: Mapping[str, Any], modalities: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """The wrapper's positional inputs from a batch dict, as plain CPU tensors (no MONAI MetaTensor)."""
    tensors = (*(batch[m] for m in modalities), batch["modality_mask"])
    return tuple(torch.as_tensor(t).as_subclass(torch.Tensor).to("cpu") for t in tensors)


def _max_difference(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    return max(float((x.float().softmax(1) - y.float().softmax(1)).abs().max()) for x, y in zip(a, b, strict=True))


def export_network(
    network: torch.nn.Module,
    batches: Iterable[Mapping[str, Any]],
    out_dir: str | Path,
    formats: Sequence[str] = ("ts", "onnx"),
    tolerance: float = 1e-5,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Trace ``network`` (eval mode, CPU) on the first of ``batches`` and write ``model.ts`` / ``model.onnx``.

    Args:
        network: a registered medmoe model with its weights loaded.
        batches: batch dicts as the bundle's ``prepare_batch`` gives them (modality tensors, ``modality_mask``);
            every one is used to check the trace.
        out_dir: folder for ``model.ts`` and ``model.onnx``.
        formats: ``"ts"`` and/or ``"onnx"``.
        tolerance: largest accepted difference of probabilities (softmax over dim 1 of each output) between the
            traced and the eager model on the batches.
        options: model options recorded in the files' metadata (default: :func:`model_options` of ``network``).

    Returns:
        format -> written path.

    Raises:
        ValueError: if ``batches`` is empty, a format is unknown, or the trace (or the ONNX file under
            onnxruntime) differs from the eager model by more than ``tolerance``.
    """
    unknown = set(formats) - {"ts", "onnx"}
    if unknown:
        raise ValueError(f"formats: unknown {sorted(unknown)}; use 'ts' and/or 'onnx'")
    batches = list(batches)
    if not batches:
        raise ValueError("no example batch to trace with: the inference cohort is empty (pass --cohort_csv)")
    network = network.to("cpu").eval()
    modalities = list(network.modalities)
    examples = [_inputs(b, modalities) for b in batches]
    with torch.no_grad():
        eager = [network(dict(zip([*modalities, "modality_mask"], x, strict=True))) for x in examples]
        output_names = list(eager[0])
        wrapper = InferenceWrapper(network, output_names)
        traced = torch.jit.trace(wrapper, examples[0], check_trace=False)
        expected = [tuple(out[name] for name in output_names) for out in eager]
        worst = max(_max_difference(traced(*x), e) for x, e in zip(examples, expected, strict=True))
    if worst > tolerance:
        raise ValueError(
            f"the traced {type(network).__name__} differs from the eager model by {worst:.3g} (> {tolerance}) on the "
            "example batches: a part of its forward depends on the batch (e.g. which modalities are missing) in a way "
            "tracing cannot keep; this configuration cannot be exported"
        )
    metadata = {
        "inputs": [*modalities, "modality_mask"],
        "input_shapes": {name: list(t.shape[1:]) for name, t in zip([*modalities, "modality_mask"], examples[0])},
        "outputs": output_names,
        "outputs_are": "raw task outputs (logits); probabilities = softmax over dim 1",
        "model_options": dict(options or model_options(network)),
        "max_difference_to_eager": worst,
        "contains_training_data": _has_training_data(network),
    }
    files = {}  # every file is built and checked before any is written
    if "ts" in formats:
        files["ts"] = _torchscript_bytes(traced, metadata)
    if "onnx" in formats:
        files["onnx"] = _onnx_bytes(_TensorStateOnly(wrapper), examples, expected, metadata, tolerance)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return {kind: atomic_write_bytes(out_dir / f"model.{kind}", data) for kind, data in files.items()}


def _torchscript_bytes(traced: torch.jit.ScriptModule, metadata: Mapping[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={METADATA_NAME: json.dumps(metadata)})
    return buffer.getvalue()


def _has_training_data(network: torch.nn.Module) -> bool:
    """Whether a support bank of ``network`` holds training samples (their embeddings become graph constants)."""
    state = network.state_dict()
    return any(bool(state[f"{p}filled"].any()) for p in strip_training_data(state)[1])


class _TensorStateOnly(torch.nn.Module):
    """``module`` whose ``state_dict`` lists tensors only: the TorchScript-based ONNX exporter reads the state dict and
    fails on a non-tensor ``_extra_state`` (a support bank's ids), which the exported graph does not use."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.module(*inputs)

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)  # a parent's destination: filter it in place
        for key in [k for k, v in state.items() if not isinstance(v, torch.Tensor)]:
            del state[key]
        return state


def _sort_as_topk(g, x, *args):
    """ONNX for ``aten::sort`` (also ``stable=True``, which the TorchScript-based exporter refuses): ``TopK`` over
    the whole axis, which ONNX defines to put equal values in index order, as a stable sort does."""
    from torch.onnx import symbolic_helper

    *_, dim, descending = args  # sort(self, dim, descending) or sort.stable(self, stable, dim, descending)
    dim = symbolic_helper._get_const(dim, "i", "dim")
    descending = symbolic_helper._get_const(descending, "i", "descending")
    size = g.op("Gather", g.op("Shape", x), g.op("Constant", value_t=torch.tensor([dim])), axis_i=0)
    return g.op("TopK", x, size, axis_i=dim, largest_i=descending, sorted_i=1, outputs=2)


def _bool_where_as_uint8(model):
    """Rewrite ``Where`` nodes on bool tensors (onnxruntime's CPU ``Where`` has no bool kernel) as ``Where`` on
    uint8 between ``Cast`` nodes; the values are unchanged."""
    import onnx
    from onnx import TensorProto, helper

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    nodes = []
    for node in model.graph.node:
        if node.op_type != "Where" or types.get(node.output[0]) != TensorProto.BOOL:
            nodes.append(node)
            continue
        cond, a, b = node.input
        out = node.output[0]
        names = [f"{out}_u8_a", f"{out}_u8_b", f"{out}_u8"]
        nodes += [
            helper.make_node("Cast", [a], [names[0]], to=TensorProto.UINT8),
            helper.make_node("Cast", [b], [names[1]], to=TensorProto.UINT8),
            helper.make_node("Where", [cond, names[0], names[1]], [names[2]]),
            helper.make_node("Cast", [names[2]], [out], to=TensorProto.BOOL),
        ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def _onnx_bytes(
    wrapper: torch.nn.Module,
    examples: list[tuple[torch.Tensor, ...]],
    expected: list[tuple[torch.Tensor, ...]],
    metadata: Mapping[str, Any],
    tolerance: float,
) -> bytes:
    """The ONNX file of ``wrapper`` (TorchScript-based exporter, dynamic batch axis), checked under onnxruntime."""
    import onnx
    import onnxruntime

    names = list(metadata["inputs"])
    buffer = io.BytesIO()
    torch.onnx.register_custom_op_symbolic("aten::sort", _sort_as_topk, _OPSET)
    try:
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                examples[0],
                buffer,
                dynamo=False,
                input_names=names,
                output_names=list(metadata["outputs"]),
                dynamic_axes={n: {0: "batch"} for n in [*names, *metadata["outputs"]]},
                opset_version=_OPSET,
            )
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::sort", _OPSET)
    model = _bool_where_as_uint8(onnx.load_from_string(buffer.getvalue()))
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_NAME, json.dumps(metadata)
    data = model.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    worst = 0.0
    for x, e in zip(examples, expected, strict=True):
        got = session.run(None, {n: t.numpy() for n, t in zip(names, x, strict=True)})
        worst = max(worst, _max_difference([torch.from_numpy(g) for g in got], e))
    if worst > tolerance:
        raise ValueError(
            f"the ONNX model differs from the eager model by {worst:.3g} (> {tolerance}) under onnxruntime"
        )
    return data


def export_bundle(
    bundle_root: str | Path,
    config_file: str | Path | None = None,
    ckpt_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    formats: Sequence[str] = ("ts", "onnx"),
    max_batches: int = 4,
    tolerance: float = 1e-5,
) -> dict[str, Path]:
    """Export a bundle's network as configured by its ``configs/inference.json`` (see module docstring).

    Args:
        bundle_root: the bundle folder (``configs/inference.json`` and, by default, ``models/model.pt``).
        config_file: the inference config (default ``<bundle_root>/configs/inference.json``); set it when
            ``bundle_root`` is a run's output folder, as in ``monai.bundle run --bundle_root``.
        ckpt_path: checkpoint (default ``<bundle_root>/models/model.pt``).
        out_dir: where to write (default the checkpoint's folder).
        overrides: config ids to set, as on a ``monai.bundle run`` command line (``image_size``, ``cohort_csv``...).
        formats: ``"ts"`` and/or ``"onnx"``.
        max_batches: how many batches of the inference cohort trace and check the export.
        tolerance: see :func:`export_network`.

    Returns:
        format -> written path.
    """
    bundle_root = Path(bundle_root)
    config = Path(config_file) if config_file is not None else bundle_root / "configs" / "inference.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: pass a bundle folder as --bundle_root, or --config_file")
    parser = ConfigParser()
    parser.read_config(str(config))
    parser.update({"bundle_root": str(bundle_root), "device": "cpu", "validate#dataset#cache_rate": 0.0})
    if ckpt_path is not None:
        parser.update({"ckpt_path": str(ckpt_path)})
    parser.update(dict(overrides or {}))
    ckpt = Path(parser.get_parsed_content("ckpt_path"))
    check = {k: parser.get_parsed_content(k) for k in ("modalities", "tasks", "segmentation_tasks") if k in parser}
    saved = check_model_options(ckpt, **check)
    network = load_weights(parser.get_parsed_content("network"), ckpt, map_location="cpu")
    prepare = parser.get_parsed_content("prepare_batch")
    batches = []
    for batch in parser.get_parsed_content("validate#dataloader"):
        batches.append(prepare(batch, torch.device("cpu"))[0])
        if len(batches) >= max_batches:
            break
    written = export_network(network, batches, out_dir or ckpt.parent, formats, tolerance, saved or None)
    for kind, path in written.items():
        logger.info(f"wrote {kind}: {path}")
    return written
