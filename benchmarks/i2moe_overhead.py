"""I2MoE training-step overhead vs the vanilla fusion backbone, with the FLOP ratio beside the time ratio.

Run: ``OMP_NUM_THREADS=1 python benchmarks/i2moe_overhead.py [--out benchmarks/results/i2moe_overhead.json]
[--quick]``.

For n = 2, 3, 4 vector modalities (64 values each), both models share the encoders and the transformer
backbone (hidden 64, 4 tokens per modality, 2 layers, 4 heads), batch 32. One training step = forward +
loss (task + interaction for I2MoE) + backward + Adam step. I2MoE runs (n + 2) experts x (1 + n) passes
as one batched backbone call, so its backbone FLOPs are ``(n + 2)(n + 1)`` times the vanilla ones; the
encoders and the reweighting MLP run once. FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``
over one forward + backward; times are medians over ``--rounds`` interleaved rounds (both models alternate,
so machine noise hits both alike). A third candidate, ``i2moe_loop``, does the same I2MoE computation with a Python
loop over experts and passes (separate single-group backbones, as the public code does): its time next to
``i2moe`` measures what the one batched call saves. Printed and written as JSON (atomically).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from medmoe.losses import interaction_losses
from medmoe.nets import ModelOutput, create_model
from medmoe.nets.fusion import build_backbone
from medmoe.utils import atomic_write_text


def make(name: str, n: int, hidden: int, tokens: int, features: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(
        name,
        modalities=[f"m{i}" for i in range(n)],
        tasks={"y": 3},
        in_features=features,
        hidden_size=hidden,
        num_tokens=tokens,
        backbone="transformer",
        backbone_kwargs={"num_layers": 2, "num_heads": 4},
    )


class LoopedI2MoE(torch.nn.Module):
    """Reference: the same I2MoE computation with a Python loop over experts and passes (as the public code).

    Separate single-group backbones per expert; pass ``1 + j`` replaces modality ``j`` by N(0, 1) noise.
    """

    def __init__(self, n: int, hidden: int, tokens: int, features: int) -> None:
        super().__init__()
        ref = make("i2moe", n, hidden, tokens, features)
        self.encoders, self.reweight, self.n = ref.encoders, ref.reweight, n
        self.experts = torch.nn.ModuleList(
            build_backbone("transformer", n, hidden, {"y": 3}, tokens, 1, num_layers=2, num_heads=4)
            for _ in range(n + 2)
        )

    def forward(self, batch: dict) -> ModelOutput:
        tokens, mask, *_ = self.encoders(batch)
        passes = []
        for expert in self.experts:
            outputs = []
            for p in range(1 + self.n):
                x, pass_mask = tokens, mask
                if p > 0:
                    x = tokens.clone()
                    x[:, p - 1] = torch.randn_like(x[:, p - 1])
                    pass_mask = mask.clone()
                    pass_mask[:, p - 1] = True
                outputs.append(expert(x, pass_mask)["y"])
            passes.append(torch.stack(outputs))
        logits = torch.stack(passes)  # e p b k
        aux = {"interaction": 0.5 * interaction_losses(logits, mask).mean()}
        weights = torch.softmax(self.reweight(tokens.mean(2).flatten(1)), -1)
        return ModelOutput({"y": torch.einsum("b e, e b k -> b k", weights, logits[:, 0])}, aux)


def step(model: torch.nn.Module, optimiser: torch.optim.Optimizer, batch: dict, labels: torch.Tensor) -> None:
    out = model(batch)
    loss = F.cross_entropy(out["y"], labels) + sum(out.aux_losses.values(), torch.zeros(()))
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()


def flops(model: torch.nn.Module, batch: dict, labels: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        out = model(batch)
        loss = F.cross_entropy(out["y"], labels) + sum(out.aux_losses.values(), torch.zeros(()))
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def run(ns=(2, 3, 4), batch_size=32, hidden=64, tokens=4, features=64, rounds=7, steps=5) -> dict:
    results = {
        "config": dict(
            batch=batch_size,
            hidden=hidden,
            tokens_per_modality=tokens,
            features=features,
            layers=2,
            heads=4,
            rounds=rounds,
            steps_per_round=steps,
            threads=torch.get_num_threads(),
            torch=torch.__version__,
        ),
        "rows": [],
    }
    for n in ns:
        g = torch.Generator().manual_seed(n)
        batch = {f"m{i}": torch.randn(batch_size, features, generator=g) for i in range(n)}
        labels = torch.randint(0, 3, (batch_size,), generator=g)
        models = {name: make(name, n, hidden, tokens, features).train() for name in ("fusion", "i2moe")}
        models["i2moe_loop"] = LoopedI2MoE(n, hidden, tokens, features).train()
        optimisers = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in models.items()}
        counted = {k: flops(m, batch, labels) for k, m in models.items()}
        times: dict[str, list[float]] = {k: [] for k in models}
        for k, m in models.items():  # warm-up
            step(m, optimisers[k], batch, labels)
        for _ in range(rounds):
            for k, m in models.items():
                start = time.perf_counter()
                for _ in range(steps):
                    step(m, optimisers[k], batch, labels)
                times[k].append((time.perf_counter() - start) / steps * 1e3)
        median = {k: statistics.median(v) for k, v in times.items()}
        params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
        results["rows"].append(
            dict(
                modalities=n,
                vanilla_step_ms=round(median["fusion"], 3),
                i2moe_step_ms=round(median["i2moe"], 3),
                i2moe_loop_step_ms=round(median["i2moe_loop"], 3),
                time_ratio=round(median["i2moe"] / median["fusion"], 2),
                loop_over_batched=round(median["i2moe_loop"] / median["i2moe"], 2),
                vanilla_gflop=round(counted["fusion"] / 1e9, 4),
                i2moe_gflop=round(counted["i2moe"] / 1e9, 4),
                flop_ratio=round(counted["i2moe"] / counted["fusion"], 2),
                backbone_pass_ratio=(n + 2) * (n + 1),
                loop_gflop=round(counted["i2moe_loop"] / 1e9, 4),
                vanilla_params=params["fusion"],
                i2moe_params=params["i2moe"],
                samples_ms={k: [round(t, 3) for t in v] for k, v in times.items()},
            )
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/i2moe_overhead.json")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    results = run(rounds=2, steps=2) if args.quick else run(rounds=args.rounds)
    print(f"{'n':>2} {'vanilla ms':>10} {'I2MoE ms':>9} {'loop ms':>8} {'time x':>7} {'FLOP x':>7} {'(n+2)(n+1)':>10}")
    for r in results["rows"]:
        print(
            f"{r['modalities']:>2} {r['vanilla_step_ms']:>10.2f} {r['i2moe_step_ms']:>9.2f} "
            f"{r['i2moe_loop_step_ms']:>8.2f} {r['time_ratio']:>7.2f} {r['flop_ratio']:>7.2f} "
            f"{r['backbone_pass_ratio']:>10}"
        )
    atomic_write_text(Path(args.out), json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
