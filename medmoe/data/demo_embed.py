"""Embedded EMBED-style demo cohort: synthetic DICOM mammograms + ``cohort.csv`` for the embed_m4oe bundle.

:func:`make_embed_demo` writes a deterministic cohort (one row per breast per visit, four views: FFDM and
synthesized 2D, CC and MLO) with a learnable signal: BI-RADS density from the dense-tissue fraction, BI-RADS
class from a mass (none / small round / large spiculated) seen in all views, and 1-year cancer ``risk`` mostly
from suspicious masses. About 15% of exams miss a view (a few miss two) and each label is empty in ~10% of
rows. :func:`embed_demo_cohort` generates it once into a cache folder and reuses it. Details:
``docs/cohorts_embed.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medmoe.data.demo_cache import cached_demo, default_cache_root
from medmoe.data.demo_labels import balanced_labels
from medmoe.data.demo_mammo_images import DicomTags, render_kind, render_view, sample_anatomy, write_mammo
from medmoe.data.embed_adapter import COHORT_COLUMNS, VIEW_SLOTS
from medmoe.data.split import split_by_patient
from medmoe.utils import atomic_write_rows

__all__ = ["DEMO_NAME", "default_cache_root", "embed_demo_cohort", "make_embed_demo"]

DEMO_NAME = "embed_m4oe_v3"
"""Cache sub-folder (``<cache root>/demo/embed_m4oe_v3``); bump the version when the generator changes."""

_DEFAULTS = {"num_exams": 240, "image_size": (64, 48), "seed": 0}
_BIRADS_MIX = (0.45, 0.30, 0.25)  # negative, benign, suspicious
_AGE_GROUPS = ("<50", "50-65", ">65")


def _plan(num_exams: int, seed: int) -> list[dict]:
    """Per-exam plan: patient, laterality, classes, encoding, missing views and labels, split."""
    rng = np.random.default_rng([seed, 0])
    num_patients = (num_exams + 1) // 2
    density = balanced_labels(rng, num_patients, (0.25, 0.25, 0.25, 0.25))
    birads = balanced_labels(rng, num_exams, _BIRADS_MIX)
    mono1 = balanced_labels(rng, num_patients, (0.75, 0.25)).astype(bool)
    bits = balanced_labels(rng, num_patients, (1 / 3, 1 / 3, 1 / 3))
    rescale = rng.integers(0, 3, num_patients)
    age = rng.integers(0, 3, num_patients)
    days = rng.integers(0, 5 * 365, num_patients)
    risk_draw = rng.random(num_exams)
    view_draw = rng.random(num_exams)
    view_order = np.stack([rng.permutation(4) for _ in range(num_exams)])
    label_missing = rng.random((num_exams, 3)) < 0.10
    splits = split_by_patient([f"{p:04d}" for p in range(num_patients)], seed=seed)
    plan = []
    for i in range(num_exams):
        p = i // 2
        n_missing = 2 if view_draw[i] < 0.04 else 1 if view_draw[i] < 0.19 else 0
        risk = int(risk_draw[i] < (0.0, 0.1, 0.85)[birads[i]])
        labels = {"density": int(density[p]), "birads": int(birads[i]), "risk": risk}
        plan.append(
            {
                "index": i,
                "patient": p,
                "laterality": "LR"[i % 2],
                "labels": labels,
                "csv_labels": {k: ("" if label_missing[i, j] else v) for j, (k, v) in enumerate(labels.items())},
                "missing": {VIEW_SLOTS[v] for v in view_order[i, :n_missing]},
                "photometric": "MONOCHROME1" if mono1[p] else "MONOCHROME2",
                "bits_stored": (12, 14, 16)[bits[p]],
                "rescale": ((1.0, 0.0), (0.5, 0.0), (2.0, 10.0))[rescale[p]],
                "age": (44, 58, 71)[age[p]] + int(p % 5),
                "age_group": _AGE_GROUPS[age[p]],
                "study_date": str(np.datetime64("2016-01-04") + int(days[p])).replace("-", ""),
                "split": splits[f"{p:04d}"],
            }
        )
    return plan


def make_embed_demo(
    root: str | os.PathLike, num_exams: int = 240, image_size: Sequence[int] = (64, 48), seed: int = 0
) -> Path:
    """Write the synthetic EMBED-style cohort (DICOM files + ``cohort.csv``) into ``root``.

    Exams come in patient pairs (left and right breast of one fake patient, same density class, one split);
    splits are 70/15/15 by patient. Files go to ``root/images/<patient>/<exam_id>_<slot>.dcm`` and the CSV holds
    paths relative to ``root`` (use ``root`` as the bundle's ``data_root``). The output is byte-identical for a
    given ``(num_exams, image_size, seed)``.

    Args:
        root: output folder (created; existing demo files are overwritten).
        num_exams: number of exams (rows), at least 8.
        image_size: (rows, cols) of every image, each at least 32.
        seed: seed of everything (labels, anatomy, noise, UIDs).

    Returns:
        path of ``cohort.csv``.

    Raises:
        ValueError: if ``num_exams`` < 8 or ``image_size`` is not two ints >= 32.

    Example:
        >>> csv_path = make_embed_demo("/tmp/embed_demo", num_exams=16)  # doctest: +SKIP
    """
    if int(num_exams) < 8:
        raise ValueError(f"num_exams must be >= 8 (so both lateralities and photometrics appear), got {num_exams}")
    if len(image_size) != 2 or min(int(s) for s in image_size) < 32:
        raise ValueError(f"image_size must be (rows, cols) with both >= 32, got {image_size}")
    rows, cols = int(image_size[0]), int(image_size[1])
    root = Path(root)
    records = []
    for exam in _plan(int(num_exams), int(seed)):
        exam_id = f"exam{exam['patient'] + 1:04d}_{exam['laterality']}"
        folder = root / "images" / f"p{exam['patient'] + 1:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        anatomy = sample_anatomy(
            np.random.default_rng([seed, 1, exam["index"]]), exam["labels"]["density"], exam["labels"]["birads"]
        )
        views = {v: render_view(anatomy, v, (rows, cols)) for v in ("CC", "MLO")}  # FFDM and s2d share anatomy
        record = {"exam_id": exam_id}
        for slot_index, slot in enumerate(VIEW_SLOTS):
            kind, view = slot.split("_")
            if slot in exam["missing"]:
                record[slot] = ""
                continue
            image = render_kind(views[view.upper()], kind, np.random.default_rng([seed, 2, exam["index"], slot_index]))
            if exam["laterality"] == "R":
                image = np.ascontiguousarray(image[:, ::-1])
            tags = DicomTags(
                patient_index=exam["patient"] + 1,
                laterality=exam["laterality"],
                view=view.upper(),
                kind=kind,
                bits_stored=exam["bits_stored"],
                photometric=exam["photometric"],
                rescale=exam["rescale"],
                study_date=exam["study_date"],
                patient_age=exam["age"],
                uid_entropy=("medmoe-embed-demo", str(seed), str(exam["patient"])),
            )
            relative = f"images/{folder.name}/{exam_id}_{slot}.dcm"
            write_mammo(str(root / relative), image, tags)
            record[slot] = relative
        record.update(
            exam["csv_labels"], split=exam["split"], laterality=exam["laterality"], age_group=exam["age_group"]
        )
        records.append(record)

    csv_path = root / "cohort.csv"
    atomic_write_rows(csv_path, records, [*COHORT_COLUMNS, "age_group"])
    return csv_path


def _cache_folder(cache_root: Path, kwargs: dict) -> Path:
    """``<root>/demo/embed_m4oe_v3`` for the defaults, a parameter-suffixed sibling otherwise."""
    params = {**_DEFAULTS, **kwargs}
    params["image_size"] = tuple(int(s) for s in params["image_size"])
    if params == _DEFAULTS:
        return cache_root / "demo" / DEMO_NAME
    rows, cols = params["image_size"]
    return cache_root / "demo" / f"{DEMO_NAME}_n{params['num_exams']}_{rows}x{cols}_s{params['seed']}"


def embed_demo_cohort(cache_dir: str | os.PathLike | None = None, **kwargs) -> Path:
    """Path of the demo cohort CSV, generating it on first use and reusing it afterwards.

    Generation goes into a temp folder next to the target that is renamed into place when complete, so an
    interrupted run never leaves a half cohort, and concurrent callers (e.g. DDP ranks) end up with one copy.

    Args:
        cache_dir: cache root; default ``$MEDMOE_CACHE`` or ``~/.cache/medmoe``. The cohort lives in
            ``<cache_dir>/demo/embed_m4oe_v3`` (non-default ``kwargs`` get their own sibling folder).
        **kwargs: ``num_exams``, ``image_size``, ``seed`` of :func:`make_embed_demo`.

    Returns:
        path of ``cohort.csv``; its folder is the ``data_root``.

    Raises:
        ValueError: for unknown keyword arguments or invalid values (see :func:`make_embed_demo`).
        RuntimeError: if the cache folder exists but holds no ``cohort.csv`` (delete it to regenerate).

    Example:
        >>> csv_path = embed_demo_cohort()  # doctest: +SKIP
        >>> data_root = csv_path.parent  # doctest: +SKIP
    """
    unknown = set(kwargs) - set(_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown argument(s) {sorted(unknown)}; expected some of {sorted(_DEFAULTS)}")
    target = _cache_folder(Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root(), kwargs)
    params = {**_DEFAULTS, **kwargs}
    info = {"name": DEMO_NAME, **params, "image_size": list(params["image_size"])}
    return cached_demo(
        target,
        lambda folder: make_embed_demo(folder, **params),
        info,
        f"the EMBED demo cohort ({params['num_exams']} exams)",
    )
