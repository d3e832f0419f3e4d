"""Decode every image of a cohort once, as the bundle's loader would, and report each failure by row and column.

The header check of :func:`medmoe.data.load_cohort` finds missing and unreadable files in seconds, but not what
only decoding shows: truncated pixel data, Rows / Columns that disagree with the pixel data, a
PhotometricInterpretation that does not match the pixels, no PixelData, a CT among mammograms. A bundle finds
those while it caches the dataset, after minutes or hours. :func:`decode_cohort` runs the bundle's own
deterministic ``preprocessing`` chain (or any transform) on every row before training, in worker processes, and
names the row, the column and the file of each failure.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from .cohort import Cohort

__all__ = ["BundlePreprocessing", "FileDecoder", "decode_cohort"]

_TRANSFORM: Callable[[dict], Any] | None = None


def _init(factory: Callable[[], Callable[[dict], Any]]) -> None:
    global _TRANSFORM
    _TRANSFORM = factory()


def _decode_one(record: dict) -> list[str] | None:
    """None if the transform ran, else the messages of the error chain, outermost first."""
    try:
        _TRANSFORM(dict(record))
        return None
    except Exception as err:  # every loader raises its own types; report them all the same way
        chain: list[str] = []
        cause: BaseException | None = err
        while cause is not None:  # MONAI wraps the loader's error in "applying transform ..."
            chain.append(f"{type(cause).__name__}: {cause}")
            cause = cause.__cause__
        return chain


def _explain(chain: list[str], record: dict, columns: list[str]) -> str:
    """``column 'c': <the outermost message naming c's file>``, or the innermost message when none names a file."""
    for message in chain:
        named = [c for c in columns if c in record and str(record[c]) in message]
        if named:
            column = max(named, key=lambda c: len(str(record[c])))  # the longest path: no prefix mix-ups
            return f"column {column!r}: {message}"
    return chain[-1]


class BundlePreprocessing:
    """Picklable factory of a bundle config's ``preprocessing`` chain (the deterministic part the bundle caches).

    Args:
        config_file: the bundle's ``train.json`` (or a list of config files, as ``monai.bundle run`` takes them).
        overrides: config ids to set first (e.g. ``{"image_size": [512, 512]}``).
    """

    def __init__(self, config_file: str | list[str], overrides: dict | None = None) -> None:
        self.config_file, self.overrides = config_file, dict(overrides or {})

    def __call__(self) -> Callable[[dict], Any]:
        from monai.bundle import ConfigParser
        from monai.transforms import Compose

        parser = ConfigParser()
        parser.read_config(self.config_file)
        for key, value in self.overrides.items():
            parser[key] = value
        chain = parser.get_parsed_content("preprocessing")
        return chain if callable(chain) else Compose(chain)


class FileDecoder:
    """Picklable factory of a generic decoder: every path column of a row read in full by its format.

    DICOM / PNG / JPEG through the mammography loader (:func:`medmoe.transforms.io.read_mammogram`), NIfTI and
    MetaImage through MONAI's ``LoadImage``; a folder (OCT B-scans) file by file.
    """

    def __init__(self, columns: list[str]) -> None:
        self.columns = list(columns)

    def __call__(self) -> Callable[[dict], Any]:
        from pathlib import Path

        from monai.transforms import LoadImage

        from ..transforms.io import SUPPORTED_EXTENSIONS, read_mammogram

        load = LoadImage(image_only=True)

        def read(path: Path) -> None:
            if path.is_dir():
                for child in sorted(p for p in path.iterdir() if p.is_file()):
                    read(child)
            elif path.suffix.lower() in SUPPORTED_EXTENSIONS or not path.suffix:
                read_mammogram(path)
            else:
                load(str(path))

        def decode(record: dict) -> None:
            for column in self.columns:
                if column in record:
                    read(Path(record[column]))

        return decode


def decode_cohort(
    cohort: Cohort,
    transform_factory: Callable[[], Callable[[dict], Any]],
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    records: list[dict] | None = None,
) -> list[str]:
    """Run ``transform_factory()`` on every row of ``cohort``; return one problem line per failing row.

    Args:
        cohort: a cohort that passed :func:`medmoe.data.load_cohort` (paths already resolved).
        transform_factory: builds the transform (e.g. the bundle's ``preprocessing`` as a ``Compose``); called once
            per worker process, so it must be picklable (a module-level function or a ``functools.partial``).
        workers: worker processes (1 = in this process).
        progress: optional ``progress(done, total)`` callback after each row.
        records: the sample dicts the bundle feeds its pipeline when they are not ``cohort.records()`` (e.g. a
            bundle that drops or reshapes rows); each must carry the cohort's id column.

    Returns:
        ``["row 7 (exam_id='x'): column 'ffdm_cc': MammogramReadError: /data/x.dcm: ...", ...]``, in row order;
        empty when every row decodes.
    """
    records = cohort.records() if records is None else list(records)
    row_of = {rid: cohort.row_name(i) for i, rid in zip(cohort.table.index, cohort.table[cohort.id_column])}
    ids = [r.get(cohort.id_column, "") for r in records]
    names = [f"{row_of.get(rid, 'row ?')} ({cohort.id_column}={rid!r})" for rid in ids]
    columns = [*cohort.modalities, *cohort.path_columns]
    results: list[list[str] | None] = []
    if workers <= 1:
        _init(transform_factory)
        for record in records:
            results.append(_decode_one(record))
            if progress is not None:
                progress(len(results), len(records))
    else:
        context = multiprocessing.get_context("spawn")  # no fork of a process holding threads (torch, OpenMP)
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init, initargs=(transform_factory,)) as pool:
            for result in pool.map(_decode_one, records, chunksize=max(1, len(records) // (8 * workers))):
                results.append(result)
                if progress is not None:
                    progress(len(results), len(records))
    return [f"{name}: {_explain(chain, record, columns)}" for name, record, chain in zip(names, records, results)
            if chain is not None]  # fmt: skip
