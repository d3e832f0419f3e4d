"""Classification metrics of medmoe.metrics agree with scikit-learn; bad input gives clear errors."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    roc_auc_score,
)

from medmoe.metrics import (
    bootstrap,
    choose_threshold,
    evaluate_classification,
    precision_recall_curve,
    reliability_curve,
    weighted_auroc,
    weighted_average_precision,
    weighted_ece,
)


def _value(res, metric, cls=None, group=None, task=None):
    hits = [
        e
        for e in res["metrics"]
        if e["metric"] == metric and e["class"] == cls and e["group"] == group and (task is None or e["task"] == task)
    ]
    assert len(hits) == 1, (metric, cls, group, hits)
    return hits[0]


@pytest.mark.parametrize("seed", range(5))
def test_weighted_metrics_match_sklearn_sample_weight(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    y = rng.integers(0, 2, n).astype(bool)
    s = np.round(rng.normal(size=n) + y, 1)  # rounding creates ties
    w = rng.integers(0, 4, (3, n)).astype(float)
    np.testing.assert_allclose(weighted_auroc(s, y, w), [roc_auc_score(y, s, sample_weight=r) for r in w], atol=1e-9)
    np.testing.assert_allclose(
        weighted_average_precision(s, y, w), [average_precision_score(y, s, sample_weight=r) for r in w], atol=1e-9
    )


@pytest.mark.parametrize("seed", range(4))
def test_binary_and_multiclass_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 250
    yb = rng.integers(0, 2, n)
    score = np.round(rng.normal(size=n) + yb, 2)
    ym = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[ym]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = pd.DataFrame({"id": np.arange(n), "b_score": score, **{f"m_prob_{k}": probs[:, k] for k in range(3)}})
    true = pd.DataFrame({"id": np.arange(n)[::-1], "b": yb[::-1], "m": ym[::-1]})  # order differs: joined on id
    res = evaluate_classification(pred, true, n_bootstrap=0, threshold=0.3)
    assert _value(res, "auroc", task="b")["value"] == pytest.approx(roc_auc_score(yb, score), abs=1e-6)
    assert _value(res, "auprc", task="b")["value"] == pytest.approx(average_precision_score(yb, score), abs=1e-6)
    hard = (score >= 0.3).astype(int)
    assert _value(res, "accuracy", task="b")["value"] == pytest.approx(accuracy_score(yb, hard), abs=1e-12)
    assert _value(res, "balanced_accuracy", task="b")["value"] == pytest.approx(balanced_accuracy_score(yb, hard))
    assert _value(res, "sensitivity", task="b")["value"] == pytest.approx(hard[yb == 1].mean())
    assert _value(res, "specificity", task="b")["value"] == pytest.approx(1 - hard[yb == 0].mean())
    macro = roc_auc_score(ym, probs, multi_class="ovr", average="macro")
    assert _value(res, "auroc", task="m")["value"] == pytest.approx(macro, abs=1e-6)
    for k in range(3):
        assert _value(res, "auroc", str(k), task="m")["value"] == pytest.approx(roc_auc_score(ym == k, probs[:, k]))
        assert _value(res, "auprc", str(k), task="m")["value"] == pytest.approx(
            average_precision_score(ym == k, probs[:, k]), abs=1e-6
        )
    assert _value(res, "accuracy", task="m")["value"] == pytest.approx(accuracy_score(ym, probs.argmax(1)))
    assert _value(res, "balanced_accuracy", task="m")["value"] == pytest.approx(
        balanced_accuracy_score(ym, probs.argmax(1))
    )


def test_multilabel_missing_labels_and_macro():
    rng = np.random.default_rng(1)
    n = 200
    ya, yb = rng.integers(0, 2, n).astype(float), rng.integers(0, 2, n).astype(float)
    yb[:20] = np.nan  # missing labels are ignored for that label only
    pa, pb = rng.random(n) * 0.5 + 0.5 * ya, rng.random(n)
    df = pd.DataFrame({"id": range(n), "f_a": ya, "f_b": yb, "f_prob_a": pa, "f_prob_b": pb})
    res = evaluate_classification(df, multilabel={"f": ["a", "b"]}, n_bootstrap=20)
    auc_a, auc_b = roc_auc_score(ya, pa), roc_auc_score(yb[20:], pb[20:])
    assert _value(res, "auroc", "a")["value"] == pytest.approx(auc_a)
    assert _value(res, "auroc", "b")["value"] == pytest.approx(auc_b)
    assert _value(res, "auroc", "b")["n"] == 180
    assert _value(res, "auroc")["value"] == pytest.approx((auc_a + auc_b) / 2)


def test_bootstrap_ci_brackets_value_and_is_seeded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p1 = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1)
    df = pd.DataFrame({"id": range(300), "t": y, "t_prob_0": 1 - p1, "t_prob_1": p1})
    a = evaluate_classification(df, n_bootstrap=200, seed=3)
    b = evaluate_classification(df, n_bootstrap=200, seed=3)
    assert a["metrics"] == b["metrics"]
    for e in a["metrics"]:
        assert e["ci_low"] <= e["value"] <= e["ci_high"], e
    assert _value(a, "ece")["value"] >= 0


def test_ece_hand_value_overconfident_constant_prediction():
    """100 cases all at p(1) = 0.9 with labels alternating 0 / 1: one bin, |0.5 - 0.9| = 0.4."""
    y = np.arange(100) % 2
    p1 = np.full(100, 0.9)
    df = pd.DataFrame({"id": range(100), "t": y, "t_prob_0": 1 - p1, "t_prob_1": p1})
    res = evaluate_classification(df, n_bootstrap=20, seed=0)
    assert _value(res, "ece")["value"] == pytest.approx(0.4)
    assert weighted_ece(p1, y, np.ones((1, 100)))[0] == pytest.approx(0.4)


@pytest.mark.parametrize("seed", range(3))
def test_weighted_ece_matches_a_loop_over_bins(seed):
    rng = np.random.default_rng(seed)
    n, n_bins = 500, 10
    confidence = rng.random(n)
    confidence[:5] = [0.0, 0.1, 0.5, 0.95, 1.0]  # bin edges and the closed last bin
    correct = (rng.random(n) < confidence**2).astype(int)  # over-confident, so every bin has a gap
    weights = rng.integers(0, 4, (3, n)).astype(float)  # three bootstrap-style weight rows
    expected = []
    for w in weights:
        total = 0.0
        for b in range(n_bins):
            lo, hi = b / n_bins, (b + 1) / n_bins
            inside = (confidence >= lo) & ((confidence < hi) if b < n_bins - 1 else (confidence <= hi))
            if w[inside].sum() > 0:
                acc = np.average(correct[inside], weights=w[inside])
                conf = np.average(confidence[inside], weights=w[inside])
                total += w[inside].sum() / w.sum() * abs(acc - conf)
        expected.append(total)
    np.testing.assert_allclose(weighted_ece(confidence, correct, weights, n_bins), expected, rtol=1e-10)
    assert min(expected) > 0.05


def test_threshold_chosen_on_validation_split_and_groups():
    rng = np.random.default_rng(2)
    n = 400
    y = rng.integers(0, 2, n)
    s = rng.normal(size=n) + 2 * y
    split = np.where(np.arange(n) < 150, "val", "test")
    site = np.where(np.arange(n) % 3 == 0, "A", "B")
    df = pd.DataFrame({"id": range(n), "t": y, "t_score": s, "split": split, "site": site})
    res = evaluate_classification(df, threshold_split="val", group_by="site", n_bootstrap=0)
    thr = choose_threshold(s[:150], y[:150] == 1)
    assert res["tasks"][0]["thresholds"]["1"] == pytest.approx(thr)
    test = slice(150, None)
    assert _value(res, "auroc")["n"] == 250
    assert _value(res, "auroc")["value"] == pytest.approx(roc_auc_score(y[test], s[test]))
    assert _value(res, "sensitivity")["value"] == pytest.approx((s[test][y[test] == 1] >= thr).mean())
    ga = (site == "A") & (split == "test")
    assert _value(res, "auroc", group="site=A")["value"] == pytest.approx(roc_auc_score(y[ga], s[ga]))
    assert _value(res, "auroc", group="site=A")["n"] == ga.sum()
    assert choose_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1], bool)) == 0.8
    assert choose_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 1, 1, 1], bool), "sensitivity=1") == 0.2


def test_single_class_is_reported_not_fatal():
    df = pd.DataFrame(
        {
            "id": range(6),
            "a": [1] * 6,
            "a_score": np.linspace(0, 1, 6),
            "b": [0, 1, 0, 1, 0, 1],
            "b_score": [0.1, 0.9, 0.2, 0.8, 0.3, 0.7],
        }
    )
    res = evaluate_classification(df, n_bootstrap=10)
    assert np.isnan(_value(res, "auroc", task="a")["value"])
    assert any("AUROC undefined" in note for note in res["tasks"][0]["notes"])
    assert _value(res, "auroc", task="b")["value"] == 1.0


def test_errors_name_the_offending_ids():
    pred = pd.DataFrame({"id": ["a", "b", "c"], "t_score": [0.1, 0.5, 0.9]})
    msg = r"in the predictions but not in the labels: c.*in the labels but not in the predictions: d"
    with pytest.raises(ValueError, match=msg):
        evaluate_classification(pred, pd.DataFrame({"id": ["a", "b", "d"], "t": [0, 1, 1]}))
    with pytest.raises(ValueError, match=r"labels outside the expected set \[0, 1\].*ids b"):
        evaluate_classification(pred, pd.DataFrame({"id": ["a", "b", "c"], "t": [0, 2, 1]}))
    bad = pred.assign(t_score=[0.1, np.inf, 0.3])
    with pytest.raises(ValueError, match="non-finite.*ids b"):
        evaluate_classification(bad, pd.DataFrame({"id": ["a", "b", "c"], "t": [0, 1, 1]}))
    with pytest.raises(ValueError, match="duplicate ids.*a"):
        evaluate_classification(pd.concat([pred, pred.iloc[:1]]), pd.DataFrame({"id": ["a", "b", "c"], "t": [0, 1, 1]}))
    with pytest.raises(ValueError, match="no prediction columns for task"):
        evaluate_classification(pred, pd.DataFrame({"id": ["a", "b", "c"], "t": [0, 1, 1]}), tasks=["x"])


def test_case_mix_metrics_resample_cases_without_stratification():
    y = np.array([1] * 7 + [0] * 27)
    df = pd.DataFrame({"id": range(34), "t": y, "t_score": np.linspace(0.05, 0.45, 34)})  # predicts 0 everywhere
    res = evaluate_classification(df, n_bootstrap=500, seed=0)
    accuracy = _value(res, "accuracy")
    assert accuracy["value"] == pytest.approx(27 / 34)
    assert accuracy["ci_low"] < 0.75 and accuracy["ci_high"] > 0.85  # the case mix varies between resamples
    assert (_value(res, "sensitivity")["ci_low"], _value(res, "sensitivity")["ci_high"]) == (0.0, 0.0)
    scores = df["t_score"].to_numpy()
    strat = bootstrap(lambda w: {"auroc": weighted_auroc(scores, y == 1, w)}, 34, y, n_resamples=500, seed=0)
    auroc = _value(res, "auroc")
    assert (auroc["value"], auroc["ci_low"], auroc["ci_high"]) == strat["auroc"]  # class-stratified resamples
    assert "stratified by class except accuracy" in res["config"]["ci_method"]


def test_single_class_on_validation_leaves_the_threshold_metrics_out():
    split = ["val"] * 4 + ["test"] * 6
    df = pd.DataFrame(
        {
            "id": range(10),
            "a": [0, 0, 0, 0, 0, 1, 0, 1, 0, 1],  # validation has no positive
            "a_score": np.linspace(0, 1, 10),
            "b": [0, 1, 0, 1, 0, 1, 0, 1, 0, 1],
            "b_score": [0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.2, 0.6, 0.4, 0.9],
            "split": split,
        }
    )
    res = evaluate_classification(df, threshold_split="val", n_bootstrap=20)
    task_a = next(t for t in res["tasks"] if t["name"] == "a")
    assert task_a["thresholds"] == {"1": None}
    assert any("no threshold" in note for note in task_a["notes"])
    assert {e["metric"] for e in res["metrics"] if e["task"] == "a"} >= {"auroc", "auprc"}
    assert not {e["metric"] for e in res["metrics"] if e["task"] == "a"} & {"accuracy", "sensitivity"}
    assert _value(res, "accuracy", task="b")["value"] == pytest.approx(4 / 6)  # threshold 0.8 from validation


def test_minus_one_is_a_missing_label_as_in_the_cohort_csvs():
    df = pd.DataFrame({"id": range(6), "t": [0, 1, -1, 0, 1, -1], "t_score": [0.1, 0.9, 0.5, 0.2, 0.8, 0.4]})
    res = evaluate_classification(df, n_bootstrap=0)
    assert _value(res, "auroc")["n"] == 4 and _value(res, "auroc")["value"] == 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_curves_match_sklearn(seed):
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve as sk_pr

    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.3
    scores = np.round(np.clip(0.35 * y + rng.random(300) * 0.65, 0, 1), 2)  # ties included
    recall, precision = precision_recall_curve(scores, y)
    sk_precision, sk_recall, _ = sk_pr(y, scores)
    np.testing.assert_allclose(recall[::-1], sk_recall, atol=1e-12)
    np.testing.assert_allclose(precision[::-1], sk_precision, atol=1e-12)
    prob = rng.random(300)
    hit = rng.random(300) < prob
    rel = reliability_curve(prob, hit, n_bins=8)
    observed, confidence = calibration_curve(hit, prob, n_bins=8, strategy="uniform")
    seen = rel["count"] > 0
    np.testing.assert_allclose(rel["observed"][seen], observed, atol=1e-12)
    np.testing.assert_allclose(rel["confidence"][seen], confidence, atol=1e-12)
    assert rel["count"].sum() == 300
