"""Paired comparison of two models: DeLong's p-value, paired bootstrap coverage, the compare table and CLI."""

import math

import numpy as np
import pandas as pd
import pytest
from medmoe.apps.evaluate.__main__ import main

from medmoe.metrics import (
    compare_classification,
    compare_segmentation,
    paired_auroc_difference,
    paired_mean_difference,
    verdict,
)


def _delong_by_definition(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """DeLong et al. (1988) written out with the O(m n) kernel psi: an independent reference for the p-value."""
    pos, neg = y == 1, y == 0
    comps10, comps01 = [], []
    for s in (a, b):
        x, z = s[pos][:, None], s[neg][None, :]
        psi = (x > z) + 0.5 * (x == z)
        comps10.append(psi.mean(1))  # V10 of each positive
        comps01.append(psi.mean(0))  # V01 of each negative
    m, n = pos.sum(), neg.sum()
    s10, s01 = np.cov(np.stack(comps10)), np.cov(np.stack(comps01))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    z = (comps10[0].mean() - comps10[1].mean()) / math.sqrt(var)
    return math.erfc(abs(z) / math.sqrt(2))


def test_delong_p_value_matches_the_definition_on_a_small_case():
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 0, 1])
    a = np.array([0.9, 0.2, 0.7, 0.6, 0.65, 0.1, 0.8, 0.3, 0.5, 0.4, 0.2, 0.95])
    b = np.array([0.6, 0.4, 0.5, 0.7, 0.6, 0.2, 0.3, 0.35, 0.5, 0.45, 0.1, 0.6])  # ties inside and across classes
    r = paired_auroc_difference(y, a, b, n_resamples=200)
    assert r["p_value"] == pytest.approx(_delong_by_definition(y, a, b), rel=1e-9)
    pos = y == 1
    auc_a = np.mean([(x > z) + 0.5 * (x == z) for x in a[pos] for z in a[~pos]])
    assert r["auroc_a"] == pytest.approx(auc_a) and r["difference"] == pytest.approx(r["auroc_a"] - r["auroc_b"])
    assert r["n"] == 12 and r["n_positive"] == 6


def test_paired_bootstrap_interval_covers_the_true_auroc_difference():
    # Binormal scores sharing a per-case latent u (so the two models' errors are correlated): s = mu y + u + e,
    # u ~ N(0, 1), e ~ N(0, 0.5^2): AUROC = Phi(mu / sqrt(2 * 1.25)) exactly.
    phi = lambda x: 0.5 * math.erfc(-x / math.sqrt(2))  # noqa: E731
    mu_a, mu_b = 1.2, 0.8
    truth = phi(mu_a / math.sqrt(2.5)) - phi(mu_b / math.sqrt(2.5))
    rng = np.random.default_rng(0)
    covered, repeats = 0, 300
    for r in range(repeats):
        y = (rng.random(150) < 0.4).astype(int)
        u = rng.normal(size=150)
        a = mu_a * y + u + 0.5 * rng.normal(size=150)
        b = mu_b * y + u + 0.5 * rng.normal(size=150)
        res = paired_auroc_difference(y, a, b, n_resamples=400, seed=r)
        covered += res["ci_low"] <= truth <= res["ci_high"]
    assert covered / repeats >= 0.90, covered / repeats  # measured 0.947 (nominal 0.95); numpy draws only


def test_paired_mean_difference_covers_and_reads():
    rng = np.random.default_rng(1)
    covered = 0
    for r in range(300):
        base = rng.beta(8, 2, size=80)  # per-case Dice of B
        a = base + 0.03 + 0.05 * rng.normal(size=80)  # A: +0.03 per case on average (a shift, not clipped)
        res = paired_mean_difference(a, base, n_resamples=400, seed=r)
        covered += res["ci_low"] <= 0.03 <= res["ci_high"]
    assert covered / 300 >= 0.90, covered / 300  # measured 0.943 (nominal 0.95)
    same = paired_mean_difference(base, base, n_resamples=100)
    assert same["difference"] == 0.0 and same["p_value"] == 1.0 and same["verdict"] == "no evidence of a difference"
    nan = paired_mean_difference(np.array([0.5, np.nan, 0.7]), np.array([0.4, 0.3, 0.6]), n_resamples=50)
    assert nan["n"] == 2 and nan["n_dropped"] == 1 and nan["difference"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="one length"):
        paired_mean_difference(np.ones(3), np.ones(4))


def test_verdict_words():
    assert verdict(-0.01, 0.02) == "no evidence of a difference"
    assert (
        verdict(0.01, 0.02, ("moe", "base")) == "moe higher" and verdict(-0.3, -0.1, ("moe", "base")) == "base higher"
    )
    assert verdict(float("nan"), 0.1) == "undefined"


def _bundle_predictions(rng: np.random.Generator, n: int, noise: float, seed_scores: np.ndarray) -> pd.DataFrame:
    """A bundle-style predictions.csv: binary task 'risk', 3-class task 'density', labels in <task>_label."""
    risk_y = (np.arange(n) % 3 == 0).astype(int)
    dens_y = np.arange(n) % 3
    risk_s = 1 / (1 + np.exp(-(2.5 * risk_y - 1 + seed_scores + noise * rng.normal(size=n))))
    logits = 2.0 * np.eye(3)[dens_y] + seed_scores[:, None] * 0.2 + noise * rng.normal(size=(n, 3))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    table = {"id": [f"case{i:03d}" for i in range(n)], "site": np.where(np.arange(n) < n // 2, "north", "south")}
    table.update({"risk_prob_0": 1 - risk_s, "risk_prob_1": risk_s, "risk_pred": (risk_s > 0.5).astype(int)})
    table.update({f"density_prob_{k}": probs[:, k] for k in range(3)})
    table.update({"density_pred": probs.argmax(1), "risk_label": risk_y, "density_label": dens_y})
    out = pd.DataFrame(table)
    out.loc[5, "risk_label"] = -1  # a missing label
    return out


def test_compare_classification_tasks_classes_groups_and_ids():
    rng = np.random.default_rng(0)
    shared = rng.normal(size=120)
    a = _bundle_predictions(rng, 120, 0.3, shared)
    b = _bundle_predictions(rng, 120, 3.0, shared).sample(frac=1.0, random_state=0)  # another row order
    res = compare_classification(a, b, group_by="site", names=("moe", "base"), n_resamples=300)
    keys = {(r["task"], r["class"], r["group"]) for r in res["rows"]}
    assert ("risk", None, None) in keys and ("risk", None, "north") in keys and ("risk", None, "south") in keys
    assert {("density", c, None) for c in "012"} <= keys
    risk = next(r for r in res["rows"] if (r["task"], r["class"], r["group"]) == ("risk", None, None))
    assert risk["n"] == 119  # the missing label is left out
    assert risk["verdict"] == "moe higher" and risk["p_value"] < 0.01 and risk["ci_low"] > 0
    assert set(res["curves"][("risk", None)]) == {"moe", "base"}
    with pytest.raises(ValueError, match=r"only in base: case999"):
        compare_classification(
            a, pd.concat([b, b.iloc[[0]].assign(id="case999")]), names=("moe", "base"), n_resamples=10
        )


def test_compare_segmentation_on_per_case_tables():
    rng = np.random.default_rng(2)
    ids = [f"c{i}" for i in range(60)]
    base = rng.beta(6, 2, size=60)
    a = pd.DataFrame({"id": ids, "dice_cup": base, "dice_disc": base})
    b = pd.DataFrame({"id": ids[::-1], "dice_cup": base[::-1] - 0.1, "dice_disc": base[::-1]})
    res = compare_segmentation(a, b, names=("moe", "unet"), n_resamples=300)
    rows = {r["metric"]: r for r in res["rows"]}
    assert rows["dice_cup"]["difference"] == pytest.approx(0.1) and rows["dice_cup"]["verdict"] == "moe higher"
    assert rows["dice_disc"]["difference"] == 0.0 and rows["dice_disc"]["verdict"] == "no evidence of a difference"


def test_compare_cli_writes_report_plots_and_says_no_evidence(tmp_path, capsys):
    rng = np.random.default_rng(0)
    shared = rng.normal(size=90)
    a = _bundle_predictions(rng, 90, 0.5, shared)
    b = a.copy()
    for c in [c for c in b.columns if "_prob_" in c]:  # the same model up to rounding noise
        b[c] = b[c] + 1e-4 * rng.normal(size=len(b))
    a.to_csv(tmp_path / "a.csv", index=False)
    b.to_csv(tmp_path / "b.csv", index=False)
    out = tmp_path / "cmp"
    code = main(["compare", "--a", str(tmp_path / "a.csv"), "--b", str(tmp_path / "b.csv"), "--names", "m4oe",
                 "vit", "--out-dir", str(out), "--n-bootstrap", "200", "--quiet"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "risk AUROC: m4oe" in printed and "no evidence of a difference" in printed
    table = pd.read_csv(out / "comparison.csv")
    assert len(table) == 4 and set(table["model_b"]) == {"vit"}  # risk + 3 density classes
    assert (table["verdict"] == "no evidence of a difference").all()
    assert (out / "comparison.md").read_text().count("\n- ") >= 4
    assert (out / "roc_risk.png").is_file() and (out / "roc_density_class_2.png").is_file()
    code = main(["compare", "--a", str(tmp_path / "a.csv"), "--b", str(tmp_path / "b.csv"), "--segmentation-a",
                 str(tmp_path / "a.csv"), "--out-dir", str(out)])  # fmt: skip
    assert code == 2 and "--segmentation-b" in capsys.readouterr().err
