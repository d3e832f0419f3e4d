"""Cohort command line: validate a cohort, build one from EMBED CSVs, or write the demo cohort.

Usage::

    python -m medmoe.apps.cohort validate --cohort_csv mine.csv --data_root /data \\
        --config_file bundles/embed_m4oe/configs/train.json
    python -m medmoe.apps.cohort validate --cohort_csv mine.csv --modalities ffdm_cc,ffdm_mlo \\
        --tasks density:4,birads:3
    python -m medmoe.apps.cohort embed --metadata_csv EMBED_OpenData_metadata.csv \\
        --clinical_csv EMBED_OpenData_clinical.csv --out_csv embed_cohort.csv
    python -m medmoe.apps.cohort rsna --train_csv train.csv --out_csv rsna_cohort.csv [--image_root train_images]
    python -m medmoe.apps.cohort vindr --annotations_csv breast-level_annotations.csv --out_csv vindr_cohort.csv
    python -m medmoe.apps.cohort demo --out_dir /tmp/embed_demo --num_exams 240
    python -m medmoe.apps.cohort scan /data/pacs_export --out_csv cohort.csv \\
        [--labels_csv labels.csv --labels_key accession_number]

``validate`` decodes every image once as the bundle's loader would (``--headers_only``: headers only, fast),
exits with status 1 and lists every bad row (with its CSV line number and column) when the
cohort has problems, and prints a per-split summary otherwise. With ``--config_file`` it builds the cohort from the
bundle config's own ``cohort`` entry, so it runs exactly the checks the bundle runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from medmoe.data import Cohort

__all__ = ["main"]


def _parse_tasks(text: str) -> dict[str, int]:
    tasks = {}
    for item in filter(None, text.split(",")):
        name, sep, classes = item.partition(":")
        if not sep or not classes.isdigit():
            raise argparse.ArgumentTypeError(f"--tasks items must be name:classes, got '{item}'")
        tasks[name] = int(classes)
    return tasks


def _config_overrides(args: argparse.Namespace, tasks: dict[str, int] | None) -> dict:
    """The config ids the command line replaces, as ``python -m monai.bundle run --cohort_csv ...`` would."""
    overrides = {"cohort_csv": args.cohort_csv, "data_root": args.data_root or ""}
    if args.modalities:
        overrides["modalities"] = args.modalities.split(",")
    if tasks:
        overrides["tasks"] = tasks
    if args.id_column:
        overrides["id_column"] = args.id_column
    return overrides


def _cohort_from_config(args: argparse.Namespace, tasks: dict[str, int] | None) -> tuple[Cohort, object]:
    """Build the cohort exactly as the bundle does: evaluate the config's own ``cohort`` entry.

    ``cohort_csv`` / ``data_root`` (and ``modalities`` / ``tasks`` / ``id_column`` when given on the command line)
    replace the config entries of the same name, as ``python -m monai.bundle run --cohort_csv ...`` would, so the
    checks are those of the bundle: ``load_tabular_cohort`` with its numeric checks for ``adni_i2moe``, the
    ``kspace`` column and the ``slice`` extra column for ``fastmri_i2m2``, the mask column of ``gamma_m4oe``.
    A config may add a ``cohort_check`` entry, an expression over ``@cohort`` that raises ``CohortError`` for rows
    the bundle cannot use later (``gamma_m4oe``: every case needs its fundus photograph); it is evaluated too.

    Returns:
        ``(cohort, checked)``: ``checked`` is the ``cohort_check`` value (None without one); a bundle whose check
        returns the samples it feeds its pipeline (``gamma_m4oe``) lets the decoding step use those.
    """
    from monai.bundle import ConfigParser

    from medmoe.data import CohortError

    parser = ConfigParser()
    try:
        parser.read_config(args.config_file)
    except (OSError, ValueError) as err:
        raise SystemExit(f"{args.config_file}: cannot read the config ({err})") from err
    entry = parser.get("cohort")
    if not isinstance(entry, dict) or "_target_" not in entry:
        raise SystemExit(
            f"{args.config_file}: no 'cohort' entry with a '_target_' to build the cohort from; "
            "pass --modalities and --tasks instead of --config_file"
        )
    for key, value in _config_overrides(args, tasks).items():
        parser[key] = value
    parser["cohort#check_files"] = not args.skip_files
    if args.no_split:  # an inference cohort, as the bundle's inference.json reads it: no split, labels optional
        parser["cohort#split_column"] = None
        parser["cohort#required_splits"] = []
        parser["cohort#require_labels"] = False
    try:
        cohort = parser.get_parsed_content("cohort")
        # checks of the data pipeline beyond the loader's
        checked = parser.get_parsed_content("cohort_check") if "cohort_check" in parser else None
        return cohort, checked
    except Exception as err:  # monai wraps the loader's error: report the loader's own error
        cause: BaseException = err
        while cause.__cause__ is not None and not isinstance(cause, (CohortError, FileNotFoundError)):
            cause = cause.__cause__
        if isinstance(cause, (CohortError, FileNotFoundError)):
            raise cause from None
        raise SystemExit(
            f"{args.config_file}: could not build its 'cohort' entry ({type(cause).__name__}: {cause})"
        ) from err


def _decode_all(args: argparse.Namespace, cohort: Cohort, checked: object = None) -> list[str]:
    """Decode every image once (the bundle's own preprocessing with --config_file), with a progress bar."""
    from tqdm.auto import tqdm

    from medmoe.data.decode_check import BundlePreprocessing, FileDecoder, decode_cohort

    records = None
    if args.config_file:
        factory = BundlePreprocessing(args.config_file, _config_overrides(args, args.tasks))
        if isinstance(checked, list) and all(isinstance(r, dict) for r in checked):
            records = checked
    else:
        factory = FileDecoder([*cohort.modalities, *cohort.path_columns])
    total = len(records) if records is not None else len(cohort)
    with tqdm(total=total, desc="decoding images", unit="row", disable=args.quiet) as bar:
        return decode_cohort(cohort, factory, args.workers, lambda done, _: bar.update(done - bar.n), records)


def _validate(args: argparse.Namespace) -> int:
    from medmoe.data import SPLITS, CohortError, load_cohort

    if not args.config_file and not args.modalities:
        raise SystemExit("give --config_file or --modalities (and --tasks)")
    checked = None
    try:
        if args.config_file:
            cohort, checked = _cohort_from_config(args, args.tasks)
        else:
            cohort = load_cohort(
                args.cohort_csv,
                args.modalities.split(","),
                args.tasks or {},
                data_root=args.data_root,
                id_column=args.id_column or "exam_id",
                split_column=None if args.no_split else "split",
                required_splits=() if args.no_split else ("train", "val"),
                check_files=not args.skip_files,
                require_labels=not args.no_split,
            )
    except (CohortError, FileNotFoundError) as err:
        print(err, file=sys.stderr)
        return 1
    modalities, tasks = cohort.modalities, cohort.tasks
    if not (args.headers_only or args.skip_files):
        problems = _decode_all(args, cohort, checked)
        if problems:
            shown = "\n  ".join(problems[:200]) + (
                f"\n  ... and {len(problems) - 200} more" if len(problems) > 200 else ""
            )
            print(f"cohort {args.cohort_csv}: {len(problems)} row(s) the bundle's loader would reject:\n  {shown}",
                  file=sys.stderr)  # fmt: skip
            return 1
    checked = "headers checked" if args.headers_only or args.skip_files else "every image decoded"
    print(f"{args.cohort_csv}: {len(cohort)} rows OK ({len(modalities)} modalities, {len(tasks)} tasks; {checked})")
    splits = SPLITS if cohort.split_column else (None,)
    for split in splits:
        records = cohort.records(split)
        if not records:
            continue
        present = sum(r["modality_mask"].astype(int) for r in records)
        labelled = {t: sum(r[t] >= 0 for r in records) for t in tasks}
        views = ", ".join(f"{m} {int(n)}" for m, n in zip(modalities, present))
        labels = ", ".join(f"{t} {n}" for t, n in labelled.items())
        print(f"  {split or 'all'}: {len(records)} rows; present: {views}; labelled: {labels}")
    return 0


def _embed(args: argparse.Namespace) -> int:
    from medmoe.data.embed_adapter import embed_to_cohort

    df = embed_to_cohort(
        args.metadata_csv,
        args.clinical_csv,
        args.out_csv,
        path_prefix=args.path_prefix,
        seed=args.seed,
        risk_csv=args.risk_csv,
    )
    print(f"wrote {len(df)} exams to {args.out_csv}")
    return 0


def _public(args: argparse.Namespace) -> int:
    """``rsna`` / ``vindr``: build the cohort, write it and its dropped-image table, print what was dropped."""
    from medmoe.data import rsna_to_cohort, vindr_to_cohort

    out = Path(args.out_csv)
    dropped_csv = args.dropped_csv or out.with_name(f"{out.stem}.dropped.csv")
    common = {"image_root": args.image_root, "seed": args.seed, "dropped_csv": dropped_csv}
    if args.image_ext:
        common["image_ext"] = args.image_ext
    try:
        if args.command == "rsna":
            result = rsna_to_cohort(args.train_csv, out, **common)
        else:
            result = vindr_to_cohort(args.annotations_csv, out, val_fraction=args.val_fraction, **common)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = result.summary()
    splits = result.cohort["split"].value_counts().to_dict()
    print(f"wrote {summary['exams']} exams to {out} ({', '.join(f'{k} {v}' for k, v in sorted(splits.items()))})")
    for reason, n in summary["images_dropped"].items():
        print(f"  {n:6d} images dropped: {reason}")
    for view, n in summary["other_views"].items():
        print(f"  {n:6d} of them view {view}")
    print(f"  {summary['exams_without_cc_or_mlo']:6d} breasts without a CC or MLO image (no row)")
    print(f"dropped images: {dropped_csv}")
    return 0


def _scan(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from medmoe.data.dicom_scan import REASONS, join_labels, load_or_create_key, scan_dicom_folder
    from medmoe.utils.atomic import atomic_write_csv, atomic_write_text

    out = Path(args.out_csv)
    stem = out.with_suffix("")
    key_file = Path(args.key_file) if args.key_file else stem.parent / "pseudonym.key"
    mapping_csv = Path(args.mapping_csv) if args.mapping_csv else stem.parent / f"{stem.name}.mapping.csv"
    try:
        key = load_or_create_key(key_file)
        with tqdm(desc="reading DICOM headers", unit="file", disable=args.quiet) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            result = scan_dicom_folder(args.dicom_dir, key, seed=args.seed, progress=progress)
        cohort = result.cohort
        if args.labels_csv:
            labels = pd.read_csv(args.labels_csv, dtype={args.labels_key: str})
            cohort = join_labels(cohort, result.mapping, labels, args.labels_key)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    atomic_write_csv(out, cohort, index=False)
    atomic_write_csv(stem.parent / f"{stem.name}.skipped.csv", result.skipped, index=False)
    atomic_write_csv(mapping_csv, result.mapping, index=False)
    os.chmod(mapping_csv, 0o600)
    summary = result.summary()
    atomic_write_text(stem.parent / f"{stem.name}.summary.json", json.dumps(summary, indent=1))
    print(f"{summary['files']} files -> {summary['exams']} exams of {summary['patients']} patients ({out})")
    for pattern, n in summary["view_patterns"].items():
        print(f"  {n:6d} exams with {pattern}")
    for reason, n in summary["skipped"].items():
        print(f"  {n:6d} files skipped: {reason} ({REASONS[reason]})")
    print(f"skipped files: {stem.name}.skipped.csv; local id mapping (keep private): {mapping_csv}; key: {key_file}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from medmoe.data import make_embed_demo

    path = make_embed_demo(args.out_dir, num_exams=args.num_exams, seed=args.seed)
    print(f"wrote the demo cohort to {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m medmoe.apps.cohort``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m medmoe.apps.cohort", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    val = sub.add_parser("validate", help="check every row of a cohort CSV / JSON datalist")
    val.add_argument("--cohort_csv", required=True)
    val.add_argument("--data_root", default=None, help="prefix of relative paths (default: the CSV's folder)")
    val.add_argument(
        "--config_file", default=None, help="a bundle config (train.json): validate as its 'cohort' entry does"
    )
    val.add_argument(
        "--modalities", default=None, help="comma-separated path columns (with --config_file: replaces 'modalities')"
    )
    val.add_argument(
        "--tasks", type=_parse_tasks, default=None, help="comma-separated name:classes (with --config_file: 'tasks')"
    )
    val.add_argument("--id_column", default=None)
    val.add_argument(
        "--no_split", action="store_true", help="an inference cohort: no split column, label columns optional"
    )
    val.add_argument("--skip_files", action="store_true", help="do not open the referenced files")
    val.add_argument(
        "--headers_only", action="store_true", help="read headers only (fast); default: decode every image once"
    )
    val.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="decoding processes")
    val.add_argument("--quiet", action="store_true", help="no progress bar")
    val.set_defaults(func=_validate)

    emb = sub.add_parser("embed", help="build a cohort CSV from EMBED metadata + clinical CSVs")
    emb.add_argument("--metadata_csv", required=True)
    emb.add_argument("--clinical_csv", required=True)
    emb.add_argument("--out_csv", required=True)
    emb.add_argument("--path_prefix", default="")
    emb.add_argument("--risk_csv", default=None)
    emb.add_argument("--seed", type=int, default=0)
    emb.set_defaults(func=_embed)

    for name, table, help_text in (
        ("rsna", "--train_csv", "build a cohort CSV from RSNA screening mammography train.csv"),
        ("vindr", "--annotations_csv", "build a cohort CSV from VinDr-Mammo breast-level_annotations.csv"),
    ):
        pub = sub.add_parser(name, help=help_text)
        pub.add_argument(table, required=True)
        pub.add_argument("--out_csv", required=True)
        pub.add_argument("--image_root", default=None, help="check that every image exists under this folder")
        pub.add_argument("--image_ext", default=None, help="image file extension (default .dcm / .dicom)")
        pub.add_argument("--dropped_csv", default=None, help="dropped-image table (default: <out>.dropped.csv)")
        pub.add_argument("--seed", type=int, default=0, help="seed of the patient-level split")
        if name == "vindr":
            pub.add_argument("--val_fraction", type=float, default=0.15, help="training studies moved to val")
        pub.set_defaults(func=_public)

    scan = sub.add_parser("scan", help="build a mammography cohort CSV from a folder of DICOM files (headers only)")
    scan.add_argument("dicom_dir", help="folder of a PACS export (searched recursively)")
    scan.add_argument("--out_csv", required=True, help="cohort CSV to write (paths relative to dicom_dir)")
    scan.add_argument("--key_file", default=None, help="pseudonymisation key (created if absent; default: beside out)")
    scan.add_argument(
        "--mapping_csv", default=None, help="local pseudonym -> study mapping (default: <out>.mapping.csv)"
    )
    scan.add_argument("--labels_csv", default=None, help="labels keyed by accession number or study UID")
    scan.add_argument("--labels_key", default="accession_number", choices=["accession_number", "study_instance_uid"])
    scan.add_argument("--seed", type=int, default=0, help="seed of the patient-level split")
    scan.add_argument("--quiet", action="store_true", help="no progress bar")
    scan.set_defaults(func=_scan)

    demo = sub.add_parser("demo", help="write the synthetic EMBED-style demo cohort")
    demo.add_argument("--out_dir", required=True)
    demo.add_argument("--num_exams", type=int, default=240)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
