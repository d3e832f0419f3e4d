"""Synthetic example inputs for the evaluation apps, and the script that renders the docs' example report.

``python -m medmoe.apps.evaluate.example OUT_DIR [--docs-img docs/img]`` writes example CSVs and masks, runs
both sub-commands on them into ``OUT_DIR/{auroc,dice}`` and, with ``--docs-img``, copies the main plots to
``docs/img/evaluation_*.png``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["make_classification_example", "make_segmentation_example"]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def make_classification_example(out_dir: str | Path, n: int = 600, seed: int = 0) -> dict[str, Path]:
    """Write ``labels.csv``, ``predictions.csv`` and ``baseline.csv`` for a synthetic mammography-like cohort.

    Tasks: ``malignancy`` (binary, ``_prob_0/1``), ``density`` (4 classes), multi-label ``findings:mass,calc``;
    columns ``site`` (subgroups) and ``split`` (``val`` / ``test``). The baseline model is noisier.

    Returns:
        ``{"labels", "predictions", "baseline"}`` paths.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = [f"case{i:04d}" for i in range(n)]
    site = rng.choice(["A", "B", "C"], n, p=[0.5, 0.3, 0.2])
    malig = (rng.random(n) < 0.3).astype(int)
    density = rng.choice(4, n, p=[0.1, 0.4, 0.4, 0.1])
    mass, calc = (rng.random(n) < 0.25).astype(int), (rng.random(n) < 0.15).astype(int)
    labels = pd.DataFrame(
        {
            "id": ids,
            "malignancy": malig.astype(float),
            "density": density,
            "findings_mass": mass,
            "findings_calc": calc,
            "site": site,
            "split": np.where(rng.random(n) < 0.3, "val", "test"),
        }
    )
    labels.loc[rng.choice(n, 8, replace=False), "malignancy"] = np.nan  # a few missing labels

    def predict(noise: float) -> pd.DataFrame:
        shift = np.where(site == "C", 0.6, 1.0)  # a site where the model is weaker
        logit = (2.2 * malig - 1.2) * shift + noise * rng.normal(size=n)
        p1 = 1 / (1 + np.exp(-(logit * 1.3 - 0.3)))  # slightly over-confident
        dens = _softmax(np.eye(4)[density] * 1.6 + noise * rng.normal(size=(n, 4)))
        pm = 1 / (1 + np.exp(-(2.5 * mass - 1.5 + noise * rng.normal(size=n))))
        pc = 1 / (1 + np.exp(-(2.0 * calc - 1.8 + noise * rng.normal(size=n))))
        cols = {"id": ids, "malignancy_prob_0": 1 - p1, "malignancy_prob_1": p1}
        cols |= {f"density_prob_{k}": dens[:, k] for k in range(4)}
        return pd.DataFrame(cols | {"findings_prob_mass": pm, "findings_prob_calc": pc})

    paths = {"labels": out / "labels.csv", "predictions": out / "predictions.csv", "baseline": out / "baseline.csv"}
    labels.to_csv(paths["labels"], index=False)
    predict(1.0).to_csv(paths["predictions"], index=False)
    predict(1.6).to_csv(paths["baseline"], index=False)
    return paths


def _ball(shape: tuple[int, ...], center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    return (((grid - center) / radii) ** 2).sum(-1) <= 1.0


def make_segmentation_example(out_dir: str | Path, n: int = 12, size: int = 32, seed: int = 0) -> Path:
    """Write NIfTI truth / prediction masks (labels 1 and 2, spacing 0.8 x 0.8 x 2 mm) and ``pairs.csv``.

    Returns:
        The ``pairs.csv`` path (columns ``id, prediction, truth, site``).
    """
    import nibabel as nib

    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    for sub in ("pred", "truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    shape = (size, size, size // 2)
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    rows = []
    for i in range(n):
        c = np.array(shape) / 2 + rng.normal(0, 1.5, 3)
        r = np.array([size / 4, size / 5, size / 8]) * rng.uniform(0.8, 1.2, 3)
        truth = _ball(shape, c, r).astype(np.uint8)
        truth[_ball(shape, c + [2, 0, 0], r / 2)] = 2
        quality = 0.5 if i % 4 == 3 else 1.0
        cp = c + rng.normal(0, 0.6 / quality, 3)
        pred = _ball(shape, cp, r * rng.uniform(0.9, 1.1, 3)).astype(np.uint8)
        pred[_ball(shape, cp + [2, 0, 0], r / 2 * rng.uniform(0.8, 1.2))] = 2
        if i % 6 == 5:  # a spurious blob far away
            pred[_ball(shape, np.array([3, 3, 2]), np.array([2, 2, 1]))] = 1
        name = f"case{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(truth, affine), str(out / "truth" / name))
        nib.save(nib.Nifti1Image(pred, affine), str(out / "pred" / name))
        rows.append(
            {
                "id": f"case{i:02d}",
                "prediction": f"pred/{name}",
                "truth": f"truth/{name}",
                "site": "A" if i % 2 else "B",
            }
        )
    pairs = out / "pairs.csv"
    pd.DataFrame(rows).to_csv(pairs, index=False)
    return pairs


def _worst_case(per_case_csv: Path) -> str:
    per_case = pd.read_csv(per_case_csv, dtype={"id": str})
    return str(per_case.groupby("id")["dice"].mean().idxmin())


def main(argv: list[str] | None = None) -> int:
    """Generate the examples, run both sub-commands, optionally copy plots to the docs."""
    from .__main__ import main as cli

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out_dir")
    p.add_argument("--docs-img", default=None, help="copy the main plots here as evaluation_*.png")
    p.add_argument("--n-bootstrap", type=int, default=1000)
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    cls = make_classification_example(out / "inputs")
    rc = cli(
        [
            "auroc",
            "--predictions",
            str(cls["predictions"]),
            "--labels",
            str(cls["labels"]),
            "--multilabel",
            "findings:mass,calc",
            "--threshold-split",
            "val",
            "--group-by",
            "site",
            "--compare-with",
            str(cls["baseline"]),
            "--n-bootstrap",
            str(args.n_bootstrap),
            "--out-dir",
            str(out / "auroc"),
            "--title",
            "Example: synthetic mammography cohort",
        ]
    )
    pairs = make_segmentation_example(out / "masks")
    rc |= cli(
        [
            "dice",
            "--pairs",
            str(pairs),
            "--group-by",
            "site",
            "--n-bootstrap",
            str(args.n_bootstrap),
            "--out-dir",
            str(out / "dice"),
            "--title",
            "Example: synthetic 3D masks",
        ]
    )
    if args.docs_img and rc == 0:
        img = Path(args.docs_img)
        img.mkdir(parents=True, exist_ok=True)
        picks = {
            "roc": out / "auroc/roc_density.png",
            "pr": out / "auroc/pr_malignancy.png",
            "calibration": out / "auroc/calibration_malignancy.png",
            "groups": out / "auroc/groups_malignancy.png",
            "overlay": out / f"dice/overlay_{_worst_case(out / 'dice/per_case.csv')}.png",
        }
        for name, src in picks.items():
            shutil.copyfile(src, img / f"evaluation_{name}.png")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
