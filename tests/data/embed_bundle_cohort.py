"""Test helper: read a cohort CSV the way the ``embed_m4oe`` bundle does (its own ``cohort`` entry of train.json)."""

from __future__ import annotations

from pathlib import Path

from monai.bundle import ConfigParser

from medmoe.data import Cohort

TRAIN_JSON = Path(__file__).resolve().parents[2] / "bundles" / "embed_m4oe" / "configs" / "train.json"


def load_as_embed_bundle(cohort_csv: Path, data_root: Path) -> Cohort:
    """Evaluate train.json's ``cohort`` entry (``load_cohort`` with the bundle's modalities and tasks) on a CSV,
    with ``check_files=False`` (the tests write no image files)."""
    parser = ConfigParser()
    parser.read_config(str(TRAIN_JSON))
    parser["cohort_csv"] = str(cohort_csv)
    parser["data_root"] = str(data_root)
    parser["cohort#check_files"] = False
    return parser.get_parsed_content("cohort")
