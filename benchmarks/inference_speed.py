"""CPU inference speed of embed_m4oe: exams/s of the network, eager vs TorchScript vs ONNX Runtime, fp32 and bf16.

Run: ``python benchmarks/inference_speed.py [--rounds 7] [--full_resolution_rounds 3] [--threads 2]
[--sizes demo full_resolution] [--auroc_bundle_root RUN] [--out benchmarks/results/inference_speed.json]``.

Sizes: ``demo`` is ``configs/inference.json`` as it stands (4 views of 64 x 64, patch 8); ``full_resolution`` is
views of 1024 x 832 with patch 16: ``configs/full_resolution.json`` layered on ``inference.json`` when that file
exists, else the demo network with only ``image_size`` and ``patch_size`` changed (the JSON says which). The network
is untrained (seed 0): its speed does not depend on its weights. An exam is the four views, all present, as random
tensors of the preprocessed shape; preprocessing (DICOM decode, crop, resize) is not timed.

Candidates, side by side in one run (each round runs every candidate once, in a random order; min / median / max of
exams/s over ``--rounds`` rounds, ``--full_resolution_rounds`` at full resolution, after three (two) warm-up calls
each: TorchScript's profiling executor optimises a graph after its first calls with a shape):

* ``eager_fp32``: the medmoe network, ``torch.inference_mode()``;
* ``eager_bf16``: the same under ``torch.autocast("cpu", dtype=torch.bfloat16)``, where the CPU has bf16 (AVX512-BF16
  or AMX, from ``lscpu`` flags);
* ``torchscript``: ``model.ts`` as ``python -m medmoe.apps.export`` writes it (``torch.jit.load``), traced and
  checked against eager at batch 1 (the batch axis is dynamic);
* ``onnxruntime``: ``model.onnx`` under onnxruntime's CPU provider with ``--threads`` intra-op threads.

A candidate that fails at a batch size (onnxruntime cannot allocate a buffer, say) is recorded with its error
instead of a speed.

Batch 1 and 8. ``torch.set_num_threads(--threads)``. The machine may be shared: compare candidates within one run.

``--auroc_bundle_root``: a trained embed_m4oe run (``models/model.pt``; train it on the demo cohort with
``train.json``). The script then scores the demo cohort's test split with ``inference.json``'s preprocessing in
fp32 and under bf16 autocast and reports each task's AUROC (macro over classes) for both.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "embed_m4oe" / "configs"
FULL_RESOLUTION = {"image_size": [1024, 832], "patch_size": 16}


def cpu_has_bf16() -> dict[str, object]:
    """What the CPU offers for bf16: PyTorch's capability string and the lscpu flags that matter."""
    try:
        flags = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        flags = []
    found = sorted({f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile")})
    return {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "flags": found, "bf16": bool(found)}


def _parser(size: str) -> tuple[ConfigParser, str]:
    files = [str(CONFIGS / "inference.json")]
    parser = ConfigParser()
    if size == "full_resolution" and (CONFIGS / "full_resolution.json").is_file():
        files.append(str(CONFIGS / "full_resolution.json"))
        how = "configs/full_resolution.json layered on inference.json"
    elif size == "full_resolution":
        how = f"inference.json with {FULL_RESOLUTION} (configs/full_resolution.json not present)"
    else:
        how = "inference.json"
    parser.read_config(files)
    parser.update({"device": "cpu"})
    if size == "full_resolution" and len(files) == 1:
        parser.update({"image_size": FULL_RESOLUTION["image_size"], "network_def#patch_size": 16})
    return parser, how


def _batch(modalities: list[str], image_size: list[int], batch_size: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(batch_size)
    batch = {m: torch.rand(batch_size, 1, *image_size, generator=generator) for m in modalities}
    batch["modality_mask"] = torch.ones(batch_size, len(modalities), dtype=torch.bool)
    return batch


def _candidates(
    network, modalities, folder: Path, batches, threads: int, bf16: bool, onnx: bool = True
) -> dict[str, Callable]:
    """name -> ``run(batch_size)``; exports model.ts (and model.onnx) into ``folder``, checked against eager there."""
    import onnxruntime

    from medmoe.export.exporter import export_network

    formats = ["ts", "onnx"] if onnx else ["ts"]
    written = export_network(network, [batches[min(batches)]], folder, formats)  # traced, checked at the least batch
    scripted = torch.jit.load(str(written["ts"])).eval()
    names = [*modalities, "modality_mask"]

    def eager(b):
        with torch.inference_mode():
            return network(batches[b])

    def eager_bf16(b):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return network(batches[b])

    def torchscript(b):
        with torch.inference_mode():
            return scripted(*[batches[b][n] for n in names])

    out = {"eager_fp32": eager, "torchscript": torchscript}
    if onnx:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(str(written["onnx"]), options, providers=["CPUExecutionProvider"])
        feeds = {b: {n: batches[b][n].numpy() for n in names} for b in batches}
        out["onnxruntime"] = lambda b: session.run(None, feeds[b])
    if bf16:
        out["eager_bf16"] = eager_bf16
    return out


def measure(
    size: str, rounds: int, threads: int, bf16: bool, batch_sizes=(1, 8), warmup: int = 3, onnx: bool = True
) -> dict:
    """exams/s of every candidate at ``size`` for each batch size (see the module docstring); ``onnx=False`` leaves
    ONNX out (not exported, not timed)."""
    parser, how = _parser(size)
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def").eval()
    modalities, image_size = parser.get_parsed_content("modalities"), parser.get_parsed_content("image_size")
    batches = {b: _batch(modalities, image_size, b) for b in sorted(batch_sizes, reverse=True)}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        candidates = _candidates(network, modalities, Path(folder), batches, threads, bf16, onnx)
        export_seconds = time.perf_counter() - start
        samples = {(name, b): [] for name in candidates for b in batches}
        failed = {}
        for name, b in list(samples):  # warm-up: TorchScript's profiling executor optimises after a few calls per shape
            try:
                for _ in range(warmup):
                    candidates[name](b)
            except Exception as err:  # e.g. onnxruntime cannot allocate a buffer: recorded, not timed
                failed[(name, b)] = f"{type(err).__name__}: {str(err)[:400]}"
                del samples[(name, b)]
        order = list(samples)
        for _ in range(rounds):
            random.shuffle(order)
            for name, b in order:
                start = time.perf_counter()
                candidates[name](b)
                samples[(name, b)].append(b / (time.perf_counter() - start))
    results = {}
    for (name, b), values in samples.items():
        summary = {"min": min(values), "median": statistics.median(values), "max": max(values), "samples": values}
        results.setdefault(f"batch_{b}", {})[name] = summary
    for (name, b), message in failed.items():
        results.setdefault(f"batch_{b}", {})[name] = {"failed": message}
    for table in results.values():
        base = table["eager_fp32"]["median"]
        for entry in table.values():
            if "median" in entry:
                entry["speedup_vs_eager_fp32"] = entry["median"] / base
    return {"config": how, "image_size": image_size, "export_seconds": export_seconds, "exams_per_s": results}


def bf16_auroc(bundle_root: Path) -> dict:
    """AUROC (macro over classes) of each task on the demo test split, fp32 vs bf16 autocast, for a trained run."""
    from monai.data import DataLoader, Dataset
    from monai.metrics import compute_roc_auc
    from monai.transforms import Compose

    from medmoe.data import embed_demo_cohort, load_cohort
    from medmoe.engines import load_weights

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({"device": "cpu", "bundle_root": str(bundle_root)})
    tasks, modalities = parser.get_parsed_content("tasks"), parser.get_parsed_content("modalities")
    network = load_weights(parser.get_parsed_content("network_def"), parser.get_parsed_content("ckpt_path"))
    network.eval()
    cohort = load_cohort(embed_demo_cohort(), modalities, tasks, split_column="split", required_splits=["test"])
    loader = DataLoader(Dataset(cohort.records("test"), Compose(parser.get_parsed_content("preprocessing"))),
                        batch_size=8)  # fmt: skip
    prepare = parser.get_parsed_content("prepare_batch")
    probs = {"fp32": {t: [] for t in tasks}, "bf16": {t: [] for t in tasks}}
    labels = {t: [] for t in tasks}
    for batch in loader:
        inputs, targets = prepare(batch, "cpu")[:2]
        with torch.inference_mode():
            fp32 = network(inputs)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = network(inputs)
        for t in tasks:
            probs["fp32"][t].append(fp32[t].float().softmax(1))
            probs["bf16"][t].append(bf16[t].float().softmax(1))
            labels[t].append(torch.as_tensor(targets[t]).as_subclass(torch.Tensor).reshape(-1))
    out = {"test_exams": len(cohort.records("test")), "auroc": {}, "max_abs_probability_difference": {}}
    for t, classes in tasks.items():
        y = torch.cat(labels[t])
        keep = y >= 0
        onehot = torch.nn.functional.one_hot(y[keep], classes).float()
        both = {k: torch.cat(probs[k][t])[keep] for k in probs}
        out["auroc"][t] = {k: float(compute_roc_auc(p, onehot, average="macro")) for k, p in both.items()}
        out["max_abs_probability_difference"][t] = float((both["fp32"] - both["bf16"]).abs().max())
    out["largest_auroc_difference"] = max(abs(v["fp32"] - v["bf16"]) for v in out["auroc"].values())
    return out


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--rounds", type=int, default=7)
    args.add_argument("--full_resolution_rounds", type=int, default=3, help="rounds at full resolution (slow)")
    args.add_argument("--threads", type=int, default=2)
    args.add_argument("--sizes", nargs="+", default=["demo", "full_resolution"], choices=["demo", "full_resolution"])
    args.add_argument("--no_onnx", nargs="*", default=[], choices=["demo", "full_resolution"],
                      help="sizes at which ONNX is not exported or timed (memory: see docs/deploy.md)")  # fmt: skip
    args.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    args.add_argument("--merge", action="store_true", help="add to the sizes already in --out instead of replacing it")
    args.add_argument("--auroc_bundle_root", default=None, help="trained embed_m4oe run for the bf16 AUROC check")
    args.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "inference_speed.json"))
    args = args.parse_args()
    torch.set_num_threads(args.threads)
    random.seed(0)
    np.random.seed(0)
    cpu = cpu_has_bf16()
    report = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            **cpu,
        },
        "sizes": {},
    }
    out = Path(args.out)
    if args.merge and out.is_file():
        report = {**json.loads(out.read_text()), "machine": report["machine"]}
    for size in args.sizes:
        full = size == "full_resolution"
        rounds, warmup = (args.full_resolution_rounds, 2) if full else (args.rounds, 3)
        key = size if args.batch_sizes == [1, 8] else f"{size}_batch_{'_'.join(map(str, args.batch_sizes))}"
        key += "" if args.threads == 2 else f"_threads_{args.threads}"
        report["sizes"][key] = measure(
            size, rounds, args.threads, cpu["bf16"], args.batch_sizes, warmup=warmup, onnx=size not in args.no_onnx
        )
        report["sizes"][key].update(rounds=rounds, warmup=warmup, threads=args.threads)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")  # after each size: a later one may run out of memory
        for batch, table in report["sizes"][key]["exams_per_s"].items():
            for name, entry in table.items():
                if "failed" in entry:
                    print(f"{size:16s} {batch:8s} {name:12s} failed: {entry['failed'][:160]}")
                    continue
                print(f"{size:16s} {batch:8s} {name:12s} exams/s median {entry['median']:8.2f} "
                      f"[{entry['min']:.2f}, {entry['max']:.2f}]  x{entry['speedup_vs_eager_fp32']:.2f}")  # fmt: skip
    if args.auroc_bundle_root:
        report["bf16_auroc"] = bf16_auroc(Path(args.auroc_bundle_root))
        print(json.dumps(report["bf16_auroc"], indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
