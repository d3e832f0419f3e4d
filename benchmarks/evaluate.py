"""Speed of the evaluation apps: bootstrap AUROC on 100,000 cases and Dice/HD95/ASSD on 100 volumes of 128^3.

Run: ``python benchmarks/evaluate.py [--out benchmarks/results/evaluate.json] [--quick]``.

Compared side by side in one run against references: a Python loop of ``sklearn.metrics.roc_auc_score`` over
resamples, and MONAI's DiceMetric + HausdorffDistanceMetric(95) + SurfaceDistanceMetric (both timed on a
subset and extrapolated linearly; the extrapolation is stated in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np

from medmoe.metrics import bootstrap, case_metrics, evaluate_classification, weighted_auroc


def _timeit(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_auroc(n: int, n_resamples: int, ref_resamples: int) -> dict:
    """Stratified bootstrap of AUROC alone, of every classification metric, and the sklearn loop reference."""
    import pandas as pd

    rng = np.random.default_rng(0)
    y = rng.random(n) < 0.3
    s = rng.normal(size=n) + 1.2 * y
    p1 = 1 / (1 + np.exp(-s))
    out: dict = {"n_cases": n, "n_resamples": n_resamples}
    res = {}
    out["auroc_only_s"] = _timeit(
        lambda: res.update(bootstrap(lambda w: {"auroc": weighted_auroc(s, y, w)}, n, y, n_resamples, seed=0))
    )
    out["auroc"] = dict(zip(("value", "ci_low", "ci_high"), res["auroc"]))
    df = pd.DataFrame({"id": np.arange(n), "t": y.astype(int), "t_prob_0": 1 - p1, "t_prob_1": p1})
    out["all_metrics_s"] = _timeit(lambda: evaluate_classification(df, n_bootstrap=n_resamples, seed=0))
    out["all_metrics"] = "auroc, auprc, accuracy, balanced acc., sensitivity, specificity, ece (shared resamples)"
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        return out
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)

    def loop() -> None:
        r = np.random.default_rng(1)
        for _ in range(ref_resamples):
            idx = np.r_[r.choice(pos, pos.size), r.choice(neg, neg.size)]
            roc_auc_score(y[idx], s[idx])

    t = _timeit(loop)
    out["reference_sklearn_loop"] = {
        "timed_resamples": ref_resamples,
        "timed_s": t,
        "extrapolated_s": t * n_resamples / ref_resamples,
    }
    out["speedup_vs_sklearn_loop"] = out["reference_sklearn_loop"]["extrapolated_s"] / out["auroc_only_s"]
    return out


def _volume_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.ogrid[:size, :size, :size]
    c = size / 2 + rng.normal(0, 3, 3)
    r = size * rng.uniform(0.2, 0.3)
    truth = (sum((gi - ci) ** 2 for gi, ci in zip(g, c)) <= r**2).astype(np.uint8)
    truth[sum((gi - ci) ** 2 for gi, ci in zip(g, c + [r / 3, 0, 0])) <= (r / 2.5) ** 2] = 2
    cp = c + rng.normal(0, 2, 3)
    rp = r * rng.uniform(0.9, 1.1)
    pred = (sum((gi - ci) ** 2 for gi, ci in zip(g, cp)) <= rp**2).astype(np.uint8)
    pred[sum((gi - ci) ** 2 for gi, ci in zip(g, cp + [rp / 3, 0, 0])) <= (rp / 2.5) ** 2] = 2
    return pred, truth


def bench_dice(n: int, size: int, ref_cases: int) -> dict:
    """Per-case Dice, IoU, HD95 and ASSD for labels 1 and 2 (spacing 0.8 x 0.8 x 1.5) and the MONAI reference."""
    rng = np.random.default_rng(0)
    spacing = (0.8, 0.8, 1.5)
    vols = [_volume_pair(rng, size) for _ in range(n)]
    results = []
    t = _timeit(lambda: results.extend(case_metrics(p, g, [1, 2], spacing) for p, g in vols))
    out = {
        "n_volumes": n,
        "shape": [size] * 3,
        "labels": [1, 2],
        "metrics": ["dice", "iou", "hd95", "assd"],
        "total_s": t,
        "per_volume_ms": 1000 * t / n,
        "mean_dice_label1": float(np.mean([r[1]["dice"] for r in results])),
    }
    try:
        import torch
        from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDistanceMetric
        from monai.networks.utils import one_hot
    except ImportError:
        return out
    metrics = (
        DiceMetric(include_background=False),
        HausdorffDistanceMetric(include_background=False, percentile=95),
        SurfaceDistanceMetric(include_background=False, symmetric=True),
    )

    def monai_loop() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for p, g in vols[:ref_cases]:
                pt = one_hot(torch.as_tensor(p)[None, None].long(), 3)
                gt = one_hot(torch.as_tensor(g)[None, None].long(), 3)
                for m in metrics:
                    m(pt, gt, spacing=spacing) if not isinstance(m, DiceMetric) else m(pt, gt)

    tm = _timeit(monai_loop)
    out["reference_monai"] = {"timed_volumes": ref_cases, "timed_s": tm, "extrapolated_s": tm * n / ref_cases}
    out["speedup_vs_monai"] = out["reference_monai"]["extrapolated_s"] / t
    return out


def main() -> None:
    """Run both benchmarks, print and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="benchmarks/results/evaluate.json")
    p.add_argument("--quick", action="store_true", help="10x smaller sizes (smoke test)")
    args = p.parse_args()
    k = 10 if args.quick else 1
    result = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
        },
        "auroc_bootstrap": bench_auroc(100_000 // k, 1000 // k, 20 // min(k, 4)),
        "dice": bench_dice(100 // k, 128, 10 // min(k, 5)),
    }
    text = json.dumps(result, indent=2)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
