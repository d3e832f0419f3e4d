"""End to end: ``python -m medmoe.apps.evaluate {auroc,dice}`` writes metrics.json, CSVs, plots and report.md."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from medmoe.apps.evaluate.__main__ import build_parser, main
from medmoe.apps.evaluate.example import make_classification_example, make_segmentation_example
from sklearn.metrics import accuracy_score, roc_auc_score

from medmoe.metrics import choose_threshold


def _check_outputs(out):
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["metrics"]
    for e in payload["metrics"]:
        assert {"task", "metric", "class", "group", "value", "ci_low", "ci_high", "n"} <= set(e)
    report = (out / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert images and all((out / img).is_file() for img in images)
    assert not list(out.glob(".*.tmp*"))  # no temp files left behind
    return payload, report


def test_auroc_cli_end_to_end(tmp_path, capsys):
    paths = make_classification_example(tmp_path / "in", n=240)
    out = tmp_path / "out"
    rc = main(
        [
            "auroc",
            "--predictions",
            str(paths["predictions"]),
            "--labels",
            str(paths["labels"]),
            "--multilabel",
            "findings:mass,calc",
            "--threshold-split",
            "val",
            "--group-by",
            "site",
            "--compare-with",
            str(paths["baseline"]),
            "--n-bootstrap",
            "50",
            "--out-dir",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    payload, report = _check_outputs(out)
    assert {t["name"] for t in payload["tasks"]} == {"malignancy", "density", "findings"}
    groups = {e["group"] for e in payload["metrics"]}
    assert {None, "site=A", "site=B", "site=C"} <= groups
    assert "DeLong" in report and (out / "comparisons.csv").is_file()
    assert (out / "roc_malignancy.png").is_file() and (out / "calibration_malignancy.png").is_file()
    assert "malignancy: auroc" in capsys.readouterr().out

    # values: malignancy is scored on the labelled test rows, its threshold chosen on the labelled val rows
    rows = pd.read_csv(paths["labels"]).merge(pd.read_csv(paths["predictions"]), on="id")
    rows = rows[rows["malignancy"].notna()]
    test, val = rows[rows["split"] == "test"], rows[rows["split"] == "val"]
    assert len(test) and len(val)
    task = next(t for t in payload["tasks"] if t["name"] == "malignancy")
    overall = {e["metric"]: e for e in payload["metrics"] if e["task"] == "malignancy" and e["group"] is None}
    assert task["n"] == overall["auroc"]["n"] == len(test)
    assert overall["auroc"]["value"] == pytest.approx(roc_auc_score(test["malignancy"], test["malignancy_prob_1"]))
    threshold = choose_threshold(val["malignancy_prob_1"].to_numpy(), val["malignancy"].to_numpy() == 1)
    assert task["thresholds"]["1"] == pytest.approx(threshold)
    predicted = (test["malignancy_prob_1"] >= threshold).astype(int)
    assert overall["accuracy"]["value"] == pytest.approx(accuracy_score(test["malignancy"], predicted))
    on_test = choose_threshold(test["malignancy_prob_1"].to_numpy(), test["malignancy"].to_numpy() == 1)
    assert not np.isclose(threshold, on_test)  # (so a threshold chosen on the wrong rows is noticed)


def test_auroc_cli_reports_bad_input(tmp_path, capsys):
    pd.DataFrame({"id": ["a", "b"], "t_score": [0.2, 0.8]}).to_csv(tmp_path / "p.csv", index=False)
    pd.DataFrame({"id": ["a", "c"], "t": [0, 1]}).to_csv(tmp_path / "l.csv", index=False)
    rc = main(
        [
            "auroc",
            "--predictions",
            str(tmp_path / "p.csv"),
            "--labels",
            str(tmp_path / "l.csv"),
            "--out-dir",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "error: ids do not match" in err and ": b" in err and ": c" in err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_dice_cli_end_to_end(tmp_path):
    pairs = make_segmentation_example(tmp_path / "masks", n=5, size=16)
    out = tmp_path / "out"
    assert (
        main(
            [
                "dice",
                "--pairs",
                str(pairs),
                "--group-by",
                "site",
                "--n-bootstrap",
                "50",
                "--n-worst",
                "2",
                "--out-dir",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    payload, _ = _check_outputs(out)
    assert payload["labels"] == [1, 2]
    per_case = pd.read_csv(out / "per_case.csv")
    assert len(per_case) == 10 and set(per_case.columns) >= {"id", "label", "dice", "iou", "hd95", "assd", "site"}
    assert len(list(out.glob("overlay_*.png"))) == 2
    rc = main(
        [
            "dice",
            "--pred-dir",
            str(tmp_path / "masks/pred"),
            "--truth-dir",
            str(tmp_path / "masks/truth"),
            "--metadata",
            str(pairs),
            "--group-by",
            "site",
            "--n-bootstrap",
            "0",
            "--out-dir",
            str(tmp_path / "o2"),
            "--quiet",
        ]
    )
    assert rc == 0
    from_folders = pd.read_csv(tmp_path / "o2" / "per_case.csv")
    keys = ["id", "label"]
    pd.testing.assert_frame_equal(
        from_folders.sort_values(keys).reset_index(drop=True)[per_case.columns],
        per_case.sort_values(keys).reset_index(drop=True),
    )


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    assert "auroc" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dice", "--help"])
    assert "--pred-dir" in capsys.readouterr().out
