"""The evaluation app matches ids that medmoe wrote with the formula escape (``'=x``) to the raw ids of a labels CSV."""

import json

import numpy as np
import pandas as pd
from medmoe.apps.evaluate.__main__ import main

from medmoe.utils import atomic_write_csv

IDS = ["=HYPERLINK(1)", "+1", "@x", "-2+3", "case-1", "case-2", "-7", "c"]


def test_escaped_prediction_ids_match_raw_label_ids(tmp_path):
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    score = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.6, 0.4])
    predictions = pd.DataFrame({"id": IDS, "t_prob_0": 1 - score, "t_prob_1": score})
    atomic_write_csv(tmp_path / "predictions.csv", predictions, index=False)  # ids escaped: "'=HYPERLINK(1)", ...
    pd.DataFrame({"id": IDS, "t": labels}).to_csv(tmp_path / "labels.csv", index=False)  # a user's raw file
    assert "'=HYPERLINK(1)" in (tmp_path / "predictions.csv").read_text()
    out = tmp_path / "out"
    args = ["auroc", "--predictions", str(tmp_path / "predictions.csv"), "--labels", str(tmp_path / "labels.csv")]
    assert main([*args, "--n-bootstrap", "0", "--out-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    auroc = next(m for m in metrics if m["metric"] == "auroc" and m["task"] == "t")
    assert auroc["n"] == 8 and auroc["value"] == 15 / 16  # all 8 rows joined; 1 of 16 pairs ranked wrong
