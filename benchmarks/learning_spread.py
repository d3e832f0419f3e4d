"""Spread of the learned figures that tests assert, over seeds and CPU code paths.

A test that asserts a learned accuracy or a metric gap must leave a margin larger than what a change of seed or of
machine moves. Machines differ in the kernels PyTorch and MKL pick (AVX-512 on one Intel CPU, AVX2 on an AMD one),
so a long training run rounds differently and ends elsewhere. This script reruns each asserted configuration

* at several seeds on this machine, and
* at seed 0 under other CPU code paths on this machine: ``ATEN_CPU_CAPABILITY`` (PyTorch's own vectorised
  kernels: ``avx512`` / ``avx2`` / ``default``) and ``MKL_ENABLE_INSTRUCTIONS`` (MKL's matmul paths), the two
  switches that change when the suite moves from an Intel to an AMD machine,

and writes, per figure, every value, min / mean / max and the threshold the test asserts, so the margin
``min - threshold`` is on record (``benchmarks/results/learning_spread.json``).

Run: ``python benchmarks/learning_spread.py [--only i2moe|bundles|NAME ...] [--seeds 0 1 2] [--out PATH]``.
Each configuration is a subprocess with one OpenMP thread (as the tests run it). A full run takes about
an hour on 2 cores; ``--only i2moe`` a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# seed-0 reruns under other CPU code paths (name -> environment)
CPU_PATHS = {
    "native": {},
    "aten_avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "mkl_avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "aten_mkl_avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "aten_default_mkl_sse42": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "two_threads": {"OMP_NUM_THREADS": "2"},
}

_I2MOE = """
import importlib.util, json, sys
import torch
spec = importlib.util.spec_from_file_location("b", sys.argv[1])
bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
torch.set_num_threads(int(sys.argv[3]))
kwargs = json.loads(sys.argv[2])
variant = kwargs["variants"][0]
r = bench.run(**kwargs)
out = {}
for kind, s in r["sets"].items():
    v = s[variant]
    out[f"{kind}.vanilla_accuracy"] = s["vanilla"]["accuracy"]["mean"]
    out[f"{kind}.i2moe_accuracy"] = v["accuracy"]["mean"]
    out[f"{kind}.i2moe_minus_vanilla"] = v["accuracy"]["mean"] - s["vanilla"]["accuracy"]["mean"]
    weights = {k: w["mean"] for k, w in v["mean_weights"].items()}
    out[f"{kind}.matching_expert_weight"] = weights[s["matching_expert"]]
    out[f"{kind}.max_other_weight"] = max(w for k, w in weights.items() if k != s["matching_expert"])
    out[f"{kind}.matching_expert_alone"] = v["expert_accuracy"][s["matching_expert"]]["mean"]
    if kind == "synergy":
        alone = v["expert_accuracy"]
        out["synergy.best_uniqueness_alone"] = max(alone["unique_m1"]["mean"], alone["unique_m2"]["mean"])
print("RESULT " + json.dumps(out))
"""

# name -> (kind, run options, {figure: ("min" | "max", threshold asserted by the test)})
CONFIGS: dict[str, tuple[str, dict, dict]] = {
    # tests/nets/test_i2moe_synthetic.py
    "i2moe_quick": (
        "i2moe",
        dict(n_train=1000, n_test=600, steps=500, sets=["uniqueness", "synergy"], variants=["per_expert"]),
        {
            "uniqueness.vanilla_accuracy": ("min", 0.6),
            "uniqueness.i2moe_accuracy": ("min", 0.6),
            "uniqueness.matching_expert_weight": ("min", 0.35),
            "uniqueness.max_other_weight": ("max", None),
            "uniqueness.matching_expert_alone": ("min", 0.6),
            "synergy.vanilla_accuracy": ("min", 0.6),
            "synergy.i2moe_accuracy": ("min", 0.6),
            "synergy.matching_expert_weight": ("min", 0.7),
            "synergy.max_other_weight": ("max", 0.3),
            "synergy.matching_expert_alone": ("min", 0.6),
            "synergy.best_uniqueness_alone": ("max", 0.55),
        },
    ),
    "i2moe_n1000": (
        "i2moe",
        dict(n_train=1000, sets=["synergy"], variants=["per_expert"]),
        {
            "synergy.matching_expert_weight": ("min", 0.8),
            "synergy.i2moe_accuracy": ("min", 0.7),
            "synergy.i2moe_minus_vanilla": ("min", None),
        },
    ),
    "i2moe_hard": (
        "i2moe",
        dict(n_train=1000, features=16, steps=1500, sets=["synergy"], variants=["paper"]),
        {"synergy.i2moe_accuracy": ("min", None), "synergy.i2moe_minus_vanilla": ("min", None)},
    ),
    # tests/bundles/test_*::test_default_* (README command (1) as shipped, then evaluate.json)
    "embed_m4oe": (
        "bundle",
        dict(threads=2),
        {"density.auroc": ("min", 0.6), "birads.auroc": ("min", 0.6), "risk.auroc": ("min", 0.55)},
    ),
    "gamma_m4oe": (
        "bundle",
        dict(),
        {"glaucoma.auroc": ("min", 0.9), "glaucoma.accuracy": ("min", 0.65), "cup.dice": ("min", 0.75)},
    ),
    "fastmri_i2m2": (
        "bundle",
        dict(),
        {
            "acl.auroc": ("min", 0.85),
            "meniscus.auroc": ("min", 0.85),
            "other.auroc": ("min", 0.85),
            "mean_auroc": ("min", None),
            "mean_auroc_minus_magnitude": ("min", 0.0),
        },
    ),
    "adni_i2moe": (
        "bundle",
        dict(max_epochs=15, adni_demo=True),
        {"diagnosis.accuracy": ("min", 0.55), "diagnosis.auroc": ("min", 0.8)},
    ),
}


def _run_i2moe(options: dict, seed: int, env: dict) -> dict:
    threads = env.get("OMP_NUM_THREADS", "1")
    kwargs = {**options, "seeds": [seed]}
    proc = subprocess.run(
        [sys.executable, "-c", _I2MOE, str(REPO / "benchmarks" / "i2moe_synthetic.py"), json.dumps(kwargs), threads],
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"i2moe run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def _bundle_cmd(bundle: str, configs: list[str], overrides: dict) -> list[str]:
    folder = REPO / "bundles" / bundle / "configs"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file"]
    cmd.append("[" + ",".join(f"'{folder / c}'" for c in configs) + "]")
    for key, value in overrides.items():
        cmd += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return cmd


def _run_bundle(bundle: str, options: dict, seed: int, env: dict, cache: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        overrides: dict = {"bundle_root": str(root / "b"), "seed": seed}
        if options.get("max_epochs"):
            overrides["max_epochs"] = options["max_epochs"]
        if options.get("adni_demo"):  # the test builds a default-size demo outside the bundle's cache
            from medmoe.data import make_adni_demo

            overrides.update(cohort_csv=str(make_adni_demo(root / "demo")), device="cpu")
        full_env = {
            **os.environ,
            "MEDMOE_CACHE": str(cache),
            "OMP_NUM_THREADS": str(options.get("threads", 1)),
            "OMP_WAIT_POLICY": "PASSIVE",
            **env,
        }
        for configs in (["train.json"], ["train.json", "evaluate.json"]):
            proc = subprocess.run(
                _bundle_cmd(bundle, configs, overrides), cwd=REPO, env=full_env, capture_output=True, text=True
            )
            if proc.returncode != 0:
                raise RuntimeError(f"{bundle} {configs} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        eval_dir = root / "b" / "eval"
        tasks = json.loads((eval_dir / "metrics.json").read_text())["tasks"]
        out = {
            f"{task}.{key}": m[key]
            for task, m in tasks.items()
            for key in ("auroc", "accuracy", "dice")
            if isinstance(m.get(key), (int, float))
        }
        if bundle == "fastmri_i2m2":  # the test's mean AUROC and its gap over the magnitude expert
            names = ("acl", "meniscus", "cartilage", "other")
            experts = json.loads((eval_dir / "expert_metrics.json").read_text())
            out["mean_auroc"] = sum(out[f"{t}.auroc"] for t in names) / len(names)
            magnitude = sum(experts["magnitude"][t]["auroc"] for t in names) / len(names)
            out["mean_auroc_minus_magnitude"] = out["mean_auroc"] - magnitude
    return out


def _summary(runs: list[dict], checks: dict) -> dict:
    """Per figure: values, min / mean / max and, where the test asserts one, its threshold and the margin."""
    figures = {}
    for figure, (side, threshold) in checks.items():
        values = [r["figures"][figure] for r in runs if figure in r["figures"]]
        if not values:
            continue
        entry = {"values": values, "min": min(values), "mean": statistics.fmean(values), "max": max(values)}
        if len(values) > 1:
            entry["sd"] = statistics.stdev(values)
        if threshold is not None:
            worst = entry["min"] if side == "min" else entry["max"]
            entry.update(asserted=f"{side} {'>' if side == 'min' else '<'} {threshold}", threshold=threshold)
            entry["margin"] = worst - threshold if side == "min" else threshold - worst
        figures[figure] = entry
    return figures


def _measure(names: list[str], plan: list[tuple[int, str]], result: dict, out_path: Path) -> None:
    """Run every configuration in ``names`` for each (seed, CPU path) of ``plan``; write after each one."""
    machine = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as cache_dir:
        for name in names:
            kind, options, checks = CONFIGS[name]
            runs = []
            for seed, path in plan:
                start = time.time()
                if kind == "i2moe":
                    figures = _run_i2moe(options, seed, CPU_PATHS[path])
                else:
                    figures = _run_bundle(name, options, seed, CPU_PATHS[path], Path(cache_dir) / name)
                runs.append({"seed": seed, "cpu_path": path, "seconds": round(time.time() - start), "figures": figures})
                shown = ", ".join(f"{k} {figures[k]:.4f}" for k in checks if k in figures)
                print(f"{name} seed {seed} {path}: {shown}", flush=True)
            result["configs"][name] = {
                "options": options,
                "machine": machine,
                "date": time.strftime("%Y-%m-%d"),
                "runs": runs,
                "figures": _summary(runs, checks),
            }
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(result, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=None, help="config names, or 'i2moe' / 'bundles'")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2], help="seeds on this CPU's own path")
    parser.add_argument("--cpu-paths", nargs="*", default=list(CPU_PATHS), help="seed-0 reruns under these paths")
    parser.add_argument("--summarise-only", action="store_true", help="recompute the summaries in --out, run nothing")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "learning_spread.json"))
    args = parser.parse_args()
    kinds = {"i2moe": "i2moe", "bundles": "bundle"}
    names = [
        n
        for n, (kind, _, _) in CONFIGS.items()
        if args.only is None or n in args.only or any(kinds.get(o) == kind for o in args.only)
    ]
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.is_file() else {"configs": {}}
    if args.summarise_only:  # thresholds changed: the runs stay, the margins are recomputed
        names = [n for n in names if n in result["configs"]]
        for name in names:
            result["configs"][name]["figures"] = _summary(result["configs"][name]["runs"], CONFIGS[name][2])
        out_path.write_text(json.dumps(result, indent=1))
    else:
        plan = [(s, "native") for s in args.seeds] + [(0, p) for p in args.cpu_paths if p != "native"]
        if 0 not in args.seeds and "native" in args.cpu_paths:
            plan.insert(0, (0, "native"))
        _measure(names, plan, result, out_path)
    for name in names:
        for figure, entry in result["configs"][name]["figures"].items():
            margin = f"margin {entry['margin']:+.3f} ({entry['asserted']})" if "margin" in entry else "no threshold"
            print(
                f"{name:14s} {figure:36s} min {entry['min']:.3f} mean {entry['mean']:.3f} "
                f"max {entry['max']:.3f}  {margin}"
            )


if __name__ == "__main__":
    main()
