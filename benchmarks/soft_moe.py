"""Soft MoE forward + backward on CPU: medmoe's ``SoftMoE`` vs ``soft-moe-pytorch`` vs a dense MLP, with rooflines.

Run: ``python benchmarks/soft_moe.py [--out benchmarks/results/soft_moe.json] [--quick]``.

Candidates (side by side in one run, same tokens, same upstream gradient, inputs require grad as inside a
network, parameter gradients set to ``None`` before every step as ``optimizer.zero_grad()`` does):

* ``ours``: ``medmoe.layers.SoftMoE(d, mlp_dim, num_experts=e, num_slots=s)``. With at most
  ``medmoe.layers.native.experts.MAX_NATIVE_ROWS`` rows per expert (batch 8 here) its expert backward, and from
  ``NATIVE_FORWARD_MIN_BYTES`` of weights per layer its expert forward, run the native kernels
  (``medmoe/layers/native/expert_mlp.c``, built on first use; the JSON's ``native_kernels`` says whether they were
  available).
* ``ours_bmm``: the same layer with ``MEDMOE_NATIVE_KERNELS=off``: its experts as PyTorch ``baddbmm`` / ``bmm``
  (identical to ``ours`` at sizes the native kernels do not take).
* ``package``: ``soft_moe_pytorch.SoftMoE(dim=d, num_experts=e, num_slots=s, expert_mult=mlp_dim / d)``
  (0.1.9: ``num_slots`` given so ``seq_len`` is not needed; ``is_distributed=False`` and
  ``offload_unused_experts_to_cpu=False``, since everything already lives on the CPU and the offload only adds
  ``Module.to`` calls). Same FLOPs as ours; the semantic differences are listed in the JSON
  (``package_differences``).
* ``dense``: ``Linear(d, mlp_dim) -> GELU -> Linear(mlp_dim, d)`` over the same ``b * m`` tokens.
* ``kernels``: the forward and backward functions of ours' fused path called directly on the same tensors, under
  ``torch.no_grad()``, with no autograd graph, no gradient accumulation into ``.grad`` and no slot-parameter
  normalisation: the same kernel sequence as ``ours``, and so the least time ``ours`` could reach with these
  PyTorch kernels. ``ours / kernels`` is the layer's own overhead, ``kernels / roofline`` the kernels' distance
  from the roofline.

Sizes: ``d = 192``, ``m = 196`` tokens (ViT-Ti on 224 px, 16 px patches), ``mlp_dim = 768``, one slot per expert,
``e`` in 16, 32, 64, 128, batch 8 and 64, ``torch.set_num_threads(2)``. Every round runs every candidate and the
two machine probes once, in a random order; the tables report medians over rounds (``--rounds``), and every
sample is in the JSON.

Roofline model (fp32, 4 bytes per element). ``N = b m`` tokens, ``p = e s`` slots per sample, ``S = b p`` slot
rows. Forward FLOPs of the matmuls (elementwise work is counted as memory traffic only):

* routing logits ``2 N d p``; dispatch (slots = dispatch^T x) ``2 N p d``; experts ``2 S d h + 2 S h d``;
  combine (y = combine . outputs) ``2 N p d``. Dense MLP: ``4 N d h``.
* backward = 2 x forward (each matmul has a gradient for both operands), so forward + backward = 3 x forward.

Bytes moved, forward + backward (the traffic of an unfused implementation in which every tensor crosses memory
once per use):

* parameters (phi, expert weights and biases; dense: both layers): read forward, read backward, gradient
  written: ``3 x``.
* input ``x`` ``(N, d)``: read forward, read backward, gradient written: ``3 x``; output ``y``: written,
  gradient read: ``2 x``.
* every intermediate, Soft MoE: logits, dispatch, combine ``(N, p)`` each, slots and expert outputs
  ``(S, d)`` each, expert pre-activation and GELU output ``(S, h)`` each; dense: pre-activation and GELU output
  ``(N, h)``: written and read forward, read again backward (saved for the gradient), gradient written and
  read: ``5 x``.

The machine: ``GFLOP/s`` of a square fp32 ``torch.mm`` (2048, preallocated output) and ``GB/s`` of
``torch.add(a, b, out=c)`` over three 256 MiB tensors (read 2, write 1), both measured in the same rounds as the
candidates, so they see the same load on a shared machine. Each size's roofline uses the medians of the probes
taken in that size's rounds (the load can change during a run); the header line gives the medians over the run.
``roofline = max(FLOPs / GFLOP/s, bytes / GB/s)``; ``bound`` says which term wins. Small per-expert matmuls
(``b s`` rows each) run far below the large-square rate on a CPU; that is reported, not hidden.

Threads and memory. libgomp's default wait policy (spin for a while, then sleep) is left alone
(``--omp-wait-policy inherit``, the default). On an idle machine it is as fast as ``ACTIVE``; ``PASSIVE`` puts the
threads to sleep after every parallel region and, at the small sizes, made ``ours`` (about 30 kernels a step)
1.7x slower. On a machine shared with other jobs use ``--omp-wait-policy passive``: there, spinning threads of two
2-thread processes on 2 cores stall every parallel region for a scheduler time slice (up to 30x, the package most).
glibc's allocator hands out fresh ``mmap`` pages for every large allocation and returns them on free, so each
step pays a page fault per 4 kB of new activations and gradients. ``--malloc keep`` (the default) re-executes the
script with ``MALLOC_MMAP_MAX_=0`` and a high ``MALLOC_TRIM_THRESHOLD_`` so that freed memory is reused warm, as a
caching allocator (jemalloc, tcmalloc, PyTorch's CUDA allocator) does; this helps the package and the dense MLP
most, since ``ours`` already writes its expert weight gradients into warm memory
(``medmoe.layers.grad_storage``). ``--malloc default`` keeps glibc's behaviour. Both settings, the load average and
``THP_MEM_ALLOC_ENABLE`` (PyTorch's huge-page switch) are recorded in the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import torch
from torch import nn

from medmoe.layers import SoftMoE
from medmoe.layers.native import FusedSoftMoE, NativeKernelError, load_library
from medmoe.layers.native.experts import MAX_NATIVE_ROWS
from medmoe.layers.soft_moe import NORM_EPS, slot_weights

F32 = 4  # bytes per element
FULL = {"d": 192, "m": 196, "h": 768, "s": 1, "experts": (16, 32, 64, 128), "batches": (8, 64), "rounds": 11}
QUICK = {"d": 64, "m": 49, "h": 128, "s": 1, "experts": (4, 16), "batches": (2, 8), "rounds": 3}
MALLOC_KEEP = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}  # glibc: never mmap, never trim
PROBES = {"full": (2048, 2**26), "quick": (1024, 2**24)}  # matmul n, elements per bandwidth tensor

PACKAGE_DIFFERENCES = [
    "tokens and slot embeddings are RMS-normalised with learnable gains (l2norm * sqrt(d) * gamma) instead of "
    "L2-normalised with one learnable scalar scale (vmoe): its logits are d * cos(x, phi) at init, ours cos(x, phi)",
    "its experts receive the normalised tokens (x = norm(x) is dispatched); vmoe / ours dispatch the raw tokens",
    "its experts are a Python loop over e nn.Sequential(Linear, GELU, Dropout, Linear); ours are two baddbmm",
    "it has no group axis (one router per layer); ours can stack g routers + experts (per-modality MSoE)",
]


def soft_moe_cost(b: int, m: int, d: int, h: int, e: int, s: int) -> dict:
    """FLOPs and bytes of one Soft MoE forward + backward (see the module docstring)."""
    n, p = b * m, e * s
    rows = b * p
    fwd = {"logits": 2 * n * d * p, "dispatch": 2 * n * p * d, "experts": 4 * rows * d * h, "combine": 2 * n * p * d}
    params = d * p + e * (2 * d * h + h + d)
    intermediates = 3 * n * p + 2 * rows * d + 2 * rows * h
    byts = F32 * (3 * params + 3 * n * d + 2 * n * d + 5 * intermediates)
    return {"flops": 3 * sum(fwd.values()), "flops_forward": fwd, "bytes": byts, "params": params}


def dense_cost(b: int, m: int, d: int, h: int) -> dict:
    """FLOPs and bytes of one dense two-layer MLP forward + backward over ``b m`` tokens."""
    n = b * m
    params = 2 * d * h + h + d
    byts = F32 * (3 * params + 3 * n * d + 2 * n * d + 5 * 2 * n * h)
    return {"flops": 3 * 4 * n * d * h, "flops_forward": {"mlp": 4 * n * d * h}, "bytes": byts, "params": params}


def matmul_probe(n: int) -> Callable[[], float]:
    """A callable that runs one ``n x n`` fp32 matmul and returns the GFLOP/s it reached."""
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=c)

    def run() -> float:
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        return 2 * n**3 / (time.perf_counter() - t) / 1e9

    return run


def bandwidth_probe(numel: int) -> Callable[[], float]:
    """A callable that runs ``c = a + b`` over ``numel`` fp32 elements and returns the GB/s it reached."""
    a, b, c = torch.randn(numel), torch.randn(numel), torch.empty(numel)
    torch.add(a, b, out=c)

    def run() -> float:
        t = time.perf_counter()
        torch.add(a, b, out=c)
        return 3 * F32 * numel / (time.perf_counter() - t) / 1e9

    return run


def make_step(model: nn.Module, x: torch.Tensor, grad_y: torch.Tensor) -> Callable[[], None]:
    """One training step's worth of layer work: zero grads (to ``None``), forward, backward."""
    params = list(model.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        x.grad = None
        model(x).backward(grad_y)

    return step


class _SavedTensors:
    """The part of an autograd context that ``FusedSoftMoE`` uses, for calling it without autograd."""

    def save_for_backward(self, *tensors: torch.Tensor) -> None:
        self.saved_tensors = tensors


def with_native_kernels(mode: str, step: Callable[[], object]) -> Callable[[], None]:
    """``step`` run with ``MEDMOE_NATIVE_KERNELS=mode`` (read by the layer at every backward)."""

    def run() -> None:
        old = os.environ.get("MEDMOE_NATIVE_KERNELS")
        os.environ["MEDMOE_NATIVE_KERNELS"] = mode
        try:
            step()
        finally:
            if old is None:
                del os.environ["MEDMOE_NATIVE_KERNELS"]
            else:
                os.environ["MEDMOE_NATIVE_KERNELS"] = old

    return run


def native_kernel_status() -> dict:
    """Mode, availability (building the kernel if needed) and the row limit of the native expert backward."""
    status = {"mode": os.environ.get("MEDMOE_NATIVE_KERNELS", "auto"), "max_rows": MAX_NATIVE_ROWS}
    try:
        load_library()
        return status | {"available": True, "error": None}
    except NativeKernelError as exc:
        return status | {"available": False, "error": str(exc)}


def make_kernel_step(model: SoftMoE, x: torch.Tensor, grad_y: torch.Tensor) -> Callable[[], tuple]:
    """``model``'s fused forward + backward functions called directly: its kernels without autograd.

    Returns:
        a step returning ``(y, grad_x, grad_phi_n, grad_w1, grad_b1, grad_w2, grad_b2)``; the gradients are those
        autograd would pass on (``grad_phi_n`` is with respect to the normalised, scaled slot parameters).
    """
    if model.num_groups != 1:
        raise ValueError("make_kernel_step expects a SoftMoE with one group")
    ex = model.experts
    x_g, grad_y_g = x.detach().unsqueeze(0), grad_y.unsqueeze(0)

    def step() -> tuple:
        with torch.no_grad():
            ctx = _SavedTensors()
            phi_n = slot_weights(model.router.phi, model.router.scale)
            args = (ex.w1, ex.b1, ex.w2, ex.b2, model.num_experts, model.num_slots, NORM_EPS, ex.grad_storage)
            y = FusedSoftMoE.forward(ctx, x_g, phi_n, *args)
            grads = FusedSoftMoE.backward(ctx, grad_y_g)
        return (y[0], grads[0][0], *grads[1:6])

    return step


def build_candidates(d: int, h: int, e: int, s: int) -> dict[str, nn.Module]:
    """Ours, the package (configured to the same width, experts, slots and expert hidden size) and dense."""
    from soft_moe_pytorch import SoftMoE as PackageSoftMoE

    package = PackageSoftMoE(
        dim=d, num_experts=e, num_slots=s, expert_mult=h / d, is_distributed=False, offload_unused_experts_to_cpu=False
    )
    if package.experts.experts[0][0].out_features != h:  # it builds int(d * expert_mult) hidden units
        raise RuntimeError(f"package expert width {package.experts.experts[0][0].out_features} != mlp_dim {h}")
    dense = nn.Sequential(nn.Linear(d, h), nn.GELU(), nn.Linear(h, d))
    return {"ours": SoftMoE(d, h, num_experts=e, num_slots=s), "package": package, "dense": dense}


def bench_size(
    b: int, m: int, d: int, h: int, e: int, s: int, rounds: int, min_sample_s: float, probes: dict
) -> tuple[dict, dict]:
    """Time every candidate at one size, with the machine probes interleaved in the same rounds.

    Returns:
        ``(times, probe_samples)``: per candidate the median, minimum and every sample (seconds per step), and
        per probe its samples (GFLOP/s or GB/s).
    """
    torch.manual_seed(0)
    x = torch.randn(b, m, d, requires_grad=True)
    grad_y = torch.randn(b, m, d)
    candidates = build_candidates(d, h, e, s)
    steps = {k: make_step(v, x, grad_y) for k, v in candidates.items()}
    steps["ours_bmm"] = with_native_kernels("off", steps["ours"])
    steps["kernels"] = make_kernel_step(candidates["ours"], x, grad_y)
    inner = {}
    for k, step in steps.items():  # warm-up, and enough steps per sample to last min_sample_s
        step()
        t = time.perf_counter()
        step()
        inner[k] = max(1, math.ceil(min_sample_s / max(time.perf_counter() - t, 1e-9)))
    samples: dict[str, list[float]] = {k: [] for k in steps}
    machine: dict[str, list[float]] = {k: [] for k in probes}
    for _ in range(rounds):
        jobs = list(steps) + list(probes)
        random.shuffle(jobs)
        for k in jobs:
            if k in probes:
                machine[k].append(probes[k]())
                continue
            t = time.perf_counter()
            for _ in range(inner[k]):
                steps[k]()
            samples[k].append((time.perf_counter() - t) / inner[k])
    times = {
        k: {"median_s": statistics.median(v), "min_s": min(v), "steps_per_sample": inner[k], "samples_s": v}
        for k, v in samples.items()
    }
    return times, machine


def add_rooflines(row: dict) -> None:
    """Roofline times (from the probes of the same rounds), bounds and the ratios the targets are stated in."""
    gflops, gbs = row["machine"]["matmul_gflops"], row["machine"]["bandwidth_gbs"]
    for key, cost in (("ours", row["cost_soft_moe"]), ("dense", row["cost_dense"])):
        compute, memory = cost["flops"] / (gflops * 1e9), cost["bytes"] / (gbs * 1e9)
        row[f"roofline_{key}"] = {
            "compute_s": compute,
            "memory_s": memory,
            "time_s": max(compute, memory),
            "bound": "compute" if compute >= memory else "memory",
        }
    t = {k: v["median_s"] for k, v in row["time"].items()}
    row["package_over_ours"] = t["package"] / t["ours"]
    row["ours_over_roofline"] = t["ours"] / row["roofline_ours"]["time_s"]
    row["package_over_roofline"] = t["package"] / row["roofline_ours"]["time_s"]
    row["dense_over_roofline"] = t["dense"] / row["roofline_dense"]["time_s"]
    row["kernels_over_roofline"] = t["kernels"] / row["roofline_ours"]["time_s"]
    row["ours_over_kernels"] = t["ours"] / t["kernels"]
    row["ours_over_dense"] = t["ours"] / t["dense"]
    row["ours_bmm_over_ours"] = t["ours_bmm"] / t["ours"]
    row["targets_met"] = {
        "not_slower_than_package": t["ours"] <= t["package"],
        "within_1.5x_roofline": row["ours_over_roofline"] <= 1.5,
    }


def print_table(result: dict) -> None:
    """Milliseconds per forward + backward step (medians) and the ratios, one row per size."""
    mach, cfg = result["machine"], result["config"]
    print(
        f"\nmachine: {mach['matmul_gflops']:.1f} GFLOP/s (fp32 mm {mach['matmul_n']}), "
        f"{mach['bandwidth_gbs']:.1f} GB/s (add), threads {cfg['threads']}, "
        f"OMP_WAIT_POLICY={cfg['omp_wait_policy']}, malloc {cfg['malloc']}, "
        f"THP_MEM_ALLOC_ENABLE={cfg['THP_MEM_ALLOC_ENABLE']}"
    )
    native = cfg["native_kernels"]
    print(
        f"native expert backward: MEDMOE_NATIVE_KERNELS={native['mode']}, up to {native['max_rows']} rows per expert, "
        + ("available" if native["available"] else f"unavailable ({native['error']})")
    )
    head = (
        f"{'batch':>5} {'experts':>7} | {'ours':>7} {'ours bmm':>8} {'package':>7} {'dense':>7} {'kernels':>7} | "
        f"{'roof ours':>9} "
        f"{'bound':>7} {'roof dense':>10} | {'pkg/ours':>8} {'ours/roof':>9} {'kern/roof':>9} {'ours/kern':>9} "
        f"{'pkg/roof':>8} {'dense/roof':>10} | "
        f"{'GFLOP/s':>7} {'GB/s':>5}"
    )
    print(head + "\n" + "-" * len(head))
    for r in result["results"]:
        t = {k: 1e3 * v["median_s"] for k, v in r["time"].items()}
        ro, rd, mr = r["roofline_ours"], r["roofline_dense"], r["machine"]
        print(
            f"{r['batch']:>5} {r['experts']:>7} | {t['ours']:>7.1f} {t['ours_bmm']:>8.1f} {t['package']:>7.1f} "
            f"{t['dense']:>7.1f} "
            f"{t['kernels']:>7.1f} | {1e3 * ro['time_s']:>9.1f} {ro['bound']:>7} {1e3 * rd['time_s']:>10.1f} | "
            f"{r['package_over_ours']:>8.2f} {r['ours_over_roofline']:>9.2f} {r['kernels_over_roofline']:>9.2f} "
            f"{r['ours_over_kernels']:>9.2f} {r['package_over_roofline']:>8.2f} "
            f"{r['dense_over_roofline']:>10.2f} | {mr['matmul_gflops']:>7.1f} {mr['bandwidth_gbs']:>5.1f}"
        )
    print(
        "ms per forward + backward step (medians over rounds); roofline = max(FLOPs / GFLOP/s, bytes / GB/s) with "
        "the probes of the same rounds (last two columns)"
    )


def main() -> None:
    """Parse arguments, run every size, print the table and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/soft_moe.json")
    p.add_argument("--quick", action="store_true", help="small sizes and few rounds (smoke test, ~10 s)")
    p.add_argument("--rounds", type=int, default=None, help="rounds per size (default 11, quick 3)")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 8 64; quick 2 8)")
    p.add_argument("--experts", type=int, nargs="+", default=None, help="experts (default 16 32 64 128; quick 4 16)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-sample-s", type=float, default=0.05, help="repeat a step within a sample to last this long")
    p.add_argument(
        "--omp-wait-policy",
        choices=("passive", "active", "inherit"),
        default="inherit",
        help="OMP_WAIT_POLICY to re-execute with (inherit: leave the environment alone; passive on a shared machine)",
    )
    p.add_argument(
        "--malloc",
        choices=("keep", "default"),
        default="keep",
        help="keep: glibc reuses freed memory warm (MALLOC_MMAP_MAX_=0, no trimming); default: glibc as configured",
    )
    args = p.parse_args()
    wanted = dict(MALLOC_KEEP) if args.malloc == "keep" else {}
    if args.omp_wait_policy != "inherit":
        wanted["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    if any(os.environ.get(k) != v for k, v in wanted.items()):
        os.environ.update(wanted)  # read by libgomp and glibc at load: start afresh
        os.execv(sys.executable, [sys.executable, *sys.argv])

    torch.set_num_threads(args.threads)
    cfg = QUICK if args.quick else FULL
    d, m, h, s = cfg["d"], cfg["m"], cfg["h"], cfg["s"]
    rounds = args.rounds or cfg["rounds"]
    mm_n, bw_numel = PROBES["quick" if args.quick else "full"]
    probes = {"matmul_gflops": matmul_probe(mm_n), "bandwidth_gbs": bandwidth_probe(bw_numel)}
    load_before = os.getloadavg()
    rows = []
    for b in args.batches or cfg["batches"]:
        for e in args.experts or cfg["experts"]:
            print(f"batch {b}, experts {e} ...", flush=True)
            times, probe_samples = bench_size(b, m, d, h, e, s, rounds, args.min_sample_s, probes)
            row = {
                "batch": b,
                "experts": e,
                "slots_per_expert": s,
                "tokens": m,
                "hidden_size": d,
                "mlp_dim": h,
                "cost_soft_moe": soft_moe_cost(b, m, d, h, e, s),
                "cost_dense": dense_cost(b, m, d, h),
                "time": times,
                "machine": {k: statistics.median(v) for k, v in probe_samples.items()} | {"samples": probe_samples},
            }
            add_rooflines(row)
            rows.append(row)
    machine = {k: statistics.median([x for r in rows for x in r["machine"]["samples"][k]]) for k in probes} | {
        "matmul_n": mm_n,
        "bandwidth_numel_per_tensor": bw_numel,
    }
    result = {
        "config": {
            "threads": args.threads,
            "rounds": rounds,
            "quick": args.quick,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
            "malloc": args.malloc,
            "malloc_env": {k: os.environ.get(k, "unset") for k in MALLOC_KEEP},
            "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "unset"),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "torch": torch.__version__,
            "soft_moe_pytorch": version("soft-moe-pytorch"),
            "platform": platform.platform(),
            "processor": _cpu_model(),
            "cpus": os.cpu_count(),
            "native_kernels": native_kernel_status(),
        },
        "machine": machine,
        "roofline_model": __doc__[__doc__.index("Roofline model") : __doc__.index("Threads and memory")].strip(),
        "package_differences": PACKAGE_DIFFERENCES,
        "results": rows,
    }
    print_table(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
