"""Learning benchmark (issue 23): does sparse upcycling from a dense ViT make M4oE learn the embed demo faster?

For each seed, on the embed_m4oe demo cohort (``medmoe.data.embed_demo_cohort``, the bundle's preprocessing):

1. pretrain the dense ViT baseline (``medmoe.nets.DenseViT``, shared patch embedding, the bundle's width / heads /
   MLP width / patch size, ``msoe_depth + fusion_depth`` blocks) on **density only** (another task of the same
   demo; it is one of the bundle's three tasks, so this is transfer from a related task, not an unrelated one) on
   the training split, and save its timm-layout state dict (``DenseViT.timm_state_dict``) to a ``.pt`` file;
2. train the bundle's M4oE (train.json's ``network_def``: retriever fill, MI loss, the bundle's loss, AdamW and
   cosine schedule) from scratch on all three tasks, validating every epoch (``val_mean_auroc``: mean one-vs-rest
   AUROC over the tasks, as the bundle's key metric);
3. the same with ``pretrained_weights`` set to the dense checkpoint: the M4oE constructor upcycles its patch
   embedding and Soft MoE blocks from it (``medmoe.nets.upcycle.upcycle_from_dense``); same seed, so everything
   that is not upcycled starts as in 2;

and reports the epochs each needs to reach the from-scratch model's best validation mean AUROC (upcycled: the first
epoch at or above it; None if never), with mean and spread over seeds.

Budget: the bundle trains 60 epochs; here ``--epochs`` (default 30) per M4oE run and ``--pretrain-epochs``
(default 15), no training augmentation (the bundle's RandScaleIntensityd is left out so every run sees the same
tensors), one thread: about 9 CPU-minutes for 3 seeds (longer when the machine is shared).

Run: ``python benchmarks/upcycling.py [--seeds 0 1 2] [--epochs 40] [--pretrain-epochs 20]
[--out benchmarks/results/upcycling.json]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import list_data_collate

from medmoe.engines.metrics import auroc
from medmoe.losses import MultiTaskLoss
from medmoe.nets import create_model

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "embed_m4oe"


def load_split_tensors(parser: ConfigParser, split: str) -> dict:
    """The split's exams through the bundle's (deterministic) preprocessing, collated into one batch dict."""
    records = parser.get_parsed_content("cohort").records(split)
    transform = parser.get_parsed_content("validate#preprocessing")
    return list_data_collate([transform(dict(r)) for r in records])


def batches(data: dict, batch_size: int, generator: torch.Generator | None):
    """Mini-batches of the collated split (shuffled when a generator is given)."""
    n = len(data["modality_mask"])
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size].tolist()
        yield {k: (v[idx] if torch.is_tensor(v) else [v[i] for i in idx]) for k, v in data.items()}


def mean_val_auroc(model, prepare, data: dict, tasks: list[str], batch_size: int) -> float:
    """The bundle's key metric: mean over tasks of the one-vs-rest AUROC on labelled validation exams."""
    model.eval()
    probs, labels = {t: [] for t in tasks}, {t: [] for t in tasks}
    with torch.no_grad():
        for batch in batches(data, batch_size, None):
            inputs, targets = prepare(batch)
            out = model(inputs)
            for t in tasks:
                keep = targets[t] >= 0
                probs[t].append(out[t][keep].softmax(-1))
                labels[t].append(targets[t][keep])
    values = [auroc(torch.cat(probs[t]), torch.cat(labels[t])) for t in tasks]
    finite = [v for v in values if v == v]
    return sum(finite) / len(finite)


def train(model, loss_fn, prepare, train_data, val_data, tasks, epochs, lr, batch_size, seed) -> list[float]:
    """AdamW + cosine schedule as the bundle; returns the validation mean AUROC after every epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(epochs):
        model.train()
        for batch in batches(train_data, batch_size, generator):
            inputs, targets = prepare(batch)
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(inputs), targets).backward()
            optimizer.step()
        schedule.step()
        history.append(mean_val_auroc(model, prepare, val_data, tasks, batch_size))
    return history


def epochs_to_reach(history: list[float], target: float) -> int | None:
    """1-based epoch of the first value >= target, None if never."""
    return next((i + 1 for i, v in enumerate(history) if v >= target - 1e-12), None)


def spread(values: list[float | int | None]) -> dict:
    """Mean, sd, min, max over the seeds that reached the target (and how many did not)."""
    reached = [float(v) for v in values if v is not None]
    return {
        "mean": statistics.fmean(reached) if reached else None,
        "sd": statistics.stdev(reached) if len(reached) > 1 else None,
        "min": min(reached) if reached else None,
        "max": max(reached) if reached else None,
        "not_reached": sum(v is None for v in values),
    }


def run_seed(parser: ConfigParser, data: dict, seed: int, args, folder: Path) -> dict:
    """Pretrain dense, train M4oE from scratch and upcycled; the seed's histories and epochs-to-target."""
    tasks = dict(parser.get_parsed_content("tasks"))
    modalities = list(parser.get_parsed_content("modalities"))
    batch_size, lr = int(parser.get_parsed_content("batch_size")), float(parser.get_parsed_content("learning_rate"))
    prepare = parser.get_parsed_content("prepare_batch", instantiate=True)
    sizes = {k: parser.get_parsed_content(f"network_def#{k}") for k in ("patch_size", "hidden_size", "mlp_dim")}
    depth = int(parser.get_parsed_content("network_def#msoe_depth")) + int(
        parser.get_parsed_content("network_def#fusion_depth")
    )
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    dense = create_model(
        "dense_vit",
        modalities=modalities,
        tasks={"density": tasks["density"]},
        image_size=parser.get_parsed_content("image_size"),
        num_heads=parser.get_parsed_content("network_def#num_heads"),
        depth=depth,
        dropout_rate=parser.get_parsed_content("network_def#dropout_rate"),
        patch_embedding="shared",
        **sizes,
    )
    dense_prepare = type(prepare)(modalities, ["density"])
    pretrain = train(
        dense, MultiTaskLoss({"density": tasks["density"]}), dense_prepare, *data, ["density"],
        args.pretrain_epochs, lr, batch_size, seed,
    )  # fmt: skip
    checkpoint = folder / f"dense_vit_density_seed{seed}.pt"
    torch.save(dense.timm_state_dict(), checkpoint)
    histories = {}
    for name, weights in (("scratch", None), ("upcycled", str(checkpoint))):
        parser["pretrained_weights"] = weights
        torch.manual_seed(seed)
        model = parser.get_parsed_content("network_def", instantiate=True, lazy=False)
        loss_fn = parser.get_parsed_content("loss", instantiate=True, lazy=False)
        histories[name] = train(model, loss_fn, prepare, *data, list(tasks), args.epochs, lr, batch_size, seed)
    target = max(histories["scratch"])
    return {
        "seed": seed,
        "pretrain_density_val_auroc": pretrain,
        "histories": histories,
        "scratch_best": target,
        "epochs_to_scratch_best": {
            "scratch": epochs_to_reach(histories["scratch"], target),
            "upcycled": epochs_to_reach(histories["upcycled"], target),
        },
        "upcycled_best": max(histories["upcycled"]),
        "seconds": time.perf_counter() - t0,
    }


def write(args, runs: list[dict]) -> dict:
    """Write the JSON of the finished seeds; returns its summary."""
    summary = {name: spread([r["epochs_to_scratch_best"][name] for r in runs]) for name in ("scratch", "upcycled")}
    summary["scratch_best_auroc"] = spread([r["scratch_best"] for r in runs])
    summary["upcycled_best_auroc"] = spread([r["upcycled_best"] for r in runs])
    result = {
        "benchmark": "upcycling",
        "setup": {
            "cohort": "embed demo (medmoe.data.embed_demo_cohort), train / val splits, bundle preprocessing, "
            "no augmentation",
            "pretraining": "dense_vit (shared patch embedding) on density only, training split",
            "model": "bundles/embed_m4oe/configs/train.json network_def (M4oE, retriever fill, MI loss)",
            "epochs": args.epochs,
            "pretrain_epochs": args.pretrain_epochs,
            "seeds_requested": args.seeds,
            "seeds_done": [r["seed"] for r in runs],
            "threads": args.threads,
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
        },
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--pretrain-epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "upcycling.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser["bundle_root"] = str(BUNDLE)
    parser["device"] = "cpu"
    data = (load_split_tensors(parser, "train"), load_split_tensors(parser, "val"))
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            runs.append(run_seed(parser, data, seed, args, Path(tmp)))
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "histories"}), flush=True)
            summary = write(args, runs)  # after every seed, so a cut-off run keeps its finished seeds
    print(f"\nepochs to the from-scratch best val mean AUROC ({len(runs)} seeds):")
    for name in ("scratch", "upcycled"):
        s = summary[name]
        print(
            f"  {name:9s} mean {s['mean']} sd {s['sd']} range [{s['min']}, {s['max']}] not reached {s['not_reached']}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
