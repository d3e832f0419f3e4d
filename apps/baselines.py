"""Does the mixture of experts beat the plain model on my cohort? Train both over k seeds and compare.

Usage::

    python -m medmoe.apps.baselines --bundle bundles/gamma_m4oe --seeds 0 1 2
    python -m medmoe.apps.baselines --bundle bundles/embed_m4oe --seeds 0 1 2 \\
        --configs baseline_dense_vit.json --cohort_csv mine.csv --data_root /data --readme

For every seed, ``configs/train.json`` (the MoE model) and each baseline config (``configs/baseline_*.json``,
overriding train.json by id) are trained with ``python -m monai.bundle run`` and scored on the test split with
``configs/evaluate.json`` layered on top; each run has its own folder ``<out_dir>/<config>/seed<k>/`` (models,
eval, logs). Then per baseline the model vs baseline table of :mod:`medmoe.metrics.seed_table` (mean +- sd over
seeds, and the paired difference of the seed ensembles with its interval and p-value) goes to
``<out_dir>/baselines.md`` and ``baselines.json``, and the seed ensembles' paired comparison with both models' ROC
curves per task / class to ``<out_dir>/compare_<baseline>/`` (``comparison.md``, ``roc_*.png``); ``--readme``
also puts the table into the bundle's docs/README.md between the ``<!-- baselines:start -->`` and
``<!-- baselines:end -->`` markers.

Any other ``--key value`` is passed to every run as a config override (``--max_epochs 5``, ``--cohort_csv ...``).
A run whose evaluation already exists is reused (``--rerun`` trains again), so an interrupted comparison goes on
where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from medmoe.metrics.seed_table import seed_comparison, seed_table_markdown
from medmoe.utils.atomic import atomic_write_text

__all__ = ["main", "run_config"]

START, END = "<!-- baselines:start -->", "<!-- baselines:end -->"


def _config_list(folder: Path, names: Sequence[str]) -> str:
    return "[" + ",".join(f"'{folder / n}'" for n in names) + "]"


def run_config(
    bundle: Path, config: str, seed: int, run_dir: Path, overrides: Sequence[str], rerun: bool, timeout: float
) -> Path:
    """Train ``config`` (over train.json) at ``seed`` into ``run_dir`` and evaluate it; return its eval folder.

    Raises:
        RuntimeError: a run that fails, naming the command and the log file with its output.
    """
    folder = bundle / "configs"
    eval_dir = run_dir / "eval"
    if (eval_dir / "predictions.csv").exists() and not rerun:
        return eval_dir
    layers = ["train.json"] + ([] if config == "train.json" else [config])
    paths = [f"--{k}" for k in ("ckpt_dir", "output_dir", "log_dir")]
    dirs = [str(run_dir / "models"), str(eval_dir), str(run_dir / "logs")]
    common = [f for pair in zip(paths, dirs, strict=True) for f in pair] + ["--seed", str(seed), *overrides]
    run_dir.mkdir(parents=True, exist_ok=True)
    for step, files in (("train", layers), ("evaluate", [*layers, "evaluate.json"])):
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", _config_list(folder, files), *common]
        log = run_dir / f"{step}.log"
        started = time.perf_counter()
        with open(log, "w") as out:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, env=os.environ.copy())
        if proc.returncode != 0:
            raise RuntimeError(f"{step} of {config} at seed {seed} failed (exit {proc.returncode}); output in {log}\n"
                               f"command: {' '.join(cmd)}")  # fmt: skip
        print(f"  {config} seed {seed}: {step} done in {time.perf_counter() - started:.0f} s", flush=True)
    return eval_dir


def _read(path: Path, id_column: str, split: str) -> pd.DataFrame:
    """A run's per-case table; where it holds several splits (val rows choose thresholds), the ``split`` rows."""
    df = pd.read_csv(path, dtype={id_column: str})
    if "split" in df.columns:
        df = df[df["split"].astype(str) == split].drop(columns="split").reset_index(drop=True)
        if df.empty:
            raise ValueError(f"{path} has no rows of split {split!r}")
    return df


def _model_name(config: str, bundle: Path) -> str:
    if config == "train.json":
        return bundle.name.rsplit("_", 1)[-1]  # embed_m4oe -> m4oe
    return Path(config).stem.removeprefix("baseline_")


def _update_readme(readme: Path, table: str, command: str) -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} markers; add them where the table should go")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    block = f"{START}\nProduced by `{command}`.\n\n{table}{END}"
    atomic_write_text(readme, head + block + tail)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m medmoe.apps.baselines", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--bundle", required=True, help="bundle folder, e.g. bundles/gamma_m4oe")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--configs", nargs="+", default=None,
                        help="baseline configs in the bundle's configs/ (default: every baseline_*.json)")  # fmt: skip
    parser.add_argument("--out_dir", default=None, help="where the runs go (default runs/<bundle name>)")
    parser.add_argument("--n_bootstrap", type=int, default=2000, help="paired bootstrap resamples (default 2000)")
    parser.add_argument("--split", default="test", help="the split compared (default test)")
    parser.add_argument("--rerun", action="store_true", help="train again even where a run's evaluation exists")
    parser.add_argument("--readme", action="store_true", help="write the table into the bundle's docs/README.md")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per training or evaluation run")
    args, overrides = parser.parse_known_args(argv)
    if any(not o.startswith("--") for o in overrides[::2]) or len(overrides) % 2:
        parser.error(f"config overrides must be --key value pairs, got {overrides}")
    bundle = Path(args.bundle)
    folder = bundle / "configs"
    if not (folder / "train.json").is_file():
        parser.error(f"{folder / 'train.json'} not found: --bundle must be a bundle folder")
    baselines = args.configs or sorted(p.name for p in folder.glob("baseline_*.json"))
    missing = [c for c in baselines if not (folder / c).is_file()]
    if not baselines or missing:
        parser.error(f"baseline config(s) not found in {folder}: {missing or 'no baseline_*.json'}")
    out = Path(args.out_dir or Path("runs") / bundle.name)
    configs = ["train.json", *baselines]
    print(f"{len(configs)} configs x {len(args.seeds)} seeds into {out}", flush=True)
    evals = {c: [run_config(bundle, c, s, out / Path(c).stem / f"seed{s}", overrides, args.rerun, args.timeout)
                 for s in args.seeds] for c in configs}  # fmt: skip
    first = pd.read_csv(evals["train.json"][0] / "predictions.csv", nrows=0).columns[0]  # the bundle's id column
    seg = lambda c: [e / "segmentation.csv" for e in evals[c]]  # noqa: E731
    read = lambda p: _read(p, first, args.split)  # noqa: E731
    results, names = {}, {}
    for config in baselines:
        names[config] = (_model_name("train.json", bundle), _model_name(config, bundle))
        segmentation = None
        if all(p.exists() for p in seg("train.json") + seg(config)):
            segmentation = ([read(p) for p in seg("train.json")], [read(p) for p in seg(config)])
        results[config] = seed_comparison(
            [read(e / "predictions.csv") for e in evals["train.json"]],
            [read(e / "predictions.csv") for e in evals[config]],
            first, names[config], segmentation, args.n_bootstrap, report_dir=out / f"compare_{Path(config).stem}",
        )  # fmt: skip
    table = seed_table_markdown(results, names, len(args.seeds))
    command = " ".join(["python -m medmoe.apps.baselines", *(argv if argv is not None else sys.argv[1:])])
    atomic_write_text(out / "baselines.md", table)
    atomic_write_text(out / "baselines.json", json.dumps({"command": command, "seeds": args.seeds,
                                                          "results": results}, indent=2))  # fmt: skip
    print(table)
    if args.readme:
        _update_readme(bundle / "docs" / "README.md", table, command.replace(" --readme", ""))
    return results


if __name__ == "__main__":
    try:
        main()
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
