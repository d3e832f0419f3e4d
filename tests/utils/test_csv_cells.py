"""Formula injection: every CSV medmoe writes shows hostile text as text, numbers as numbers (OWASP CSV injection)."""

import csv

import numpy as np
import pandas as pd
import torch
from ignite.engine import Engine

from medmoe.engines import EvaluationWriter
from medmoe.utils import atomic_write_csv, atomic_write_rows
from medmoe.utils.csv_cells import escape_cell, unescape_cell

HOSTILE = ['=HYPERLINK("http://evil.example","click")', "+1", "@x", "\tfoo", "\rbar", "-2+3", "-cmd|' /C calc'!A0"]


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_hostile_ids_reach_predictions_csv_as_text_and_numbers_stay_numbers(tmp_path):
    ids = [*HOSTILE, "case-1"]
    n = len(ids)
    logits = torch.tensor(np.linspace(-1.0, 1.0, 2 * n, dtype=np.float32).reshape(n, 2))
    labels = torch.tensor([0, 1, -1, 1, 0, 1, 0, 1])  # -1: a missing label, a number

    def step(engine, _):
        return {"pred": {"t": logits}, "label": {"t": labels}}

    engine = Engine(step)
    EvaluationWriter(tmp_path, {"t": 2}, id_key="id", n_bootstrap=0).attach(engine)
    engine.run([{"id": ids}])
    header, *rows = _rows(tmp_path / "predictions.csv")
    by_column = dict(zip(header, zip(*rows)))
    assert list(by_column["id"]) == ["'" + i for i in HOSTILE] + ["case-1"]
    assert [unescape_cell(c) for c in by_column["id"]] == ids  # the escape is reversible for readers
    assert by_column["t_label"][2] == "-1"  # numbers are not escaped
    assert all(not cell.startswith("'") for cell in by_column["t_prob_0"])
    assert float(by_column["t_prob_0"][0]) > 0


def test_every_text_cell_header_and_index_label_is_escaped_numbers_and_negative_numbers_are_not(tmp_path):
    frame = pd.DataFrame(
        {"=col": ["@a", "ok"], "value": [-0.5, -3], "as_text": ["-0.5", "-3e2"], "cat": pd.Categorical(["+x", "y"])},
        index=pd.Index(["-evil()", "fine"], name="id"),
    )
    rows = _rows(atomic_write_csv(tmp_path / "t.csv", frame))
    assert rows == [
        ["id", "'=col", "value", "as_text", "cat"],
        ["'-evil()", "'@a", "-0.5", "-0.5", "'+x"],
        ["fine", "ok", "-3.0", "-3e2", "y"],
    ]
    assert list(frame.columns)[0] == "=col" and frame.iloc[0, 0] == "@a"  # the caller's frame is left as it was


def test_atomic_write_rows_escapes_like_atomic_write_csv(tmp_path):
    path = atomic_write_rows(
        tmp_path / "c.csv", [{"id": "=1+1", "label": -1}, {"id": "a", "label": 2}], ["id", "label"]
    )
    assert _rows(path) == [["id", "label"], ["'=1+1", "-1"], ["a", "2"]]


def test_escape_cell_leaves_safe_values_alone():
    assert escape_cell("case-1") == "case-1" and escape_cell(-1) == -1 and escape_cell(None) is None
    assert escape_cell("-.5") == "-.5" and escape_cell("-1e-3") == "-1e-3"
    assert escape_cell("-") == "'-" and escape_cell("-inf") == "'-inf"
    assert unescape_cell("'plain") == "'plain"
