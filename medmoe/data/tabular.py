"""Tabular modalities: preprocessing fitted on the training split, a dictionary transform, and a cohort loader.

A tabular modality is a *block* of cohort columns (e.g. ``clinical``: age, MMSE, sex, APOE4; ``biospecimen``: CSF
A-beta, p-tau, t-tau). :class:`TabularPreprocessor` learns, from the training rows only, the min / max of every
numeric column, the categories of every categorical column, and the imputation values (training mean / mode);
it is saved as JSON next to the checkpoint so evaluation and inference reuse the training state.
:class:`TabularToVectord` turns a sample's cells into one float vector per block and marks a block whose cells are
*all* empty as an absent modality (DESIGN.md: never zero-filled in the data layer; the model decides).
:func:`load_tabular_cohort` validates a cohort whose modalities are image paths *and* tabular blocks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
from monai.transforms import MapTransform
from monai.utils import TransformBackends

from ..utils import atomic_write_text
from .cohort import Cohort, CohortError, load_cohort

__all__ = ["TabularPreprocessor", "TabularToVectord", "load_tabular_cohort", "is_missing"]

MISSING_TOKENS = frozenset({"", "na", "nan", "n/a", "none", "null"})
"""Cell values read as missing (case-insensitive, stripped), besides None and float NaN."""

_UNKNOWN = ("ignore", "error")


def is_missing(value: object) -> bool:
    """True for None, NaN, and the strings of :data:`MISSING_TOKENS` (e.g. ``""``, ``"NA"``)."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in MISSING_TOKENS


def _number(value: object, where: str) -> float:
    """Parse a present numeric cell; ADNI-style censored values (``">1700"``, ``"<8"``) become their bound."""
    text = str(value).strip().lstrip("<>").strip()
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: {value!r} is not a finite number")
    return number


def _category(value: object) -> str:
    """Canonical text of a categorical cell (``1``, ``1.0`` and ``" 1 "`` are the same category)."""
    text = str(value).strip()
    try:
        number = float(text)
        return str(int(number)) if number.is_integer() else text
    except ValueError:
        return text


class TabularPreprocessor:
    """Min-max scaling, one-hot encoding and imputation per tabular block, fitted on training rows only.

    For each block (a modality), the output vector is: each numeric column ``(x - min) / (max - min)`` (training
    min / max; a constant column gives 0; values outside the training range are not clipped), then one 0/1 column
    per training category of each categorical column (sorted). A missing cell is imputed before scaling with the
    training mean (numeric) or mode (categorical) of its column. A category not seen in training is all zeros
    (``handle_unknown="ignore"``) or an error (``"error"``). A block whose cells are all missing is not imputed:
    :meth:`transform_row` returns None for it (the modality is absent).

    Args:
        blocks: block name -> ``{"numeric": [columns], "categorical": [columns]}`` (either list may be omitted).
        handle_unknown: ``"ignore"`` or ``"error"`` for categories not seen in training.

    Raises:
        ValueError: on an empty block, a column in two places, or a bad ``handle_unknown``.

    Example::

        >>> prep = TabularPreprocessor({"clinical": {"numeric": ["age"], "categorical": ["sex"]}})
        >>> prep.fit([{"age": "60", "sex": "F"}, {"age": "80", "sex": "M"}, {"age": "", "sex": "F"}]).num_features
        {'clinical': 3}
        >>> prep.transform_row({"age": "70", "sex": "M"})["clinical"].tolist()
        [0.5, 0.0, 1.0]
    """

    def __init__(self, blocks: Mapping[str, Mapping[str, Sequence[str]]], handle_unknown: str = "ignore") -> None:
        if not blocks:
            raise ValueError("at least one tabular block is required")
        if handle_unknown not in _UNKNOWN:
            raise ValueError(f"handle_unknown must be one of {_UNKNOWN}, got '{handle_unknown}'")
        self.blocks: dict[str, dict[str, list[str]]] = {}
        seen: dict[str, str] = {}
        for name, spec in blocks.items():
            unknown = set(spec) - {"numeric", "categorical"}
            if unknown:
                raise ValueError(f"block '{name}': unknown key(s) {sorted(unknown)}; use 'numeric' and 'categorical'")
            numeric, categorical = list(spec.get("numeric", [])), list(spec.get("categorical", []))
            if not numeric and not categorical:
                raise ValueError(f"block '{name}' has no numeric or categorical columns")
            for column in numeric + categorical:
                if column in seen:
                    raise ValueError(f"column '{column}' is listed twice (blocks '{seen[column]}' and '{name}')")
                seen[column] = name
            self.blocks[name] = {"numeric": numeric, "categorical": categorical}
        self.handle_unknown = handle_unknown
        self.state: dict[str, dict] | None = None

    @property
    def columns(self) -> list[str]:
        """All input columns, block by block."""
        return [c for spec in self.blocks.values() for c in spec["numeric"] + spec["categorical"]]

    def _fitted(self) -> dict[str, dict]:
        if self.state is None:
            raise RuntimeError("TabularPreprocessor is not fitted: call fit(training rows) or load it from_json")
        return self.state

    def fit(self, rows: Sequence[Mapping[str, object]], id_key: str | None = None) -> TabularPreprocessor:
        """Learn min / max, categories and imputation values from ``rows`` (the training split only).

        Args:
            rows: sample dicts or CSV rows holding the block columns (e.g. ``cohort.records("train")``).
            id_key: key of the sample id, to name bad rows in errors.

        Returns:
            self.

        Raises:
            ValueError: on no rows, a missing column, a non-numeric numeric cell, or a column with no value at all
                in the training rows (naming the column and the rows).
        """
        rows = list(rows)
        if not rows:
            raise ValueError("cannot fit the tabular preprocessing on zero rows (is the training split empty?)")
        missing = [c for c in self.columns if c not in rows[0]]
        if missing:
            raise ValueError(f"rows have no column(s) {missing}; they have {sorted(map(str, rows[0]))}")
        problems, state = [], {}
        for name, spec in self.blocks.items():
            numeric = {}
            for column in spec["numeric"]:
                values = []
                for i, row in enumerate(rows):
                    if not is_missing(row[column]):
                        try:
                            values.append(_number(row[column], self._where(row, i, id_key, column)))
                        except ValueError as err:
                            problems.append(str(err))
                if not values:
                    problems.append(f"column '{column}' has no value in the {len(rows)} training rows")
                    continue
                numeric[column] = {"min": min(values), "max": max(values), "mean": float(np.mean(values))}
            categorical = {}
            for column in spec["categorical"]:
                values = [_category(row[column]) for row in rows if not is_missing(row[column])]
                if not values:
                    problems.append(f"column '{column}' has no value in the {len(rows)} training rows")
                    continue
                categories, counts = np.unique(values, return_counts=True)
                mode = str(categories[np.argmax(counts)])  # ties: the first category in sorted order
                categorical[column] = {"categories": [str(c) for c in categories], "mode": mode}
            state[name] = {"numeric": numeric, "categorical": categorical}
        if problems:
            raise ValueError("tabular preprocessing: " + "; ".join(problems[:50]))
        self.state = state
        return self

    @staticmethod
    def _where(row: Mapping, index: int, id_key: str | None, column: str) -> str:
        who = f"{id_key}={row[id_key]!r}" if id_key and id_key in row else f"row {index}"
        return f"{who}, column '{column}'"

    @property
    def num_features(self) -> dict[str, int]:
        """Output width of each block (numeric columns + one per training category)."""
        state = self._fitted()
        return {
            name: len(s["numeric"]) + sum(len(c["categories"]) for c in s["categorical"].values())
            for name, s in state.items()
        }

    def feature_names(self, block: str) -> list[str]:
        """Names of a block's output features: numeric columns, then ``<column>=<category>``."""
        s = self._fitted()[block]
        return [*s["numeric"], *(f"{c}={k}" for c, spec in s["categorical"].items() for k in spec["categories"])]

    def transform_row(self, row: Mapping[str, object], where: str = "row") -> dict[str, np.ndarray | None]:
        """One sample's cells -> ``{block: float32 (num_features,) or None when all its cells are missing}``.

        Args:
            row: a mapping holding every block column.
            where: how to name the row in errors (e.g. ``"subject_id='S0001'"``).

        Raises:
            KeyError: naming a column missing from the row.
            ValueError: on a non-numeric numeric cell, or an unseen category with ``handle_unknown="error"``.
        """
        out: dict[str, np.ndarray | None] = {}
        for name, s in self._fitted().items():
            cells = self.blocks[name]["numeric"] + self.blocks[name]["categorical"]
            absent = [c for c in cells if c not in row]
            if absent:
                raise KeyError(f"{where}: no column(s) {absent} for tabular block '{name}'")
            if all(is_missing(row[c]) for c in cells):
                out[name] = None
                continue
            vector = []
            for column, stats in s["numeric"].items():
                cell = row[column]
                value = stats["mean"] if is_missing(cell) else _number(cell, f"{where}, column '{column}'")
                span = stats["max"] - stats["min"]
                vector.append((value - stats["min"]) / span if span > 0 else 0.0)
            for column, spec in s["categorical"].items():
                cell = row[column]
                category = spec["mode"] if is_missing(cell) else _category(cell)
                if category not in spec["categories"] and self.handle_unknown == "error":
                    raise ValueError(
                        f"{where}, column '{column}': category {category!r} was not seen in training "
                        f"(known: {spec['categories']})"
                    )
                vector += [float(category == k) for k in spec["categories"]]
            out[name] = np.asarray(vector, dtype=np.float32)
        return out

    def to_dict(self) -> dict:
        """JSON-ready fitted state (blocks, options, statistics)."""
        return {"blocks": self.blocks, "handle_unknown": self.handle_unknown, "state": self._fitted()}

    @classmethod
    def from_dict(cls, data: Mapping) -> TabularPreprocessor:
        """Rebuild a fitted preprocessor from :meth:`to_dict`.

        Raises:
            ValueError: if the state is missing or does not match the blocks.
        """
        prep = cls(data["blocks"], data.get("handle_unknown", "ignore"))
        state = data.get("state")
        if not isinstance(state, Mapping) or set(state) != set(prep.blocks):
            raise ValueError(f"fitted state must have one entry per block {sorted(prep.blocks)}")
        prep.state = json.loads(json.dumps(state))
        return prep

    def to_json(self, path: str | Path) -> Path:
        """Write the fitted state to ``path`` atomically; returns the path."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> TabularPreprocessor:
        """Load a fitted preprocessor saved by :meth:`to_json` (e.g. at training time, for inference).

        Raises:
            FileNotFoundError: naming the path (train first, or point to the training run's file).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"fitted tabular preprocessing not found: {path} (it is written by training)")
        return cls.from_dict(json.loads(path.read_text()))


class TabularToVectord(MapTransform):
    """Turn a sample's tabular cells into one float vector per block and rebuild ``modality_mask``.

    Each block in ``preprocessor.blocks`` is written under its name as a float32 ``(num_features,)`` array when at
    least one of its cells is present; when all are missing the key is left unset (the modality is absent;
    :class:`~medmoe.data.FillMissingModalitiesd` adds the NaN placeholder later). ``modality_mask`` is then rebuilt
    in ``modalities`` order from the keys the sample holds: an image modality is present when its key is set (as
    :meth:`Cohort.records` sets only present paths), a block when it was just written.

    Args:
        preprocessor: a fitted :class:`TabularPreprocessor`.
        modalities: all modality keys in model order (image keys and block names).
        mask_key: key of the presence mask.
        id_key: key of the sample id, to name the sample in errors.

    Raises:
        ValueError: if a block is not in ``modalities``; at call time on a bad cell (naming the sample and column).

    Example::

        >>> prep = TabularPreprocessor({"csf": {"numeric": ["ptau"]}}).fit([{"ptau": "10"}, {"ptau": "30"}])
        >>> out = TabularToVectord(prep, ["mri", "csf"])({"mri": "a.nii.gz", "ptau": "20"})
        >>> out["csf"].tolist(), out["modality_mask"].tolist()
        ([0.5], [True, True])
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        preprocessor: TabularPreprocessor,
        modalities: Sequence[str],
        mask_key: str = "modality_mask",
        id_key: str | None = None,
    ) -> None:
        super().__init__(list(preprocessor.blocks), allow_missing_keys=True)
        missing = [b for b in preprocessor.blocks if b not in modalities]
        if missing:
            raise ValueError(f"tabular block(s) {missing} are not in modalities {list(modalities)}")
        self.preprocessor, self.modalities, self.mask_key, self.id_key = (
            preprocessor,
            list(modalities),
            mask_key,
            id_key,
        )

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        where = f"{self.id_key}={d.get(self.id_key)!r}" if self.id_key else "sample"
        for block, vector in self.preprocessor.transform_row(d, where).items():
            d.pop(block, None)
            if vector is not None:
                d[block] = vector
        d[self.mask_key] = np.array([d.get(k) is not None for k in self.modalities], dtype=bool)
        return d


def load_tabular_cohort(
    cohort_csv: str | Path,
    image_modalities: Sequence[str],
    blocks: Mapping[str, Mapping[str, Sequence[str]]],
    tasks: Mapping[str, int],
    extra_columns: Sequence[str] = (),
    **kwargs,
) -> Cohort:
    """:func:`~medmoe.data.load_cohort` for cohorts whose modalities are image paths and tabular blocks.

    Image columns are checked as usual; the block columns are copied into every record as text (empty = missing)
    and checked here: every numeric cell must parse, and every row needs at least one present modality (an image
    path or a block with a non-empty cell). All problems are reported at once with their CSV line numbers.

    Args:
        cohort_csv: the cohort CSV (or JSON datalist).
        image_modalities: path columns of the image modalities.
        blocks: the tabular blocks, as for :class:`TabularPreprocessor`.
        tasks: label columns -> classes.
        extra_columns: further columns copied into the records (e.g. ``split``).
        **kwargs: passed to :func:`~medmoe.data.load_cohort` (``data_root``, ``id_column``, ``require_labels``...).

    Returns:
        the :class:`~medmoe.data.Cohort`; ``cohort.modalities`` are the image modalities only.

    Raises:
        CohortError: listing every bad row (see above and :func:`~medmoe.data.load_cohort`).

    Example::

        >>> blocks = {"csf": {"numeric": ["ptau"]}}
        >>> cohort = load_tabular_cohort("cohort.csv", ["mri"], blocks, {"dx": 3})  # doctest: +SKIP
    """
    prep = TabularPreprocessor(blocks)
    columns = [c for c in prep.columns if c not in extra_columns]
    cohort = load_cohort(
        cohort_csv, image_modalities, tasks, extra_columns=[*columns, *extra_columns], require_modality=False, **kwargs
    )
    problems = []
    for i, row in cohort.table.iterrows():
        line = f"{cohort.row_name(i)} ({cohort.id_column}={row[cohort.id_column]!r})"
        present = any(row[m] for m in image_modalities)
        for spec in prep.blocks.values():
            cells = spec["numeric"] + spec["categorical"]
            present = present or not all(is_missing(row[c]) for c in cells)
            for column in spec["numeric"]:
                if not is_missing(row[column]):
                    try:
                        _number(row[column], f"{line}: column '{column}'")
                    except ValueError as err:
                        problems.append(str(err))
        if not present:
            problems.append(f"{line}: no modality present (no image in {list(image_modalities)}, no tabular value)")
    if problems:
        raise CohortError(str(cohort_csv), problems)
    return cohort
