"""Where a Soft MoE step's time goes: the fused layer's six phases, inside the step and each one alone.

Run: ``python benchmarks/soft_moe_phases.py [--out benchmarks/results/soft_moe_phases.json] [--quick]``.

The fused ``SoftMoE`` (native routing kernels, as ``benchmarks/soft_moe.py``'s ``kernels`` candidate runs it) splits
into six phases; with ``N = b m`` tokens, ``p`` slots per sample, ``S = b p`` slot rows, their FLOPs are:

* ``routing forward``: norms, logits, both softmaxes, slots = dispatch^T x (``4 N d p``);
* ``experts forward``: both expert layers and the GELU (``4 S d h``);
* ``combine forward``: y = combine . outputs (``2 N p d``);
* ``combine backward``: the outputs' gradient and the combine softmax's part of the logits' (``4 N p d``);
* ``experts backward``: both layers' input and weight gradients (``8 S d h``);
* ``dispatch backward``: the dispatch softmax's part, token and slot-parameter gradients (``8 N d p``).

Two timings per phase, medians over rounds:

* ``in step``: the six phases run in order as one forward + backward step, each timed where it sits, so it sees
  the caches the phases before it left (this is what the layer costs);
* ``alone``: the phase repeated back to back on the same inputs, so its inputs and weights are as warm as they can
  get. The sum of the ``alone`` times is about the least a step made of these kernels can take; compared with the
  roofline of ``benchmarks/soft_moe.py`` (same cost model, probes measured in the same rounds) it says how far the
  kernels themselves are from the target, before any effect of one phase on the next.

``compute`` beside each phase is its FLOPs at the measured matmul rate. Threads (``--threads``, default 2) and
allocator (re-executed with ``benchmarks/soft_moe.py``'s ``--malloc keep`` settings) as there; libgomp's wait policy
is left as the environment sets it. Needs the native routing kernels (float32 CPU, ``p`` and ``d`` multiples of the
vector width).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from medmoe.layers import SoftMoE
from medmoe.layers.native import routing as native_routing
from medmoe.layers.native.experts import experts_backward, experts_forward
from medmoe.layers.soft_moe import NORM_EPS, slot_weights

_spec = importlib.util.spec_from_file_location("soft_moe_benchmark", Path(__file__).with_name("soft_moe.py"))
soft_moe_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soft_moe_bench)

PHASES = ("routing_forward", "experts_forward", "combine_forward", "combine_backward", "experts_backward",
          "dispatch_backward")  # fmt: skip
FULL = {"d": 192, "m": 196, "h": 768, "experts": (16, 32, 64, 128), "batches": (64, 8), "rounds": 11}
QUICK = {"d": 64, "m": 49, "h": 128, "experts": (16,), "batches": (2,), "rounds": 3}


def phase_flops(b: int, m: int, d: int, h: int, p: int) -> dict[str, int]:
    """FLOPs of each phase (see the module docstring); they add up to ``soft_moe_cost``'s."""
    n, rows = b * m, b * p
    return {
        "routing_forward": 4 * n * d * p,
        "experts_forward": 4 * rows * d * h,
        "combine_forward": 2 * n * p * d,
        "combine_backward": 4 * n * p * d,
        "experts_backward": 8 * rows * d * h,
        "dispatch_backward": 8 * n * d * p,
    }


def make_phases(model: SoftMoE, x: torch.Tensor, grad_y: torch.Tensor) -> tuple[dict[str, Callable[[], None]], dict]:
    """The fused layer's phases as callables sharing one ``state`` dict (run them in :data:`PHASES` order).

    Mirrors ``FusedSoftMoE`` on its native-routing path for one group, one slot per expert and no dropout;
    ``tests/benchmarks/test_soft_moe_phases.py`` checks the result against the layer's forward and backward.

    Returns:
        ``(phases, state)``; after a full run ``state`` holds ``y``, ``grad_x``, ``grad_phi_n`` and ``grad_experts``
        (``grad_w1, grad_b1, grad_w2, grad_b2``).
    """
    if model.num_groups != 1 or model.num_slots != 1:
        raise ValueError("make_phases expects a SoftMoE with one group and one slot per expert")
    e, ex = model.num_experts, model.experts
    x_g, grad_y_g = x.detach().unsqueeze(0).contiguous(), grad_y.unsqueeze(0).contiguous()
    with torch.no_grad():
        phi_n = slot_weights(model.router.phi, model.router.scale).contiguous()
    if not native_routing.use_native_routing(x_g, e):
        raise RuntimeError("the native routing kernels do not take this size (or are off / unavailable)")
    st: dict = {}

    def routing_forward() -> None:
        st["inv_norm"], st["logits"], st["dispatch"], st["combine"], st["slots"] = native_routing.routing_forward(
            x_g, phi_n, e, 1, NORM_EPS
        )

    def experts_fwd() -> None:
        st["out"], st["pre"], st["hidden"], _ = experts_forward(st["slots"], ex.w1, ex.b1, ex.w2, ex.b2)

    def combine_forward() -> None:
        st["y"] = native_routing.combine_forward(st["combine"], st["out"], e, 1)

    def combine_backward() -> None:
        st["grad_out"], st["grad_logits"] = native_routing.combine_backward(grad_y_g, st["combine"], st["out"], e, 1)

    def experts_bwd() -> None:
        grad_slots, *st["grad_experts"] = experts_backward(
            st["grad_out"], st["slots"], st["pre"], st["hidden"], ex.w1, ex.w2, ex.grad_storage
        )
        st["grad_slots"] = grad_slots.contiguous()

    def dispatch_backward() -> None:  # adds to grad_logits in place: repeated alone, the values drift (not the time)
        st["grad_x"], st["grad_phi_n"] = native_routing.dispatch_backward(
            *(x_g, st["grad_slots"], st["dispatch"], st["logits"], st["inv_norm"], phi_n, st["grad_logits"]),
            *(e, 1, NORM_EPS),
        )

    fns = (routing_forward, experts_fwd, combine_forward, combine_backward, experts_bwd, dispatch_backward)
    return {name: torch.no_grad()(fn) for name, fn in zip(PHASES, fns, strict=True)}, st


def time_phases(phases: dict[str, Callable[[], None]], rounds: int, repeat: int) -> dict[str, dict[str, float]]:
    """Median seconds per phase, ``in_step`` (each round: ``repeat`` whole steps) and ``alone`` (``repeat`` calls)."""
    in_step: dict[str, list[float]] = {k: [] for k in phases}
    alone: dict[str, list[float]] = {k: [] for k in phases}
    for _ in range(rounds):
        for _ in range(repeat):
            for name, fn in phases.items():
                t = time.perf_counter()
                fn()
                in_step[name].append(time.perf_counter() - t)
        for name, fn in phases.items():  # the state from the last whole step feeds every phase
            fn()
            for _ in range(repeat):
                t = time.perf_counter()
                fn()
                alone[name].append(time.perf_counter() - t)
    return {k: {"in_step_s": statistics.median(in_step[k]), "alone_s": statistics.median(alone[k])} for k in phases}


def bench_size(b: int, e: int, cfg: dict, rounds: int, probes: dict) -> dict:
    d, m, h = cfg["d"], cfg["m"], cfg["h"]
    torch.manual_seed(0)
    model = SoftMoE(d, h, num_experts=e, num_slots=1)
    phases, _ = make_phases(model, torch.randn(b, m, d), torch.randn(b, m, d))
    for fn in phases.values():  # warm-up (builds the kernels on first use)
        fn()
    machine = {k: [probe() for _ in range(3)] for k, probe in probes.items()}
    times = time_phases(phases, rounds, repeat=3)
    machine = {k: [*v, *(probe() for _ in range(3))] for (k, v), probe in zip(machine.items(), probes.values())}
    gflops, gbs = (statistics.median(machine[k]) for k in ("matmul_gflops", "bandwidth_gbs"))
    cost = soft_moe_bench.soft_moe_cost(b, m, d, h, e, 1)
    flops = phase_flops(b, m, d, h, e)
    assert sum(flops.values()) == cost["flops"], "phase FLOPs must add up to the layer's cost model"
    roofline = max(cost["flops"] / (gflops * 1e9), cost["bytes"] / (gbs * 1e9))
    for name, t in times.items():
        t["compute_s"] = flops[name] / (gflops * 1e9)
    sums = {k: sum(t[k] for t in times.values()) for k in ("in_step_s", "alone_s")}
    return {
        "batch": b,
        "experts": e,
        "hidden_size": d,
        "tokens": m,
        "mlp_dim": h,
        "phases": times,
        "step_in_step_s": sums["in_step_s"],
        "step_alone_s": sums["alone_s"],
        "roofline_s": roofline,
        "in_step_over_roofline": sums["in_step_s"] / roofline,
        "alone_over_roofline": sums["alone_s"] / roofline,
        "machine": {"matmul_gflops": gflops, "bandwidth_gbs": gbs, "samples": machine},
    }


def print_rows(rows: list[dict]) -> None:
    print(f"{'batch':>5} {'experts':>7} {'phase':>18} | {'in step':>8} {'alone':>8} {'compute':>8}   (ms)")
    for r in rows:
        for name in PHASES:
            t = r["phases"][name]
            print(
                f"{r['batch']:>5} {r['experts']:>7} {name:>18} | {1e3 * t['in_step_s']:>8.2f} "
                f"{1e3 * t['alone_s']:>8.2f} {1e3 * t['compute_s']:>8.2f}"
            )
        print(
            f"{r['batch']:>5} {r['experts']:>7} {'step':>18} | {1e3 * r['step_in_step_s']:>8.2f} "
            f"{1e3 * r['step_alone_s']:>8.2f}   roofline {1e3 * r['roofline_s']:.2f}: in step "
            f"{r['in_step_over_roofline']:.2f}x, alone {r['alone_over_roofline']:.2f}x"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/soft_moe_phases.json")
    p.add_argument("--quick", action="store_true", help="one small size, few rounds (smoke test)")
    p.add_argument("--rounds", type=int, default=0, help="rounds per size (default 11, quick 3)")
    p.add_argument("--batches", type=int, nargs="+", help="batch sizes (default 64 8)")
    p.add_argument("--experts", type=int, nargs="+", help="experts (default 16 32 64 128)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if any(os.environ.get(k) != v for k, v in soft_moe_bench.MALLOC_KEEP.items()):
        os.environ.update(soft_moe_bench.MALLOC_KEEP)  # as benchmarks/soft_moe.py --malloc keep
        os.execv(sys.executable, [sys.executable, *sys.argv])
    torch.set_num_threads(args.threads)
    cfg = QUICK if args.quick else FULL
    mm_n, bw_numel = soft_moe_bench.PROBES["quick" if args.quick else "full"]
    probes = {
        "matmul_gflops": soft_moe_bench.matmul_probe(mm_n),
        "bandwidth_gbs": soft_moe_bench.bandwidth_probe(bw_numel),
    }
    rows = []
    for b in args.batches or cfg["batches"]:
        for e in args.experts or cfg["experts"]:
            print(f"batch {b}, experts {e} ...", flush=True)
            rows.append(bench_size(b, e, cfg, args.rounds or cfg["rounds"], probes))
    print_rows(rows)
    result = {
        "config": {
            "threads": args.threads,
            "quick": args.quick,
            "torch": torch.__version__,
            "malloc_env": soft_moe_bench.MALLOC_KEEP,
            "loadavg_after": os.getloadavg(),
        },
        "results": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
