"""Model vs baseline over seeds: per-seed means and spreads, the seed ensemble's paired test, the table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medmoe.metrics.seed_table import average_over_seeds, seed_comparison, seed_table_markdown


def _predictions(y: np.ndarray, signal: float, seed: int) -> pd.DataFrame:
    """A bundle-like predictions.csv: binary task 'risk', scores = signal * y + noise."""
    rng = np.random.default_rng(seed)
    p1 = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=y.size))))
    return pd.DataFrame({"id": [f"c{i}" for i in range(y.size)], "risk_prob_0": 1 - p1, "risk_prob_1": p1,
                         "risk_label": y})  # fmt: skip


@pytest.fixture()
def runs() -> tuple[list[pd.DataFrame], list[pd.DataFrame], np.ndarray]:
    y = np.random.default_rng(0).integers(0, 2, 200)
    return [_predictions(y, 2.0, s) for s in range(3)], [_predictions(y, 0.3, 10 + s) for s in range(3)], y


def test_per_seed_values_and_spread_match_sklearn(runs, tmp_path) -> None:
    model, baseline, y = runs
    (row,) = seed_comparison(model, baseline, "id", ("moe", "base"), n_resamples=200, report_dir=tmp_path / "cmp")
    assert (tmp_path / "cmp" / "roc_risk.png").is_file() and "risk AUROC" in (
        tmp_path / "cmp" / "comparison.md"
    ).read_text()
    expect_a = [roc_auc_score(y, m["risk_prob_1"]) for m in model]
    expect_b = [roc_auc_score(y, b["risk_prob_1"]) for b in baseline]
    assert row["row"] == "risk" and row["kind"] == "auroc"
    np.testing.assert_allclose(row["model_seeds"], expect_a, atol=1e-12)
    np.testing.assert_allclose(row["baseline_seeds"], expect_b, atol=1e-12)
    assert row["model_sd"] == pytest.approx(np.std(expect_a, ddof=1))
    assert row["difference_mean"] == pytest.approx(np.mean(expect_a) - np.mean(expect_b))
    ensemble = np.mean([m["risk_prob_1"] for m in model], axis=0)
    assert row["ensemble_model"] == pytest.approx(roc_auc_score(y, ensemble))
    # a strong signal against a weak one on 200 cases: the interval excludes 0 and the table says which is higher
    assert row["ci_low"] > 0 and row["verdict"] == "moe higher" and row["p_value"] < 0.01
    table = seed_table_markdown({"baseline_x.json": [row]}, {"baseline_x.json": ("moe", "base")}, 3)
    assert "| moe vs base | risk AUROC |" in table and "moe higher on risk" in table


def test_same_model_reads_no_difference(runs) -> None:
    model, _, _ = runs
    (row,) = seed_comparison(model, model, "id", ("moe", "base"), n_resamples=200)
    assert row["difference"] == 0 and row["difference_sd"] == 0 and row["verdict"] == "no evidence of a difference"
    table = seed_table_markdown({"b.json": [row]}, {"b.json": ("moe", "base")}, 3)
    assert "no evidence of a difference on any row" in table
    borderline = {**row, "verdict": "moe higher", "ci_low": 0.001, "ci_high": 0.1, "p_value": 0.067}
    table = seed_table_markdown({"b.json": [borderline]}, {"b.json": ("moe", "base")}, 3)
    assert "moe higher (weak: interval excludes 0, p >= 0.05)" in table
    assert "no evidence of a difference on any row; borderline (interval excludes 0, p >= 0.05): risk." in table


def test_segmentation_rows_use_per_case_dice(runs) -> None:
    model, baseline, _ = runs
    ids = model[0]["id"]
    seg_a = [pd.DataFrame({"id": ids, "dice_cup": np.full(ids.size, 0.8 + 0.01 * s)}) for s in range(3)]
    seg_b = [pd.DataFrame({"id": ids, "dice_cup": np.full(ids.size, 0.7)}) for _ in range(3)]
    for a, b in zip(seg_a, seg_b, strict=True):
        a["iou_cup"], b["iou_cup"] = a["dice_cup"] / (2 - a["dice_cup"]), b["dice_cup"] / (2 - b["dice_cup"])
    rows = seed_comparison(model, baseline, "id", ("moe", "unet"), (seg_a, seg_b), n_resamples=100)
    dice = next(r for r in rows if r["kind"] == "segmentation")
    assert dice["row"] == "dice_cup"
    assert dice["model_mean"] == pytest.approx(0.81) and dice["difference_mean"] == pytest.approx(0.11)
    table = seed_table_markdown({"u.json": rows}, {"u.json": ("moe", "unet")}, 3)
    assert "| dice_cup Dice |" in table and "| iou_cup IoU |" in table and "(Wilcoxon)" in table


def test_mismatched_runs_are_errors(runs) -> None:
    model, baseline, _ = runs
    with pytest.raises(ValueError, match="same number of seed runs"):
        seed_comparison(model, baseline[:2], "id", ("a", "b"))
    shifted = model[1].assign(risk_label=1 - model[1]["risk_label"])
    with pytest.raises(ValueError, match="risk_label.*differs between seed runs"):
        average_over_seeds([model[0], shifted], "id")
    with pytest.raises(ValueError, match="other cases"):
        average_over_seeds([model[0], model[1].iloc[:-1]], "id")
