"""M4oE missing-modality benchmark: how each fill-in mode degrades as one view goes missing (MoE-Retriever).

Run: ``python benchmarks/missing_modality.py [--cohort views|embed] [--out ...json] [--epochs 30] [--quick]``.

Cohorts (``--cohort``):

* ``views`` (default): a seeded synthetic three-view cohort built here (:func:`synthetic_views`), made for the
  question the MoE-Retriever paper asks. Latents ``z1, z2`` (signal) and ``z3`` (nuisance) ~ N(0, 1) per exam;
  view ``key`` shows ``z1`` and ``z2`` cleanly (two Gaussian blobs of those amplitudes), view ``left`` shows
  ``z1 + 0.8 e1`` and ``z3``, view ``right`` shows ``z2 + 0.8 e2`` and ``z3`` (``e`` ~ N(0, 1) per exam, so the
  noise cannot be averaged away over pixels); every view adds pixel noise (std 0.3) and the blobs sit at
  different places in each view. Tasks: ``sum`` = 1[z1 + z2 > 0] (2 classes), ``diff`` = tertile of ``z1 - z2``
  (3 classes). The removed view ``key`` carries the signal best, so a model leans on it, and its content is
  partly predictable from ``left`` + ``right`` (correlation 0.78 per latent): the setting in which retrieving
  an embedding from the exam's own views and similar training exams can help. 320 train / 200 val / 200 test
  exams, 32 x 32, all views present (missingness comes only from the removal below).
* ``embed``: the embed_m4oe demo cohort (``medmoe.data.embed_demo_cohort()``, 240 exams, views ffdm_cc /
  ffdm_mlo / s2d_cc / s2d_mlo, tasks density / birads / risk), loaded with the bundle's preprocessing (load,
  canonical side, breast crop, aspect-keeping resize to 64 x 64, NaN for absent views); removed view
  ``s2d_cc``. The demo renders FFDM and s2D from one anatomy, so ``s2d_cc`` is close to a copy of ``ffdm_cc``:
  removing it barely hurts any mode (see docs/methods/moe_retriever.md).

One M4oE per mode and training seed is trained with a plain PyTorch loop (AdamW, lr 1e-3, cosine, batch 16,
same seeds for every mode; random intensity scaling per view). Modes:

* ``zero``: ``missing_modality="zero"`` (zero tokens);
* ``mean``: ``"retriever"`` with ``mode="mean"`` (the cached training mean of the view's embeddings);
* ``learned``: ``missing_modality="learned"`` (a learned token bank per view);
* ``public_mean``: ``"retriever"`` with ``mode="public_mean"`` (0.5 mean of support samples + 0.5 mean of the
  exam's own observed views, the public MoE-Retriever code's output), random supports as in the public code;
* ``public_mean_nearest``: the same with the nearest supports (``support_selection="nearest"``);
* ``moe``: ``"retriever"`` with ``mode="moe"`` (MoE-Retriever: attention over supports + own views, then a
  sparse MoE; ``--num-supports`` / ``--num-candidates`` / ``--num-shared`` / ``--top-k`` / ``--capacity``);
  supports = the most similar eligible training exams (``support_selection="nearest"``, the default); trained
  as in the paper (task loss + balancing losses on the naturally missing views only).
* ``moe_random``: ``moe`` with random eligible supports (``support_selection="random"``).
* ``moe_masked``: ``moe`` (nearest supports) plus the optional masked-retrieval term, *not in the paper*
  (``masked_retrieval=--masked-retrieval``, loss ``retriever_reconstruction`` at ``--reconstruction-weight``):
  the retriever also learns to retrieve a hidden present view of complete exams.
* ``moe_residual`` / ``moe_masked_residual``: ``moe`` / ``moe_masked`` with ``support_residual=True`` (*not in
  the paper*): the mean of the nearest supports' tokens is added to the attention output, so the retriever
  starts from the k-nearest-neighbour average of the view and learns a correction.

Sample ids travel with every batch (``MultimodalPrepareBatch(id_key="id")``), so the support bank keeps one
row per training exam (the newest embedding). Loss: ``MultiTaskLoss`` with ``aux_weights={"mutual_information":
-0.05}`` (the embed bundle's) plus ``retriever_importance`` / ``retriever_balance`` at 0.01 for the retriever
modes. No model selection: the model after the last epoch is evaluated (so val may be pooled with test).

Training-time missing-view dropout (``--train-dropout p``, all modes alike, default 0): in every training batch
the removed view is dropped from each exam with probability ``p`` (fresh draw per batch). With the default the
``test_time`` models train on complete exams and meet the missing view only at test time. Then a cohort with no
naturally missing views never trains the retriever (it only acts on absent views) nor teaches any mode what an
absent view looks like; ``train_time`` below is the paper's setting (naturally incomplete training data).

Test-time removal: for rates 0 / 25 / 50 / 75 %, the removed view is dropped (image NaN, ``modality_mask``
False) from ``round(rate * N)`` exams picked by a seeded permutation (nested: the 25 % set is inside the 50 %
set); exams that already lack it count towards the picked ones. Each rate is evaluated over ``--removal-seeds``
permutations and averaged. Metric: macro one-vs-rest AUROC per task (``medmoe.engines.metrics.auroc``, label
-1 skipped) and their mean, on ``test`` and on ``val+test`` pooled.

Train-time removal (separately, ``--train-missing 0.5``; skipped when the time budget is spent): each mode is
retrained with the view removed from 50 % of the training exams (seeded, fixed for all epochs, no extra
dropout) and evaluated at 0 / 25 / 50 / 75 % test-time removal. ``--settings`` picks which of the two settings
run (default both).

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

from medmoe.engines import MultimodalPrepareBatch
from medmoe.engines.metrics import auroc
from medmoe.losses import MultiTaskLoss
from medmoe.nets import create_model
from medmoe.utils import atomic_write, atomic_write_text

TEST_RATES = (0.0, 0.25, 0.5, 0.75)
MODES = {  # name -> (missing_modality, retriever mode)
    "zero": ("zero", None),
    "mean": ("retriever", "mean"),
    "learned": ("learned", None),
    "public_mean": ("retriever", "public_mean"),
    "public_mean_nearest": ("retriever", "public_mean"),
    "moe": ("retriever", "moe"),
    "moe_random": ("retriever", "moe"),
    "moe_masked": ("retriever", "moe"),  # + the masked-retrieval term (beyond the paper)
    "moe_residual": ("retriever", "moe"),  # + support_residual (beyond the paper)
    "moe_masked_residual": ("retriever", "moe"),  # + both
}
# support selection of the bank modes (MoERetriever(support_selection=...)); the others use "nearest"
RANDOM_SUPPORTS = ("public_mean", "moe_random")
MASKED = ("moe_masked", "moe_masked_residual")  # modes with masked_retrieval and the reconstruction loss
RESIDUAL = ("moe_residual", "moe_masked_residual")  # modes with MoERetriever(support_residual=True)
COHORTS = {
    "views": dict(
        modalities=["key", "left", "right"],
        tasks={"sum": 2, "diff": 3},
        removed="key",
        image_size=32,
        sizes={"train": 320, "val": 200, "test": 200},
        network=dict(
            in_channels=1,
            patch_size=8,
            hidden_size=32,
            mlp_dim=64,
            num_heads=4,
            msoe_depth=1,
            msoe_experts=4,
            mtoe_experts=8,
            fusion_depth=1,
            fusion_experts=4,
            dropout_rate=0.1,
        ),
    ),
    "embed": dict(
        modalities=["ffdm_cc", "ffdm_mlo", "s2d_cc", "s2d_mlo"],
        tasks={"density": 4, "birads": 3, "risk": 2},
        removed="s2d_cc",
        image_size=64,
        network=dict(  # bundles/embed_m4oe/configs/train.json network_def
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
        ),
    ),
}
# module-level view of the default cohort (tests and quick scripts)
MODALITIES, TASKS, REMOVED = COHORTS["views"]["modalities"], COHORTS["views"]["tasks"], COHORTS["views"]["removed"]


def synthetic_views(
    n: int, seed: int, image_size: int = 32, latent_noise: float = 0.8, pixel_noise: float = 0.3, prefix: str = ""
) -> dict:
    """The ``views`` cohort (module docstring): ``{"images": (n, 3, 1, H, W), "mask", "sum", "diff", "ids"}``."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, generator=g)  # z1, z2 signal; z3 nuisance
    eps = torch.randn(n, 2, generator=g) * latent_noise
    axis = torch.arange(image_size, dtype=torch.float32)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")

    def blob(fy: float, fx: float) -> torch.Tensor:
        cy, cx, sigma = fy * image_size, fx * image_size, image_size / 10
        return torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))

    def view(amplitudes: torch.Tensor, places: list[tuple[float, float]]) -> torch.Tensor:
        shapes = torch.stack([blob(*p) for p in places])  # k H W
        clean = torch.einsum("nk,khw->nhw", amplitudes, shapes)
        return clean + pixel_noise * torch.randn(clean.shape, generator=g)

    key = view(z[:, :2], [(0.3, 0.3), (0.7, 0.7)])
    left = view(torch.stack([z[:, 0] + eps[:, 0], z[:, 2]], 1), [(0.5, 0.25), (0.25, 0.75)])
    right = view(torch.stack([z[:, 1] + eps[:, 1], z[:, 2]], 1), [(0.75, 0.5), (0.3, 0.6)])
    diff = z[:, 0] - z[:, 1]
    bounds = torch.tensor([-0.431, 0.431]) * math.sqrt(2.0)  # tertiles of N(0, 2)
    return {
        "images": torch.stack([key, left, right], 1).unsqueeze(2),
        "mask": torch.ones(n, 3, dtype=torch.bool),
        "sum": (z[:, 0] + z[:, 1] > 0).long(),
        "diff": torch.bucketize(diff, bounds),
        "ids": [f"{prefix}{i}" for i in range(n)],
    }


def load_embed_split(cohort, split: str, spec: dict, image_size: int, limit: int | None = None) -> dict:
    """``{"images": (N, M, 1, H, W) float (NaN = absent), "mask": (N, M) bool, task: (N,) long, "ids": list}``."""
    from medmoe.transforms import CanonicalSided, CropBreastd, LoadMammogramd, ResizeKeepAspectd
    from monai.transforms import Compose

    from medmoe.data import FillMissingModalitiesd

    keys, size = spec["modalities"], [image_size, image_size]
    transform = Compose(
        [
            LoadMammogramd(keys=keys, allow_missing_keys=True),
            CanonicalSided(keys=keys, allow_missing_keys=True),
            CropBreastd(keys=keys, allow_missing_keys=True),
            ResizeKeepAspectd(keys=keys, spatial_size=size, allow_missing_keys=True),
            FillMissingModalitiesd(keys=keys, shape=[1, *size]),
        ]
    )
    records = cohort.records(split)[:limit]
    samples = [transform(r) for r in records]
    out = {
        "images": torch.stack(
            [torch.stack([torch.as_tensor(np.asarray(s[k]), dtype=torch.float32) for k in keys]) for s in samples]
        ),
        "mask": torch.as_tensor(np.stack([np.asarray(s["modality_mask"], dtype=bool) for s in samples])),
        "ids": [str(r["exam_id"]) for r in records],
    }
    for task in spec["tasks"]:
        out[task] = torch.tensor([int(s[task]) for s in samples], dtype=torch.long)
    return out


def load_splits(spec: dict, image_size: int, limit: int | None = None, seed: int = 0) -> tuple[dict, str]:
    """``({"train", "val", "test"}: data, source description)`` of the cohort ``spec``."""
    if "sizes" in spec:  # synthetic views
        splits = {
            name: synthetic_views(min(n, limit or n), 10_000 * (seed + 1) + k, image_size, prefix=f"{name}-")
            for k, (name, n) in enumerate(spec["sizes"].items())
        }
        return splits, f"synthetic_views(seed={seed})"
    from medmoe.data import embed_demo_cohort, load_cohort

    csv_path = embed_demo_cohort()
    cohort = load_cohort(str(csv_path), modalities=spec["modalities"], tasks=spec["tasks"], id_column="exam_id")
    return {s: load_embed_split(cohort, s, spec, image_size, limit) for s in ("train", "val", "test")}, str(csv_path)


def concat(*splits: dict) -> dict:
    """One data dict of several (images, mask, ids and every task label concatenated)."""
    out = {"ids": [i for s in splits for i in s["ids"]]}
    for key in splits[0]:
        if key != "ids":
            out[key] = torch.cat([s[key] for s in splits])
    return out


def remove_view(data: dict, rate: float, seed: int, column: int) -> dict:
    """Copy of ``data`` with view ``column`` absent (NaN, mask False) in the first ``round(rate N)`` exams of a
    seeded permutation (so the removed sets are nested across rates for one seed)."""
    n = data["mask"].shape[0]
    picked = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: int(round(rate * n))]
    images, mask = data["images"].clone(), data["mask"].clone()
    images[picked, column] = float("nan")
    mask[picked, column] = False
    return {**data, "images": images, "mask": mask}


def batch_of(
    data: dict,
    index: torch.Tensor,
    spec: dict,
    augment: torch.Generator | None = None,
    dropout: float = 0.0,
) -> dict:
    """A model batch of exams ``index``; with ``augment``: random intensity scaling per view
    (RandScaleIntensityd(factors=0.1, prob=0.5)) and the removed view dropped with probability ``dropout``."""
    images, mask = data["images"][index], data["mask"][index]
    if augment is not None:
        b, m = images.shape[:2]
        factor = 1 + (torch.rand(b, m, generator=augment) * 0.2 - 0.1)
        apply = torch.rand(b, m, generator=augment) < 0.5
        images = images * torch.where(apply, factor, torch.ones_like(factor)).view(b, m, 1, 1, 1)
        if dropout > 0:
            drop = torch.rand(b, generator=augment) < dropout
            col = spec["modalities"].index(spec["removed"])
            images[drop, col] = float("nan")
            mask = mask.clone()
            mask[drop, col] = False
    batch = {k: images[:, i] for i, k in enumerate(spec["modalities"])}
    batch["modality_mask"] = mask
    batch["id"] = [data["ids"][i] for i in index.tolist()]
    for task in spec["tasks"]:
        batch[task] = data[task][index]
    return batch


def build(mode: str, spec: dict, image_size: int, retriever: dict | None = None) -> torch.nn.Module:
    """M4oE of the cohort's size with missing-modality ``mode`` (retriever options from ``retriever``)."""
    missing, retriever_mode = MODES[mode]
    kwargs = {}
    if retriever_mode:
        options = {k: v for k, v in (retriever or {}).items() if k not in ("masked_retrieval", "reconstruction_weight")}
        if mode in RESIDUAL:
            options["support_residual"] = True
        if mode in MASKED:
            options["masked_retrieval"] = (retriever or {}).get("masked_retrieval", 0.5)
        if retriever_mode != "moe":
            options = {}
        if retriever_mode == "public_mean" and retriever:
            options = {k: v for k, v in retriever.items() if k in ("num_supports", "capacity")}
        if retriever_mode in ("moe", "public_mean"):
            options["support_selection"] = "random" if mode in RANDOM_SUPPORTS else "nearest"
        kwargs = {"retriever_kwargs": {"mode": retriever_mode, "id_key": "id", **options}}
    return create_model(
        "m4oe",
        modalities=spec["modalities"],
        tasks=spec["tasks"],
        image_size=[image_size, image_size],
        missing_modality=missing,
        **spec["network"],
        **kwargs,
    )


def train(
    mode: str,
    data: dict,
    spec: dict,
    epochs: int,
    image_size: int,
    seed: int,
    batch_size: int = 16,
    dropout: float = 0.0,
    retriever: dict | None = None,
    reconstruction_weight: float = 0.5,
) -> torch.nn.Module:
    """Train one M4oE (module docstring) and return it."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    model = build(mode, spec, image_size, retriever)
    aux = {"mutual_information": -0.05}
    if MODES[mode][0] == "retriever":
        aux.update(retriever_importance=0.01, retriever_balance=0.01)
    if mode in MASKED:
        aux["retriever_reconstruction"] = reconstruction_weight
    tasks = spec["tasks"]
    loss_fn = MultiTaskLoss(tasks, aux_weights=aux)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    prepare = MultimodalPrepareBatch(spec["modalities"], tasks, id_key="id")
    g = torch.Generator().manual_seed(seed)
    n = data["mask"].shape[0]
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(n, generator=g).split(batch_size):
            inputs, targets = prepare(batch_of(data, index, spec, augment=g, dropout=dropout))
            loss = loss_fn(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    return model


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: dict, spec: dict, batch_size: int = 64) -> dict:
    """``{task: AUROC, "mean": mean over tasks with a defined AUROC}``."""
    model.eval()
    tasks = spec["tasks"]
    prepare = MultimodalPrepareBatch(spec["modalities"], tasks)  # no ids: evaluation never touches the bank
    probs = {t: [] for t in tasks}
    for index in torch.arange(data["mask"].shape[0]).split(batch_size):
        inputs, _ = prepare(batch_of(data, index, spec))
        out = model(inputs)
        for t in tasks:
            probs[t].append(out[t].float().softmax(1))
    scores = {}
    for t in tasks:
        p, y = torch.cat(probs[t]), data[t]
        keep = y >= 0
        scores[t] = auroc(p[keep], y[keep])
    finite = [v for v in scores.values() if not math.isnan(v)]
    scores["mean"] = float(np.mean(finite)) if finite else float("nan")
    return scores


def evaluate_rates(model, sets: dict, spec: dict, rates, seeds: int) -> dict:
    """``{set: {rate: {task / "mean": AUROC averaged over removal seeds, "mean_std": std over seeds}}}``."""
    column = spec["modalities"].index(spec["removed"])
    out = {}
    for name, data in sets.items():
        out[name] = {}
        for rate in rates:
            runs = [
                evaluate(model, remove_view(data, rate, 1000 + s, column), spec)
                for s in range(seeds if rate > 0 else 1)
            ]
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
    """Mean AUROC on ``pooled`` vs test-time missing rate, one line per mode and setting, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = results["config"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for key, style in (("test_time", "-o"), ("train_time", "--s")):
        for i, (mode, res) in enumerate(results.get(key, {}).items()):
            rows = res["eval"][pooled]
            rates = sorted(rows, key=float)
            label = mode if key == "test_time" else f"{mode} (train {res['train_missing']:.0%} missing)"
            x, y = [100 * float(r) for r in rates], [rows[r]["mean"] for r in rates]
            ax.plot(x, y, style, color=f"C{i}", label=label)
    ax.set_xlabel(f"test exams with {config['removed_modality']} removed (%)")
    ax.set_ylabel(f"mean AUROC ({pooled})")
    ax.set_title(f"M4oE missing-modality fill-in modes ({config['cohort']} cohort)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def table(results: dict, pooled: str) -> str:
    """The results as text: one block per setting and evaluation set, one row per mode."""
    lines = []
    removed = results["config"]["removed_modality"]
    for key in ("test_time", "train_time"):
        for set_name in ("test", pooled):
            block = results.get(key, {})
            if not block:
                continue
            rates = sorted(next(iter(block.values()))["eval"][set_name], key=float)
            head = f"[{key} removal of {removed}] mean AUROC on {set_name} vs test-time missing rate"
            lines += [head, f"{'mode':<12}" + "".join(f"{float(r) * 100:>8.0f}%" for r in rates)]
            for mode, res in block.items():
                rows = res["eval"][set_name]
                cells = "".join(f"{rows[r]['mean']:>9.3f}" for r in rates)
                stds = " ".join(f"{rows[r]['mean_seed_std']:.3f}" for r in rates)
                lines.append(f"{mode:<12}{cells}   (seed std {stds})")
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Command line entry point (see the module docstring); returns the results dict it writes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", default="views", choices=list(COHORTS))
    parser.add_argument("--out", default=None, help="default benchmarks/results/missing_modality[_embed].json")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=None, help="default: the cohort's (views 32, embed 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-seeds", type=int, default=3, help="models trained per mode (seed, seed + 1, ...)")
    parser.add_argument("--removal-seeds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--train-dropout", type=float, default=0.0, help="per-batch drop rate of the view (test_time)")
    parser.add_argument("--train-missing", type=float, default=0.5, help="train-time removal rate (0 = skip)")
    parser.add_argument(
        "--settings", nargs="+", default=["test_time", "train_time"], choices=["test_time", "train_time"]
    )
    parser.add_argument("--num-supports", type=int, default=8)
    parser.add_argument("--num-candidates", type=int, default=2)
    parser.add_argument("--num-shared", type=int, default=2)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--capacity", type=int, default=512)
    parser.add_argument("--masked-retrieval", type=float, default=0.5, help="moe_masked*: hide probability")
    parser.add_argument("--reconstruction-weight", type=float, default=0.5, help="moe_masked*: loss weight")
    parser.add_argument("--time-budget", type=float, default=1e9, help="seconds; train-time runs start only if left")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 24 exams per split, 1 epoch, 32 x 32")
    args = parser.parse_args(argv)
    spec = COHORTS[args.cohort]
    torch.set_num_threads(args.threads)
    image_size = args.image_size or spec["image_size"]
    limit = None
    if args.quick:
        args.epochs, image_size, args.removal_seeds, args.train_seeds, limit = 1, 32, 1, 1, 24
    retriever = {
        "num_supports": args.num_supports,
        "num_candidates": args.num_candidates,
        "num_shared": args.num_shared,
        "top_k": args.top_k,
        "capacity": args.capacity,
        "masked_retrieval": args.masked_retrieval,
        "reconstruction_weight": args.reconstruction_weight,
    }
    start = time.perf_counter()
    splits, source = load_splits(spec, image_size, limit, args.seed)
    pooled = "val+test"
    sets = {"test": splits["test"], pooled: concat(splits["val"], splits["test"])}
    column = spec["modalities"].index(spec["removed"])
    sizes = ", ".join(f"{k}={v['mask'].shape[0]}" for k, v in splits.items())
    print(
        f"{args.cohort}: loaded {sizes} exams in {time.perf_counter() - start:.1f}s; {spec['removed']} naturally "
        f"present in {sets[pooled]['mask'][:, column].float().mean():.0%} of val+test",
        flush=True,
    )
    results = {
        "config": {
            "cohort": args.cohort,
            "source": source,
            "modalities": spec["modalities"],
            "tasks": spec["tasks"],
            "removed_modality": spec["removed"],
            "test_rates": list(TEST_RATES),
            "train_dropout": args.train_dropout,
            "train_missing": args.train_missing,
            "epochs": args.epochs,
            "image_size": image_size,
            "seed": args.seed,
            "train_seeds": args.train_seeds,
            "removal_seeds": args.removal_seeds,
            "network": spec["network"],
            "retriever": retriever,
            "modes": {
                m: {
                    "missing_modality": MODES[m][0],
                    "retriever_mode": MODES[m][1],
                    "support_selection": (
                        ("random" if m in RANDOM_SUPPORTS else "nearest")
                        if MODES[m][1] in ("moe", "public_mean")
                        else None
                    ),
                    "masked_retrieval": m in MASKED,
                    "support_residual": m in RESIDUAL,
                }
                for m in args.modes
            },
            "split_sizes": {k: int(v["mask"].shape[0]) for k, v in {**splits, **sets}.items()},
            "metric": "macro one-vs-rest AUROC per task and mean over tasks; averaged over removal seeds",
            "quick": args.quick,
        },
        "test_time": {},
        "train_time": {},
    }
    suffix = "" if args.cohort == "views" else f"_{args.cohort}"
    out = Path(args.out or f"benchmarks/results/missing_modality{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        results["runtime_s"] = round(time.perf_counter() - start, 1)
        atomic_write_text(out, json.dumps(results, indent=2) + "\n")
        plot(results, out.with_suffix(".png"), pooled)

    runs = [("test_time", m, 0.0) for m in args.modes] if "test_time" in args.settings else []
    if args.train_missing > 0 and "train_time" in args.settings:
        runs += [("train_time", m, args.train_missing) for m in args.modes]
    for key, mode, train_rate in runs:
        elapsed = time.perf_counter() - start
        if key == "train_time" and elapsed > args.time_budget:
            print(f"skip {key}/{mode}: time budget spent ({elapsed:.0f}s)", flush=True)
            results.setdefault("skipped", []).append(f"{key}/{mode}")
            continue
        if key == "train_time":
            train_data, dropout = remove_view(splits["train"], train_rate, args.seed + 7, column), 0.0
        else:
            train_data, dropout = splits["train"], args.train_dropout
        per_seed, train_s = [], []
        for seed in range(args.seed, args.seed + args.train_seeds):
            t0 = time.perf_counter()
            model = train(
                mode,
                train_data,
                spec,
                args.epochs,
                image_size,
                seed,
                dropout=dropout,
                retriever=retriever,
                reconstruction_weight=args.reconstruction_weight,
            )
            train_s.append(round(time.perf_counter() - t0, 1))
            per_seed.append(evaluate_rates(model, sets, spec, TEST_RATES, args.removal_seeds))
        res = average_seeds(per_seed)
        results[key][mode] = {
            "train_missing": train_rate,
            "train_dropout": dropout,
            "train_s": train_s,
            "eval": res,
            "per_seed": per_seed,
        }
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
