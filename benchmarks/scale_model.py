"""Model cost at real size (issue 23, "Model"): M4oE at embed_m4oe's full-resolution config vs the dense ViT.

Candidates, side by side in one run, each configuration in a fresh subprocess:

* ``m4oe``: ``bundles/embed_m4oe/configs/train.json`` + ``full_resolution.json``'s ``network_def`` (4 views of
  1024 x 832, patch 16, width 384, 6 heads, MLP 1536, 4 MSoE blocks x 8 experts per view, MToE 16 experts, 1 fusion
  block x 8 experts, the learned fill), random weights (``pretrained_weights`` off: timing does not depend on them);
* ``dense_vit``: ``medmoe.nets.DenseViT`` of the same width, heads, MLP width, patch size and views (per-view patch
  embedding, 3,328 tokens per view), depth ``msoe_depth + fusion_depth`` = 5 timm ViT blocks with joint attention
  over all 13,312 tokens and a class token, the learned fill;

each with and without activation checkpointing, at the full size and at a reduced size (``--reduced``, default
512 x 416: 832 tokens per view), batch ``--batch`` (1).

CPU (always): one step = forward, the loss (cross-entropy per task on fixed random labels, minus 0.05 x the MI term
for M4oE) and backward, parameter gradients set to None before every step as ``optimizer.zero_grad()`` does; no
optimizer step (AdamW's two moments would add 8 bytes per parameter: 1.6 GB for M4oE, 0.08 GB for the dense ViT).
One warm-up step (which also counts the FLOPs), then ``--repeats`` timed steps: min / median / max seconds.
Memory: the child process's peak resident set size (``getrusage`` ``ru_maxrss``, all of PyTorch's CPU allocations
included; ``tracemalloc`` would not see them) and its resident size after building the model, so ``step peak above
the model`` is what the step itself adds (activations, gradients, workspace), and ``activations estimate`` that minus
the fp32 gradients (4 bytes a parameter: M4oE's 0.8 GB of expert gradients dominate at batch 1, and checkpointing
cannot reduce them).

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward + backward without checkpointing (the model's
FLOPs; checkpointing's recompute is not counted, as MFU conventions do).

GPU (when CUDA is present): the same step under bf16 autocast, ``--gpu-batch`` exams, CUDA-synchronised timing;
exams/s and images/s (4 views an exam), ``torch.cuda.max_memory_allocated``, and MFU = model FLOPs per step /
step time / the GPU's dense bf16 peak (:data:`BF16_PEAK_FLOPS`, by device name).

Memory at the training batch (``--memory-batch``, default 8: ``full_resolution.json``'s ``batch_size``): at batch
1 M4oE's 0.77 GB of fp32 gradients (201 M parameters, 8 experts a block and view) dominate the step and checkpointing
cannot touch them, so the checkpointing target is read where a training run sits: M4oE (``--memory-models``) at the
full size and the config's batch, with and without checkpointing, one step each (no timing). These children run
with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_=65536``): by default glibc raises the threshold after
every large free, so freed activation blocks stay in the heap and the peak RSS counts memory no tensor holds; fixed,
every block above 64 kB is returned when freed and the peak RSS follows the live tensors, as CUDA's
``max_memory_allocated`` does. (The timed rows keep glibc's default: users train under it.)

Threads: one by default (``--threads``). This machine's 2 cores are shared with other jobs; with 2 threads and a load
average of 7-10, OpenMP's barriers wait on descheduled threads: M4oE's step (many small kernels) took 15 s at the
reduced size, against 1.4 s on one thread of the quiet machine, while the dense ViT's few large matmuls suffered
less. A 2-thread ratio on a loaded machine measures the load, not the models. Each row records the load average.

Run: ``python benchmarks/scale_model.py [--repeats 2] [--reduced-repeats 5] [--threads 1] [--sizes full reduced]
[--memory-batch 8] [--memory-models m4oe] [--out benchmarks/results/scale_model.json]``. At full size a step takes
about 15-50 s on one thread at batch 1; the batch-8 memory rows need about 14 GB of RAM and 2-3 minutes each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "embed_m4oe" / "configs"
SIZES = {"full": (1024, 832), "reduced": (512, 416)}
MODELS = ("m4oe", "dense_vit")
#: glibc's mmap threshold for the memory rows (see the module doc): blocks above it are returned to the OS when freed.
FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "65536"}

#: Dense (no sparsity) bf16 tensor-core peak in FLOP/s, by a substring of ``torch.cuda.get_device_name()``; the first
#: match wins (NVIDIA data sheets: H100 SXM / H200 989.4 TFLOP/s, H100 PCIe 756, A100 312).
BF16_PEAK_FLOPS = (("H200", 989.4e12), ("H100 PCIe", 756e12), ("H100", 989.4e12), ("A100", 312e12))


def bf16_peak(device_name: str) -> float | None:
    """The dense bf16 peak FLOP/s of a GPU by name (:data:`BF16_PEAK_FLOPS`), None if it is not in the table."""
    return next((peak for key, peak in BF16_PEAK_FLOPS if key in device_name), None)


def network_kwargs(size: tuple[int, int]) -> dict:
    """The M4oE ``network_def`` of train.json + full_resolution.json at ``size`` (no weights file), as kwargs."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "full_resolution.json")])
    parser["image_size"], parser["pretrained_weights"], parser["device"] = list(size), None, "cpu"
    net = {k: parser.get_parsed_content(f"network_def#{k}") for k in parser.get("network_def") if k != "_target_"}
    net["retriever_kwargs"] = None
    return net


def build(model: str, size: tuple[int, int], checkpointing: bool) -> torch.nn.Module:
    """``m4oe`` or ``dense_vit`` at the full-resolution config's width and depth (see the module doc)."""
    from medmoe.nets import create_model

    net = network_kwargs(size)
    net["activation_checkpointing"] = checkpointing
    if model == "m4oe":
        return create_model(**net)
    shared = ("modalities", "tasks", "in_channels", "image_size", "patch_size", "hidden_size", "mlp_dim", "num_heads")
    return create_model(
        "dense_vit",
        **{k: net[k] for k in shared},
        depth=net["msoe_depth"] + net["fusion_depth"],
        dropout_rate=net["dropout_rate"],
        missing_modality=net["missing_modality"],
        activation_checkpointing=checkpointing,
    )


def make_batch(model: torch.nn.Module, batch: int, size: tuple[int, int], device: str = "cpu") -> tuple[dict, dict]:
    """Random views (all present) and labels for ``model``'s tasks, seeded."""
    g = torch.Generator().manual_seed(0)
    inputs = {k: torch.rand(batch, 1, *size, generator=g).to(device) for k in model.modalities}
    inputs["modality_mask"] = torch.ones(batch, len(model.modalities), dtype=torch.bool, device=device)
    labels = {t: torch.randint(0, c, (batch,), generator=g).to(device) for t, c in model.tasks.items()}
    return inputs, labels


def step(model: torch.nn.Module, inputs: dict, labels: dict) -> None:
    """Forward, loss and backward; gradients set to None first (as ``optimizer.zero_grad()``)."""
    for p in model.parameters():
        p.grad = None
    out = model(inputs)
    loss = sum(F.cross_entropy(out[t].float(), y) for t, y in labels.items())
    if "mutual_information" in out.aux_losses:
        loss = loss - 0.05 * out.aux_losses["mutual_information"]
    loss.backward()


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward_flops(grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)


def step_flops(model: torch.nn.Module, inputs: dict, labels: dict) -> int:
    """FLOPs of one forward + backward (``FlopCounterMode``: matmuls, convolutions, attention).

    PyTorch's counter has formulas for the CUDA attention kernels only; the CPU flash-attention kernels that
    ``scaled_dot_product_attention`` runs here are counted with the same formulas (forward 2 matmuls, backward 5:
    the scores recomputed, dv, dp, dq, dk), so CPU and GPU counts agree.
    """
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    cpu_attention = {
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward_flops,
    }
    counter = FlopCounterMode(display=False, custom_mapping=cpu_attention)
    with counter:
        step(model, inputs, labels)
    return int(counter.get_total_flops())


def saved_for_backward_mb(model: torch.nn.Module, inputs: dict) -> float:
    """MB of the tensors autograd keeps for backward in one training forward (parameters excluded, each storage once).

    Seen through ``torch.autograd.graph.saved_tensors_hooks``; inside a checkpointed block the checkpoint's own hooks
    take over, so what it keeps is its block's input only (held by the checkpoint, not counted here: one token
    tensor per block). The allocator-independent measure of what checkpointing removes.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(inputs)
    return sum(seen.values()) / 2**20


def current_rss_mb() -> float:
    """Resident set size of this process now (Linux ``/proc/self/statm``), MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_cpu(model_name: str, size_name: str, checkpointing: bool, batch: int, repeats: int, count: bool) -> dict:
    """One configuration on the CPU (in a fresh process): step times, peak RSS, FLOPs."""
    size = SIZES[size_name]
    torch.manual_seed(0)
    model = build(model_name, size, checkpointing).train()
    inputs, labels = make_batch(model, batch, size)
    built = current_rss_mb()
    start = time.perf_counter()
    flops = None
    if count:  # the warm-up step, counted or not
        flops = step_flops(model, inputs, labels)
    else:
        step(model, inputs, labels)
    warmup = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(model, inputs, labels)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    saved = saved_for_backward_mb(model, inputs)  # after the peak was read
    gradients = 4 * sum(p.numel() for p in model.parameters()) / 2**20  # fp32, all held at the peak
    return {
        "model": model_name,
        "size": size_name,
        "image_size": list(size),
        "activation_checkpointing": checkpointing,
        "batch": batch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokens_per_view": int(model.embedder.num_tokens),
        "warmup_s": warmup,
        "step_s": {"min": min(times), "median": statistics.median(times), "max": max(times), "all": times}
        if times
        else None,
        "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
        "rss_after_build_mb": built,
        "peak_rss_mb": peak,
        "step_peak_above_model_mb": peak - built,
        "gradients_mb": gradients,
        "activations_estimate_mb": peak - built - gradients,
        "saved_for_backward_mb": saved,
        "flops_per_step": flops,
        "load_average": os.getloadavg(),  # a shared machine: other processes' load slows every step
    }


def run_gpu(model_name: str, size_name: str, checkpointing: bool, batch: int, repeats: int) -> dict:
    """One configuration on the GPU under bf16 autocast: exams/s, images/s, peak memory, MFU."""
    size = SIZES[size_name]
    torch.manual_seed(0)
    model = build(model_name, size, checkpointing).cuda().train()
    inputs, labels = make_batch(model, batch, size, "cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        flops = step_flops(model, inputs, labels) if not checkpointing else None
        step(model, inputs, labels)  # warm-up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(repeats):
            step(model, inputs, labels)
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    name = torch.cuda.get_device_name()
    peak = bf16_peak(name)
    return {
        "model": model_name,
        "size": size_name,
        "activation_checkpointing": checkpointing,
        "batch": batch,
        "device": name,
        "step_s": seconds,
        "exams_per_s": batch / seconds,
        "images_per_s": batch * len(model.modalities) / seconds,
        "max_memory_allocated_gb": torch.cuda.max_memory_allocated() / 2**30,
        "flops_per_step": flops,
        "bf16_peak_flops": peak,
        "mfu": flops / seconds / peak if flops and peak else None,
    }


def child(args: argparse.Namespace) -> None:
    """Run one configuration (``--child model,size,ckpt,device``) and print its JSON on the last line."""
    model, size, ckpt, device = args.child.split(",")
    torch.set_num_threads(args.threads)
    if device == "cuda":
        result = run_gpu(model, size, ckpt == "1", args.gpu_batch, args.gpu_repeats)
    elif device == "memory":  # one untimed step at the training batch (the module doc)
        result = run_cpu(model, size, ckpt == "1", args.memory_batch, 0, count=False)
    else:
        repeats = args.repeats if size == "full" else args.reduced_repeats
        result = run_cpu(model, size, ckpt == "1", args.batch, repeats, count=ckpt == "0")
    print(json.dumps(result))


def spawn(spec: str, args: argparse.Namespace) -> dict:
    """Run ``spec`` in a fresh Python process (its own peak RSS); its result JSON."""
    cmd = [sys.executable, __file__, "--child", spec, "--threads", str(args.threads), "--batch", str(args.batch)]
    cmd += ["--repeats", str(args.repeats), "--reduced-repeats", str(args.reduced_repeats)]
    cmd += ["--gpu-batch", str(args.gpu_batch), "--gpu-repeats", str(args.gpu_repeats)]
    cmd += ["--memory-batch", str(args.memory_batch)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    if spec.endswith(",memory"):
        env.update(FIXED_MMAP_THRESHOLD)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratios(rows: list[dict], key) -> dict:
    """Per size: M4oE / dense step time, and checkpointing / none peak memory per model (CPU rows)."""
    out = {}
    for size in {r["size"] for r in rows}:
        at = {(r["model"], r["activation_checkpointing"]): r for r in rows if r["size"] == size}
        entry = {}
        for ckpt in (False, True):
            if ("m4oe", ckpt) in at and ("dense_vit", ckpt) in at:
                entry[f"m4oe_over_dense_step{'_ckpt' if ckpt else ''}"] = key(at["m4oe", ckpt]) / key(
                    at["dense_vit", ckpt]
                )
        for model in MODELS:
            if (model, False) in at and (model, True) in at:
                on, off = at[model, True], at[model, False]
                entry[f"{model}_ckpt_over_none_peak_rss"] = on["peak_rss_mb"] / off["peak_rss_mb"]
                entry[f"{model}_ckpt_over_none_step_peak"] = (
                    on["step_peak_above_model_mb"] / off["step_peak_above_model_mb"]
                )
                if "saved_for_backward_mb" in on and "saved_for_backward_mb" in off:
                    entry[f"{model}_ckpt_over_none_saved"] = on["saved_for_backward_mb"] / off["saved_for_backward_mb"]
                entry[f"{model}_ckpt_over_none_activations"] = (
                    on["activations_estimate_mb"] / off["activations_estimate_mb"]
                )
        out[size] = entry
    return out


def memory_ratios(rows: list[dict]) -> dict:
    """Per model of the memory rows: checkpointing / none of the peak RSS, the step peak and the saved tensors."""
    out = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        at = {r["activation_checkpointing"]: r for r in rows if r["model"] == model}
        if True in at and False in at:
            on, off = at[True], at[False]
            out[model] = {
                "peak_rss": on["peak_rss_mb"] / off["peak_rss_mb"],
                "step_peak": on["step_peak_above_model_mb"] / off["step_peak_above_model_mb"],
                "saved_for_backward": on["saved_for_backward_mb"] / off["saved_for_backward_mb"],
            }
    return out


def table(rows: list[dict]) -> str:
    """The CPU rows as a text table."""
    lines = [
        f"{'model':10s} {'size':8s} {'batch':>5s} {'ckpt':5s} {'params':>8s} {'step s min/med/max':>22s} "
        f"{'peak RSS MB':>12s} {'step peak MB':>13s} {'GFLOP':>8s}"
    ]
    for r in rows:
        s = r["step_s"]
        steps = f"{s['min']:6.2f} / {s['median']:6.2f} / {s['max']:6.2f}" if s else f"{'(memory only)':>22s}"
        flops = f"{r['flops_per_step'] / 1e9:8.0f}" if r["flops_per_step"] else f"{'-':>8s}"
        lines.append(
            f"{r['model']:10s} {r['size']:8s} {r['batch']:5d} {str(r['activation_checkpointing']):5s} "
            f"{r['parameters'] / 1e6:7.1f}M {steps} {r['peak_rss_mb']:12.0f} {r['step_peak_above_model_mb']:13.0f} "
            f"{flops}"
        )
    return "\n".join(lines)


def add_saved(args: argparse.Namespace) -> None:
    """Measure ``saved_for_backward_mb`` of every CPU row of an existing ``--out`` (one forward each) and rewrite it."""
    result = json.loads(args.out.read_text())
    torch.set_num_threads(args.threads)
    for row in result["cpu"]:
        torch.manual_seed(0)
        size = tuple(row["image_size"])
        model = build(row["model"], size, row["activation_checkpointing"]).train()
        row["saved_for_backward_mb"] = saved_for_backward_mb(model, make_batch(model, row["batch"], size)[0])
        print(row["model"], row["size"], row["activation_checkpointing"], f"{row['saved_for_backward_mb']:.0f} MB")
        del model
    result["cpu_ratios"] = ratios(result["cpu"], lambda r: r["step_s"]["median"])
    result["cpu_ratios_of_min_step"] = ratios(result["cpu"], lambda r: r["step_s"]["min"])
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", nargs="+", default=["reduced", "full"], choices=list(SIZES))
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="timed steps at full size")
    ap.add_argument("--reduced-repeats", type=int, default=5, help="timed steps at the reduced size")
    ap.add_argument("--memory-batch", type=int, default=8, help="batch of the memory rows (0: none)")
    ap.add_argument("--memory-models", nargs="*", default=["m4oe"], choices=list(MODELS))
    ap.add_argument("--gpu-batch", type=int, default=8)
    ap.add_argument("--gpu-repeats", type=int, default=10)
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per configuration")
    ap.add_argument("--add-saved", action="store_true", help="add saved_for_backward_mb to the rows of --out only")
    ap.add_argument("--memory-only", action="store_true", help="run the memory rows only, into the existing --out")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scale_model.json")
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.add_saved:
        add_saved(args)
        return
    specs = [(m, s, c) for s in args.sizes for m in args.models for c in ("0", "1")] if not args.memory_only else []
    cpu = []
    for model, size, ckpt in specs:
        cpu.append(spawn(f"{model},{size},{ckpt},cpu", args))
        print(table(cpu[-1:]).splitlines()[-1], flush=True)
    memory = []
    for model in args.memory_models if args.memory_batch else []:
        for ckpt in ("0", "1"):
            memory.append(spawn(f"{model},full,{ckpt},memory", args))
            print(table(memory[-1:]).splitlines()[-1], flush=True)
    if args.memory_only:
        result = json.loads(args.out.read_text())
        result.update(memory_batch=args.memory_batch, memory=memory, memory_ratios=memory_ratios(memory))
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(table(memory), json.dumps(result["memory_ratios"], indent=2), f"wrote {args.out}", sep="\n")
        return
    gpu = [spawn(f"{m},{s},{c},cuda", args) for m, s, c in specs] if torch.cuda.is_available() else []
    result = {
        "benchmark": "scale_model",
        "setup": {
            "threads": args.threads,
            "batch": args.batch,
            "repeats_full": args.repeats,
            "repeats_reduced": args.reduced_repeats,
            "memory": "peak RSS (getrusage ru_maxrss) of a fresh subprocess per configuration; step peak = peak RSS "
            "minus RSS after building the model and the batch; activations estimate = step peak minus the fp32 "
            "gradients (4 bytes a parameter), which checkpointing cannot reduce",
            "step": "forward + loss + backward, grads set to None; no optimizer step",
            "machine": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
        "cpu": cpu,
        "cpu_ratios": ratios(cpu, lambda r: r["step_s"]["median"]),
        "cpu_ratios_of_min_step": ratios(cpu, lambda r: r["step_s"]["min"]),  # the least disturbed by other load
        "memory_batch": args.memory_batch,
        "memory": memory,
        "memory_ratios": memory_ratios(memory),
        "gpu": gpu or "no GPU at hand",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + table(cpu + memory))
    print(json.dumps(result["cpu_ratios"], indent=2))
    for r in gpu:
        print(f"{r['model']} {r['size']} ckpt={r['activation_checkpointing']}: {r['images_per_s']:.1f} images/s, "
              f"{r['max_memory_allocated_gb']:.1f} GB, MFU {r['mfu']}")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
