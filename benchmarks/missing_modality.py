"""M4oE missing-modality benchmark: how each fill-in mode degrades as one view goes missing (MoE-Retriever).

Run: ``python benchmarks/missing_modality.py [--out benchmarks/results/missing_modality.json] [--epochs 40]
[--quick]``.

The embed_m4oe demo cohort (``medmoe.data.embed_demo_cohort()``, 240 exams, views ffdm_cc / ffdm_mlo /
s2d_cc / s2d_mlo, tasks density / birads / risk) is loaded once with the bundle's preprocessing (load, canonical
side, breast crop, aspect-keeping resize to 64 x 64, NaN placeholders for absent views) into tensors. One M4oE
of the bundle's size (``bundles/embed_m4oe/configs/train.json``: hidden 64, patch 8, ...) is then trained per
missing-modality mode with a plain PyTorch loop (AdamW, lr 1e-3, cosine, batch 16, same seed for every mode;
the bundle's random intensity scaling is applied on the cached tensors):

* ``zero``: ``missing_modality="zero"`` (zero tokens);
* ``mean``: ``"retriever"`` with ``mode="mean"`` (the cached training mean of the view's embeddings);
* ``learned``: ``missing_modality="learned"`` (a learned token bank per view, the bundle's default);
* ``public_mean``: ``"retriever"`` with ``mode="public_mean"`` (0.5 mean of support samples + 0.5 mean of the
  exam's own observed views, the public MoE-Retriever code's output);
* ``moe``: ``"retriever"`` with ``mode="moe"`` (MoE-Retriever: attention over supports + own views, then a
  sparse MoE).

Loss: ``MultiTaskLoss`` with ``aux_weights={"mutual_information": -0.05}`` (the bundle's) plus
``retriever_importance`` / ``retriever_balance`` at 0.01 for the retriever modes. No model selection: the model
after the last epoch is evaluated (so the validation split is unused in training and may be pooled with test).

Removed view: ``s2d_cc``. The synthetic 2D CC view is the view most often absent in the training split (~8%),
so removing it is the realistic case, and its anatomy is shared with ``ffdm_cc`` (the demo renders FFDM and s2D
from one anatomy), so an exam missing it still holds a closely related view: the setting in which retrieval
(intra-modal supports + inter-modal own views) should help most, if it helps at all.

Test-time removal: for rates 0 / 25 / 50 / 75 %, ``s2d_cc`` is removed (image NaN, ``modality_mask`` False)
from ``round(rate * N)`` exams picked by a seeded permutation (nested: the 25 % set is inside the 50 % set);
exams that already lack it count towards the picked ones like the others. Each rate is evaluated over
``--removal-seeds`` permutations and averaged. Metric: macro one-vs-rest AUROC per task
(``medmoe.engines.metrics.auroc``, label -1 skipped) and their mean, on ``test`` (36 exams: small, noisy) and on
``val+test`` pooled (72 exams; legitimate since val selects nothing).

Train-time removal (separately, ``--train-missing 0.5``; skipped when the time budget is spent): each mode is
retrained with ``s2d_cc`` removed from 50 % of the training exams (seeded, fixed for all epochs) and evaluated
at 0 and 50 % test-time removal.

Output: a table on stdout, JSON (``--out``, written atomically after every trained model) and a PNG plot
beside it (mean AUROC on val+test vs test-time missing rate, one line per mode; dashed: train-time removal).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from medmoe.transforms import CanonicalSided, CropBreastd, LoadMammogramd, ResizeKeepAspectd

from medmoe.data import FillMissingModalitiesd, embed_demo_cohort, load_cohort
from medmoe.engines import MultimodalPrepareBatch
from medmoe.engines.metrics import auroc
from medmoe.losses import MultiTaskLoss
from medmoe.nets import create_model
from medmoe.utils import atomic_write, atomic_write_text

MODALITIES = ["ffdm_cc", "ffdm_mlo", "s2d_cc", "s2d_mlo"]
TASKS = {"density": 4, "birads": 3, "risk": 2}
REMOVED = "s2d_cc"
TEST_RATES = (0.0, 0.25, 0.5, 0.75)
MODES = {  # name -> (missing_modality, retriever mode)
    "zero": ("zero", None),
    "mean": ("retriever", "mean"),
    "learned": ("learned", None),
    "public_mean": ("retriever", "public_mean"),
    "moe": ("retriever", "moe"),
}
NETWORK = dict(  # bundles/embed_m4oe/configs/train.json network_def
    in_channels=1,
    patch_size=8,
    hidden_size=64,
    mlp_dim=128,
    num_heads=4,
    msoe_depth=1,
    msoe_experts=8,
    mtoe_experts=16,
    fusion_depth=1,
    fusion_experts=8,
    dropout_rate=0.1,
)


def load_split(cohort, split: str, image_size: int, limit: int | None = None) -> dict:
    """``{"images": (N, M, 1, H, W) float (NaN = absent), "mask": (N, M) bool, task: (N,) long, "ids": list}``."""
    from monai.transforms import Compose

    size = [image_size, image_size]
    transform = Compose(
        [
            LoadMammogramd(keys=MODALITIES, allow_missing_keys=True),
            CanonicalSided(keys=MODALITIES, allow_missing_keys=True),
            CropBreastd(keys=MODALITIES, allow_missing_keys=True),
            ResizeKeepAspectd(keys=MODALITIES, spatial_size=size, allow_missing_keys=True),
            FillMissingModalitiesd(keys=MODALITIES, shape=[1, *size]),
        ]
    )
    records = cohort.records(split)[:limit]
    samples = [transform(r) for r in records]
    out = {
        "images": torch.stack(
            [torch.stack([torch.as_tensor(np.asarray(s[k]), dtype=torch.float32) for k in MODALITIES]) for s in samples]
        ),
        "mask": torch.as_tensor(np.stack([np.asarray(s["modality_mask"], dtype=bool) for s in samples])),
        "ids": [str(r["exam_id"]) for r in records],
    }
    for task in TASKS:
        out[task] = torch.tensor([int(s[task]) for s in samples], dtype=torch.long)
    return out


def concat(*splits: dict) -> dict:
    out = {"images": torch.cat([s["images"] for s in splits]), "mask": torch.cat([s["mask"] for s in splits])}
    out["ids"] = [i for s in splits for i in s["ids"]]
    for task in TASKS:
        out[task] = torch.cat([s[task] for s in splits])
    return out


def remove_view(data: dict, rate: float, seed: int) -> dict:
    """Copy of ``data`` with ``REMOVED`` absent (NaN, mask False) in the first ``round(rate N)`` exams of a seeded
    permutation (so the removed sets are nested across rates for one seed)."""
    n = data["mask"].shape[0]
    picked = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: int(round(rate * n))]
    col = MODALITIES.index(REMOVED)
    images, mask = data["images"].clone(), data["mask"].clone()
    images[picked, col] = float("nan")
    mask[picked, col] = False
    return {**data, "images": images, "mask": mask}


def batch_of(data: dict, index: torch.Tensor, augment: torch.Generator | None = None) -> dict:
    images = data["images"][index]
    if augment is not None:  # RandScaleIntensityd(factors=0.1, prob=0.5) per view
        b, m = images.shape[:2]
        factor = 1 + (torch.rand(b, m, generator=augment) * 0.2 - 0.1)
        apply = torch.rand(b, m, generator=augment) < 0.5
        images = images * torch.where(apply, factor, torch.ones_like(factor)).view(b, m, 1, 1, 1)
    batch = {k: images[:, i] for i, k in enumerate(MODALITIES)}
    batch["modality_mask"] = data["mask"][index]
    for task in TASKS:
        batch[task] = data[task][index]
    return batch


def build(mode: str, image_size: int) -> torch.nn.Module:
    missing, retriever_mode = MODES[mode]
    kwargs = {"retriever_kwargs": {"mode": retriever_mode}} if retriever_mode else {}
    return create_model(
        "m4oe",
        modalities=MODALITIES,
        tasks=TASKS,
        image_size=[image_size, image_size],
        missing_modality=missing,
        **NETWORK,
        **kwargs,
    )


def train(mode: str, data: dict, epochs: int, image_size: int, seed: int, batch_size: int = 16) -> torch.nn.Module:
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = build(mode, image_size)
    aux = {"mutual_information": -0.05}
    if MODES[mode][0] == "retriever":
        aux.update(retriever_importance=0.01, retriever_balance=0.01)
    loss_fn = MultiTaskLoss(TASKS, model, aux_weights=aux)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    prepare = MultimodalPrepareBatch(MODALITIES, TASKS)
    g = torch.Generator().manual_seed(seed)
    n = data["mask"].shape[0]
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(n, generator=g).split(batch_size):
            inputs, targets = prepare(batch_of(data, index, augment=g))
            loss = loss_fn(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    return model


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: dict, batch_size: int = 64) -> dict:
    """``{task: AUROC, "mean": mean over tasks with a defined AUROC}``."""
    model.eval()
    prepare = MultimodalPrepareBatch(MODALITIES, TASKS)
    probs = {t: [] for t in TASKS}
    for index in torch.arange(data["mask"].shape[0]).split(batch_size):
        inputs, _ = prepare(batch_of(data, index))
        out = model(inputs)
        for t in TASKS:
            probs[t].append(out[t].float().softmax(1))
    scores = {}
    for t in TASKS:
        p, y = torch.cat(probs[t]), data[t]
        keep = y >= 0
        scores[t] = auroc(p[keep], y[keep])
    finite = [v for v in scores.values() if not math.isnan(v)]
    scores["mean"] = float(np.mean(finite)) if finite else float("nan")
    return scores


def evaluate_rates(model, sets: dict, rates, seeds: int) -> dict:
    """``{set: {rate: {task / "mean": AUROC averaged over removal seeds, "mean_std": std over seeds}}}``."""
    out = {}
    for name, data in sets.items():
        out[name] = {}
        for rate in rates:
            runs = [evaluate(model, remove_view(data, rate, 1000 + s)) for s in range(seeds if rate > 0 else 1)]
            row = {k: float(np.nanmean([r[k] for r in runs])) for k in runs[0]}
            row["mean_std"] = float(np.std([r["mean"] for r in runs]))
            out[name][f"{rate:.2f}"] = row
    return out


def average_seeds(per_seed: list[dict]) -> dict:
    """Mean over training seeds of :func:`evaluate_rates` outputs, plus ``mean_seed_std`` (std of the task-mean)."""
    out = {}
    for name, rows in per_seed[0].items():
        out[name] = {}
        for rate, row in rows.items():
            values = [p[name][rate] for p in per_seed]
            agg = {k: float(np.nanmean([v[k] for v in values])) for k in row if k != "mean_std"}
            agg["mean_seed_std"] = float(np.std([v["mean"] for v in values]))
            out[name][rate] = agg
    return out


def plot(results: dict, path: Path, pooled: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for key, style in (("test_time", "-o"), ("train_time", "--s")):
        for i, (mode, res) in enumerate(results.get(key, {}).items()):
            rows = res["eval"][pooled]
            rates = sorted(rows, key=float)
            label = mode if key == "test_time" else f"{mode} (train {res['train_missing']:.0%} missing)"
            x, y = [100 * float(r) for r in rates], [rows[r]["mean"] for r in rates]
            ax.plot(x, y, style, color=f"C{i}", label=label)
    ax.set_xlabel(f"test exams with {REMOVED} removed (%)")
    ax.set_ylabel(f"mean AUROC ({pooled})")
    ax.set_title("M4oE missing-modality fill-in modes (embed demo)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def table(results: dict, pooled: str) -> str:
    lines = []
    for key in ("test_time", "train_time"):
        for set_name in ("test", pooled):
            block = results.get(key, {})
            if not block:
                continue
            rates = sorted(next(iter(block.values()))["eval"][set_name], key=float)
            head = f"[{key} removal of {REMOVED}] mean AUROC on {set_name} vs test-time missing rate"
            lines += [head, f"{'mode':<12}" + "".join(f"{float(r) * 100:>8.0f}%" for r in rates)]
            for mode, res in block.items():
                rows = res["eval"][set_name]
                cells = "".join(f"{rows[r]['mean']:>9.3f}" for r in rates)
                stds = " ".join(f"{rows[r]['mean_seed_std']:.3f}" for r in rates)
                lines.append(f"{mode:<12}{cells}   (seed std {stds})")
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/missing_modality.json")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-seeds", type=int, default=3, help="models trained per mode (seed, seed + 1, ...)")
    parser.add_argument("--removal-seeds", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--train-missing", type=float, default=0.5, help="train-time removal rate (0 = skip)")
    parser.add_argument("--time-budget", type=float, default=1e9, help="seconds; train-time runs start only if left")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 24 train exams, 1 epoch, 32 x 32")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    limit = None
    if args.quick:
        args.epochs, args.image_size, args.removal_seeds, args.train_seeds, limit = 1, 32, 1, 1, 24
    start = time.perf_counter()
    csv_path = embed_demo_cohort()
    cohort = load_cohort(str(csv_path), modalities=MODALITIES, tasks=TASKS, id_column="exam_id")
    splits = {s: load_split(cohort, s, args.image_size, limit) for s in ("train", "val", "test")}
    pooled = "val+test"
    sets = {"test": splits["test"], pooled: concat(splits["val"], splits["test"])}
    load_s = time.perf_counter() - start
    sizes = ", ".join(f"{k}={v['mask'].shape[0]}" for k, v in splits.items())
    print(
        f"loaded {sizes} exams in {load_s:.1f}s; "
        f"{REMOVED} naturally present in {sets[pooled]['mask'][:, MODALITIES.index(REMOVED)].float().mean():.0%} "
        "of val+test",
        flush=True,
    )
    results = {
        "config": {
            "cohort": str(csv_path),
            "modalities": MODALITIES,
            "tasks": TASKS,
            "removed_modality": REMOVED,
            "test_rates": list(TEST_RATES),
            "train_missing": args.train_missing,
            "epochs": args.epochs,
            "image_size": args.image_size,
            "seed": args.seed,
            "train_seeds": args.train_seeds,
            "removal_seeds": args.removal_seeds,
            "network": NETWORK,
            "modes": {m: {"missing_modality": MODES[m][0], "retriever_mode": MODES[m][1]} for m in args.modes},
            "split_sizes": {k: int(v["mask"].shape[0]) for k, v in {**splits, **sets}.items()},
            "metric": "macro one-vs-rest AUROC per task and mean over tasks; averaged over removal seeds",
            "quick": args.quick,
        },
        "test_time": {},
        "train_time": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        results["runtime_s"] = round(time.perf_counter() - start, 1)
        atomic_write_text(out, json.dumps(results, indent=2) + "\n")
        plot(results, out.with_suffix(".png"), pooled)

    runs = [("test_time", m, 0.0) for m in args.modes]
    if args.train_missing > 0:
        runs += [("train_time", m, args.train_missing) for m in args.modes]
    for key, mode, train_rate in runs:
        elapsed = time.perf_counter() - start
        if key == "train_time" and elapsed > args.time_budget:
            print(f"skip {key}/{mode}: time budget spent ({elapsed:.0f}s)", flush=True)
            results.setdefault("skipped", []).append(f"{key}/{mode}")
            continue
        train_data = remove_view(splits["train"], train_rate, args.seed + 7) if train_rate else splits["train"]
        rates = TEST_RATES if key == "test_time" else (0.0, args.train_missing)
        per_seed, train_s = [], []
        for seed in range(args.seed, args.seed + args.train_seeds):
            t0 = time.perf_counter()
            model = train(mode, train_data, args.epochs, args.image_size, seed)
            train_s.append(round(time.perf_counter() - t0, 1))
            per_seed.append(evaluate_rates(model, sets, rates, args.removal_seeds))
        res = average_seeds(per_seed)
        results[key][mode] = {"train_missing": train_rate, "train_s": train_s, "eval": res, "per_seed": per_seed}
        row = " ".join(f"{r}:{v['mean']:.3f}+-{v['mean_seed_std']:.3f}" for r, v in res[pooled].items())
        print(f"{key:<10} {mode:<12} train {sum(train_s):6.1f}s  {pooled} mean AUROC {row}", flush=True)
        save()
    save()
    print()
    print(table(results, pooled))
    print(f"runtime {results['runtime_s']:.0f}s; wrote {out} and {out.with_suffix('.png')}")
    return results


if __name__ == "__main__":
    main()
