"""Command line: ``python -m medmoe.apps.evaluate {auroc,dice,compare} ...`` (see docs/evaluation.md).

Argument parsing and file reading only; the statistics, reports and plots are :mod:`medmoe.metrics`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import pandas as pd

from medmoe.metrics import (
    compare_classification,
    compare_segmentation,
    comparison_report,
    evaluate_classification,
    evaluate_segmentation,
    join_predictions,
    pairs_from_csv,
    pairs_from_folders,
    write_report,
)
from medmoe.utils.csv_cells import unescape_cell

_EPILOG_AUROC = """
CSV conventions (id column --id-column, default 'id'; ids joined as strings):
  labels       column T: integer class 0..K-1, empty = missing (ignored)
  predictions  T_prob_0 .. T_prob_<K-1> (K=2: binary, score = T_prob_1; K>2: multi-class)
               or T_score (binary, any real score, larger = class 1)
  multi-label  --multilabel T:a,b,c -> labels T_a, T_b, T_c (0/1), predictions T_prob_a, T_prob_b, T_prob_c

examples:
  python -m medmoe.apps.evaluate auroc --predictions pred.csv --labels cohort.csv --out-dir eval/
  python -m medmoe.apps.evaluate auroc --predictions pred.csv --labels cohort.csv --out-dir eval/ \\
      --threshold-split val --eval-split test --group-by site --compare-with baseline_pred.csv
"""

_EPILOG_DICE = """
masks: NIfTI (.nii/.nii.gz, spacing from the header) or PNG (spacing 1 unless --spacing); integer labels,
0 = background. Pairs: two folders matched by file name, or a CSV with id, prediction and truth paths
(relative to the CSV's folder) plus optional subgroup columns.

examples:
  python -m medmoe.apps.evaluate dice --pred-dir pred/ --truth-dir labels/ --out-dir eval_seg/
  python -m medmoe.apps.evaluate dice --pairs pairs.csv --group-by site --labels 1 2 --out-dir eval_seg/
"""


_EPILOG_COMPARE = """
Two models' predictions on the same cases (the same ids on both sides), e.g. a bundle's eval/predictions.csv
of the mixture-of-experts model and of its baseline. Per task (and class, and --group-by subgroup): the AUROC
difference A - B with a paired stratified bootstrap interval and DeLong's p-value; with --segmentation-a/-b
(a bundle's eval/segmentation.csv) the mean per-case Dice / IoU difference with a paired bootstrap interval and
the Wilcoxon signed-rank p-value. A difference whose interval covers 0 reads "no evidence of a difference".

examples:
  python -m medmoe.apps.evaluate compare --a moe/eval/predictions.csv --b base/eval/predictions.csv \\
      --names m4oe dense_vit --out-dir compare/
  python -m medmoe.apps.evaluate compare --a moe/predictions.csv --b base/predictions.csv --labels cohort.csv \\
      --group-by site --segmentation-a moe/segmentation.csv --segmentation-b base/segmentation.csv --out-dir cmp/
"""


class _Progress:
    """Throttled progress lines on stderr (at most one per second per label, plus the last one)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.last: dict[str, float] = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if done >= total or now - self.last.get(label, 0.0) >= 1.0:
            self.last[label] = now
            print(f"  {label}: {done}/{total}", file=sys.stderr, flush=True)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-dir", required=True, help="output folder (metrics.json, report.md, CSVs, PNGs)")
    p.add_argument("--id-column", default="id", help="id column joining the CSVs (default: %(default)s)")
    p.add_argument(
        "--group-by",
        default=None,
        metavar="COLUMN",
        help="repeat every metric per value of this column (site, age band, density, ...)",
    )
    p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    p.add_argument("--ci", type=float, default=0.95, help="confidence level (default: %(default)s)")
    p.add_argument("--title", default=None, help="report title")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with the ``auroc`` and ``dice`` sub-commands."""
    parser = argparse.ArgumentParser(
        prog="python -m medmoe.apps.evaluate",
        description="Evaluate predictions of any model: classification (auroc) or segmentation (dice), with "
        "bootstrap confidence intervals, subgroups, plots, metrics.json and report.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser(
        "auroc",
        help="classification metrics (AUROC, AUPRC, accuracy, sens/spec, calibration)",
        epilog=_EPILOG_AUROC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("--predictions", required=True, help="predictions CSV (may also hold the labels)")
    a.add_argument("--labels", default=None, help="labels CSV (default: labels are in the predictions CSV)")
    a.add_argument("--tasks", nargs="+", default=None, help="tasks to evaluate (default: all found)")
    a.add_argument(
        "--multilabel",
        action="append",
        default=[],
        metavar="TASK:a,b,c",
        help="declare a multi-label task (repeatable)",
    )
    a.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="[TASK=]VALUE",
        help="decision threshold for binary / multi-label tasks, global or per task (repeatable)",
    )
    a.add_argument("--split-column", default="split", help="column with split names (default: %(default)s)")
    a.add_argument(
        "--threshold-split",
        default=None,
        metavar="NAME",
        help="choose thresholds on rows of this split (e.g. val); they are then excluded",
    )
    a.add_argument("--eval-split", default=None, metavar="NAME", help="evaluate only rows of this split (e.g. test)")
    a.add_argument(
        "--threshold-rule", default="youden", help="youden | sensitivity=0.9 | specificity=0.9 (default: %(default)s)"
    )
    a.add_argument(
        "--compare-with",
        default=None,
        metavar="CSV",
        help="predictions of a second model (same columns): DeLong's test of AUROC per task / class",
    )
    a.add_argument("--n-bins", type=int, default=10, help="calibration bins (default: %(default)s)")
    _add_common(a)
    d = sub.add_parser(
        "dice",
        help="segmentation metrics (Dice, IoU, HD95, ASSD) per label and case",
        epilog=_EPILOG_DICE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("--pred-dir", default=None, help="folder of predicted masks")
    d.add_argument("--truth-dir", default=None, help="folder of ground-truth masks (same file names)")
    d.add_argument("--pairs", default=None, metavar="CSV", help="CSV of id, prediction path, truth path")
    d.add_argument("--pred-column", default="prediction", help="prediction path column of --pairs")
    d.add_argument("--truth-column", default="truth", help="truth path column of --pairs")
    d.add_argument(
        "--metadata", default=None, metavar="CSV", help="CSV joined on the id column to provide --group-by columns"
    )
    d.add_argument(
        "--labels",
        type=int,
        nargs="+",
        default=None,
        help="label values to evaluate; other non-zero values are an error (default: all found)",
    )
    d.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        default=None,
        help="override the voxel spacing of every mask (e.g. PNG pixel size)",
    )
    d.add_argument("--n-worst", type=int, default=3, help="overlay PNGs of the worst cases (default: %(default)s)")
    d.add_argument("--workers", type=int, default=1, help="processes reading / scoring cases (default: 1)")
    _add_common(d)
    c = sub.add_parser(
        "compare",
        help="paired comparison of two models on the same cases (AUROC / Dice differences, CIs, p-values)",
        epilog=_EPILOG_COMPARE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("--a", required=True, metavar="CSV", help="predictions of model A (may hold the labels)")
    c.add_argument("--b", required=True, metavar="CSV", help="predictions of model B on the same ids")
    c.add_argument("--names", nargs=2, default=["A", "B"], metavar=("A", "B"), help="the two models' names")
    c.add_argument("--labels", default=None, help="labels CSV (default: the labels in --a)")
    c.add_argument("--tasks", nargs="+", default=None, help="tasks to compare (default: all found in both)")
    c.add_argument("--segmentation-a", default=None, metavar="CSV", help="per-case segmentation metrics of A")
    c.add_argument("--segmentation-b", default=None, metavar="CSV", help="per-case segmentation metrics of B")
    _add_common(c)
    return parser


def _run_compare(args: argparse.Namespace) -> dict:
    if (args.segmentation_a is None) != (args.segmentation_b is None):
        raise ValueError("give both --segmentation-a and --segmentation-b, or neither")
    read = lambda path: pd.read_csv(path, dtype={args.id_column: str})  # noqa: E731
    names = tuple(args.names)
    options = dict(id_column=args.id_column, names=names, n_resamples=args.n_bootstrap, seed=args.seed, ci=args.ci)
    labels = read(args.labels) if args.labels else None
    cls = compare_classification(read(args.a), read(args.b), labels, args.tasks, group_by=args.group_by, **options)
    seg = None
    if args.segmentation_a:
        seg = compare_segmentation(read(args.segmentation_a), read(args.segmentation_b), **options)
    return comparison_report(cls, seg, args.out_dir, args.ci)


def _parse_multilabel(specs: Sequence[str] | None) -> dict[str, list[str]]:
    """Parse ``["T:a,b,c", ...]`` into ``{"T": ["a", "b", "c"]}``; raise ``ValueError`` on a malformed spec."""
    out: dict[str, list[str]] = {}
    for spec in specs or []:
        name, sep, labels = spec.partition(":")
        names = [s.strip() for s in labels.split(",") if s.strip()]
        if not sep or not name or not names:
            raise ValueError(f"--multilabel expects TASK:label1,label2,... , got {spec!r}")
        out[name.strip()] = names
    return out


def _parse_thresholds(values: Sequence[str]) -> float | dict[str, float] | None:
    if not values:
        return None
    per_task: dict[str, float] = {}
    for v in values:
        task, sep, num = v.rpartition("=")
        try:
            val = float(num)
        except ValueError:
            raise ValueError(f"--threshold expects VALUE or TASK=VALUE, got {v!r}") from None
        if not sep:
            if len(values) > 1:
                raise ValueError("give one global --threshold VALUE, or TASK=VALUE for each task")
            return val
        per_task[task] = val
    return per_task


def _read_csv(path: str, id_column: str) -> pd.DataFrame:
    """A CSV with its ids as text, the formula escape medmoe writes (``'=x``) undone so that ids match across files."""
    df = pd.read_csv(path, dtype={id_column: str})
    if id_column in df.columns:
        df[id_column] = df[id_column].map(unescape_cell)
    return df


def _run_auroc(args: argparse.Namespace, progress: _Progress) -> dict:
    df_pred = _read_csv(args.predictions, args.id_column)
    df_true = _read_csv(args.labels, args.id_column) if args.labels else None
    df_cmp = _read_csv(args.compare_with, args.id_column) if args.compare_with else None
    return evaluate_classification(
        df_pred,
        df_true,
        args.tasks,
        id_column=args.id_column,
        multilabel=_parse_multilabel(args.multilabel),
        threshold=_parse_thresholds(args.threshold),
        split_column=args.split_column,
        threshold_split=args.threshold_split,
        eval_split=args.eval_split,
        threshold_rule=args.threshold_rule,
        group_by=args.group_by,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        ci=args.ci,
        n_bins=args.n_bins,
        df_pred_compare=df_cmp,
        progress=progress,
    )


def _run_dice(args: argparse.Namespace, progress: _Progress) -> dict:
    if args.pairs and (args.pred_dir or args.truth_dir):
        raise ValueError("give either --pairs or --pred-dir with --truth-dir, not both")
    if args.pairs:
        pairs = pairs_from_csv(args.pairs, args.id_column, args.pred_column, args.truth_column)
    elif args.pred_dir and args.truth_dir:
        pairs = pairs_from_folders(args.pred_dir, args.truth_dir)
    else:
        raise ValueError("give --pairs CSV, or both --pred-dir and --truth-dir")
    if args.metadata:
        meta = _read_csv(args.metadata, args.id_column).rename(columns={args.id_column: "id"})
        meta = meta[[c for c in meta.columns if c == "id" or c not in pairs.columns]]  # keep the mask paths
        pairs = join_predictions(pairs, meta, "id", ("masks", "--metadata CSV"))
    return evaluate_segmentation(
        pairs,
        args.labels,
        spacing=args.spacing,
        group_by=args.group_by,
        n_bootstrap=args.n_bootstrap,
        seed=args.seed,
        ci=args.ci,
        workers=args.workers,
        progress=progress,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input with a message on stderr)."""
    args = build_parser().parse_args(argv)
    progress = _Progress(args.quiet)
    if args.command == "compare":
        try:
            written = _run_compare(args)
        except (ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print("\n".join(written["report_lines"]))
        print(f"wrote {written['report']} and {written['csv']}")
        return 0
    try:
        result = _run_auroc(args, progress) if args.command == "auroc" else _run_dice(args, progress)
        written = write_report(result, args.out_dir, args.title, n_worst=getattr(args, "n_worst", 3))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in [n for t in result.get("tasks", []) for n in t["notes"]]:
        print(f"note: {note}", file=sys.stderr)
    key = ("auroc", None, None) if args.command == "auroc" else ("dice", None, None)
    for e in result["metrics"]:
        if (e["metric"], e["class"], e["group"]) == key:
            print(f"{e['task']}: {key[0]} = {e['value']:.4f} [{e['ci_low']:.4f}, {e['ci_high']:.4f}] (n={e['n']})")
    print(f"wrote {written['report']} and {written['metrics_json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
