"""I2MoE vs the vanilla fusion backbone on synthetic data with a known modality interaction.

Run: ``OMP_NUM_THREADS=1 python benchmarks/i2moe_synthetic.py [--out benchmarks/results/i2moe_synthetic.json]
[--quick]``.

Two vector modalities ``m1, m2`` (``features`` values each, N(0, 1)); the binary label comes from one
coordinate of each, the rest is noise:

* ``uniqueness``: ``y = [m1_0 > 0]`` (modality 2 is pure noise);
* ``redundancy``: a shared latent ``z`` is copied into both, ``m1_0 = z + e1``, ``m2_0 = z + e2`` (small
  ``e``), ``y = [z > 0]`` (either modality suffices);
* ``synergy``: ``y = [m1_0 > 0] XOR [m2_0 > 0]`` (neither modality alone carries any information).

Both models get the same encoders (one-hidden-layer MLP per modality), the same transformer fusion
backbone, the same optimiser (Adam), steps and batches; I2MoE adds its n + 2 = 4 interaction experts,
the reweighting MLP and the interaction loss. Reported per data set and seed: test accuracy of both,
I2MoE's mean expert weight per expert on the test set, which expert has the largest mean weight, and
each expert's own test accuracy (its clean logits alone).
Everything is printed and written as JSON (atomically).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medmoe.nets import create_model
from medmoe.utils import atomic_write_text

SETS = ("uniqueness", "redundancy", "synergy")
MATCHING_EXPERT = {"uniqueness": "unique_m1", "redundancy": "redundancy", "synergy": "synergy"}


def make_set(kind: str, n: int, features: int, seed: int) -> dict[str, torch.Tensor]:
    """``{"m1": (n, features), "m2": (n, features), "y": (n,)}`` with the label from interaction ``kind``."""
    g = torch.Generator().manual_seed(seed)
    m1, m2 = torch.randn(n, features, generator=g), torch.randn(n, features, generator=g)
    if kind == "uniqueness":
        y = m1[:, 0] > 0
    elif kind == "redundancy":
        z = torch.randn(n, generator=g)
        m1[:, 0] = z + 0.1 * torch.randn(n, generator=g)
        m2[:, 0] = z + 0.1 * torch.randn(n, generator=g)
        y = z > 0
    elif kind == "synergy":
        y = (m1[:, 0] > 0) ^ (m2[:, 0] > 0)
    else:
        raise ValueError(f"unknown interaction '{kind}'; choose from {SETS}")
    return {"m1": m1, "m2": m2, "y": y.long()}


def model_options(features: int, hidden: int) -> dict:
    return dict(
        modalities=["m1", "m2"],
        tasks={"y": 2},
        in_features=features,
        hidden_size=hidden,
        backbone="transformer",
        backbone_kwargs={"num_layers": 1, "num_heads": 2},
    )


def train_and_test(name: str, train: dict, test: dict, options: dict, steps: int, batch: int, lr: float, seed: int):
    """Train model ``name`` for ``steps`` Adam steps; return test accuracy, seconds and the model."""
    torch.manual_seed(seed)
    model = create_model(name, **options)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(train["y"])
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (batch,), generator=g)
        out = model({"m1": train["m1"][idx], "m2": train["m2"][idx]})
        loss = F.cross_entropy(out["y"], train["y"][idx])
        loss = loss + sum(model.auxiliary_losses().values(), torch.zeros(()))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        pred = model({"m1": test["m1"], "m2": test["m2"]})["y"].argmax(-1)
    return float((pred == test["y"]).float().mean()), seconds, model


def run(
    n_train: int = 2000,
    n_test: int = 2000,
    features: int = 8,
    hidden: int = 16,
    steps: int = 1500,
    batch: int = 64,
    lr: float = 3e-3,
    seeds: tuple[int, ...] = (0, 1, 2),
    interaction_weight: float = 0.5,
    temperature: float = 1.0,
    sets: tuple[str, ...] = SETS,
) -> dict:
    """Train both models on every set and seed; return the JSON-ready results."""
    options = model_options(features, hidden)
    i2moe_options = {**options, "interaction_weight": interaction_weight, "temperature": temperature}
    results: dict = {
        "config": dict(
            n_train=n_train,
            n_test=n_test,
            features=features,
            hidden=hidden,
            steps=steps,
            batch=batch,
            lr=lr,
            seeds=list(seeds),
            interaction_weight=interaction_weight,
            temperature=temperature,
            backbone="transformer, 1 layer, 2 heads",
            threads=torch.get_num_threads(),
        ),
        "sets": {},
    }
    for kind in sets:
        runs = []
        for seed in seeds:
            train = make_set(kind, n_train, features, seed=1000 + seed)
            test = make_set(kind, n_test, features, seed=2000 + seed)
            vanilla_acc, vanilla_s, _ = train_and_test("fusion", train, test, options, steps, batch, lr, seed)
            i2moe_acc, i2moe_s, model = train_and_test("i2moe", train, test, i2moe_options, steps, batch, lr, seed)
            weights = model.expert_weights().mean(0)
            mean_weights = {name: round(float(w), 4) for name, w in zip(model.expert_names, weights)}
            expert_accuracy = {  # each expert's clean logits alone, on the test set
                name: round(float((logits["y"].argmax(-1) == test["y"]).float().mean()), 4)
                for name, logits in model.expert_logits().items()
            }
            runs.append(
                dict(
                    seed=seed,
                    vanilla_accuracy=vanilla_acc,
                    i2moe_accuracy=i2moe_acc,
                    vanilla_train_s=round(vanilla_s, 2),
                    i2moe_train_s=round(i2moe_s, 2),
                    i2moe_mean_weights=mean_weights,
                    i2moe_expert_accuracy=expert_accuracy,
                    top_expert=max(mean_weights, key=mean_weights.get),
                )
            )
        names = list(runs[0]["i2moe_mean_weights"])
        mean_w = {k: round(float(np.mean([r["i2moe_mean_weights"][k] for r in runs])), 4) for k in names}
        top = max(mean_w, key=mean_w.get)
        expert_acc = {k: round(float(np.mean([r["i2moe_expert_accuracy"][k] for r in runs])), 4) for k in names}
        results["sets"][kind] = dict(
            runs=runs,
            vanilla_accuracy_mean=round(float(np.mean([r["vanilla_accuracy"] for r in runs])), 4),
            i2moe_accuracy_mean=round(float(np.mean([r["i2moe_accuracy"] for r in runs])), 4),
            i2moe_mean_weights=mean_w,
            i2moe_expert_accuracy=expert_acc,
            top_expert=top,
            matching_expert=MATCHING_EXPERT[kind],
            top_expert_matches=top == MATCHING_EXPERT[kind],
        )
    syn = results["sets"].get("synergy")
    if syn is not None:
        results["i2moe_beats_vanilla_on_synergy"] = syn["i2moe_accuracy_mean"] > syn["vanilla_accuracy_mean"]
    results["top_expert_matches"] = {k: v["top_expert_matches"] for k, v in results["sets"].items()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/i2moe_synthetic.json")
    parser.add_argument("--quick", action="store_true", help="one seed, fewer steps (a smoke run)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    kwargs = dict(steps=300, seeds=(0,), n_train=1000, n_test=1000) if args.quick else {}
    if not args.quick:
        kwargs = dict(steps=args.steps, seeds=tuple(range(args.seeds)))
    results = run(**kwargs)
    print(f"{'set':<11} {'vanilla acc':>11} {'I2MoE acc':>10}  top expert (expected)  mean expert weights")
    for kind, r in results["sets"].items():
        weights = " ".join(f"{k}={v:.3f}" for k, v in r["i2moe_mean_weights"].items())
        print(
            f"{kind:<11} {r['vanilla_accuracy_mean']:>11.4f} {r['i2moe_accuracy_mean']:>10.4f}  "
            f"{r['top_expert']} ({r['matching_expert']})  {weights}"
        )
    atomic_write_text(Path(args.out), json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
