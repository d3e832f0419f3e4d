"""Fast version of benchmarks/i2moe_synthetic.py: known interactions, the matching expert, the JSON fields."""

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "i2moe_synthetic.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("i2moe_synthetic", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_sets_carry_the_interaction(bench):
    uniq = bench.make_set("uniqueness", 3000, 4, seed=0)
    assert set(uniq["y"].tolist()) == {0, 1, 2}
    assert abs((uniq["y"] == 0).float().mean().item() - 1 / 3) < 0.03  # equal-probability bins
    torch.testing.assert_close(uniq["y"], bench._bins(uniq["m1"][:, 0], 3))
    red = bench.make_set("redundancy", 3000, 4, seed=0)
    assert (bench._bins(red["m1"][:, 0], 3) == bench._bins(red["m2"][:, 0], 3)).float().mean() > 0.85
    syn = bench.make_set("synergy", 6000, 4, seed=0)
    a, b = bench._bins(syn["m1"][:, 0], 3), bench._bins(syn["m2"][:, 0], 3)
    torch.testing.assert_close(syn["y"], (a + b) % 3)
    for single in (a, b):  # neither modality alone says anything: P(y | a) is uniform for every a
        for value in range(3):
            freq = torch.bincount(syn["y"][single == value], minlength=3).float()
            assert (freq / freq.sum() - 1 / 3).abs().max() < 0.04
    xor = bench.make_set("synergy", 200, 4, seed=0, classes=2)
    torch.testing.assert_close(xor["y"], ((xor["m1"][:, 0] > 0) ^ (xor["m2"][:, 0] > 0)).long())
    # feature_noise: the same draw plus N(0, 0.3^2) on coordinate 0 of each modality, the label unchanged
    weak = bench.make_set("synergy", 6000, 4, seed=0, feature_noise=0.3)
    torch.testing.assert_close(weak["y"], syn["y"])
    for key in ("m1", "m2"):
        torch.testing.assert_close(weak[key][:, 1:], syn[key][:, 1:])
        assert abs((weak[key][:, 0] - syn[key][:, 0]).std().item() - 0.3) < 0.02
    with pytest.raises(ValueError, match="feature_noise"):
        bench.make_set("synergy", 10, 4, seed=0, feature_noise=-1.0)
    with pytest.raises(ValueError, match="unknown interaction"):
        bench.make_set("xor", 10, 4, seed=0)
    with pytest.raises(ValueError, match="unknown set"):
        bench.run(sets=("xor",))


# The thresholds below are set from benchmarks/learning_spread.py (benchmarks/results/learning_spread.json): each
# configuration rerun at seeds 0-4 and, at seed 0, under four other CPU code paths (PyTorch's AVX2 / default kernels,
# MKL's AVX2 / SSE4.2 paths: what changes when CI moves from an Intel to an AMD machine). Every threshold leaves a
# margin of at least 0.1 below the worst of those ten runs. Accuracy *gains* over vanilla are not asserted: in the
# 1000-sample regime per_expert - vanilla ranged from -0.027 to +0.020 over the ten runs, the same size as the gain;
# that claim lives in the benchmark with its spread (docs/methods/i2moe.md).


def test_quick_run_finds_the_matching_expert(bench):
    # per_expert (mixed masking, centred logits, per-expert task loss 0.5), benchmark defaults (T = 2), seed 0,
    # 500 steps, 1000 samples. Worst of the ten runs: uniqueness weight 0.49 on unique_m1 (uniform 0.25; another
    # expert reached 0.47, so which expert is on top is not asserted there), unique_m1 alone 0.95; synergy weight
    # 0.87 on the synergy expert (others <= 0.12), the synergy expert alone 0.77, the uniqueness experts alone
    # <= 0.44 (chance 1/3 for all).
    torch.set_num_threads(1)
    results = bench.run(
        n_train=1000, n_test=600, steps=500, seeds=(0,), sets=("uniqueness", "synergy"), variants=("per_expert",)
    )
    for kind, s in results["sets"].items():
        r = s["per_expert"]
        assert s["vanilla"]["accuracy"]["mean"] > 0.6 and r["accuracy"]["mean"] > 0.6, (kind, s)
        weights = {k: w["mean"] for k, w in r["mean_weights"].items()}
        assert abs(sum(weights.values()) - 1.0) < 1e-3
        # the matching expert gets well above a uniform share (0.25) ...
        assert weights[s["matching_expert"]] > 0.35, (kind, weights)
        # ... and predicts the label on its own (chance = 1/3)
        alone = {k: a["mean"] for k, a in r["expert_accuracy"].items()}
        assert alone[s["matching_expert"]] > 0.6, (kind, alone)
    synergy = results["sets"]["synergy"]["per_expert"]
    weights = {k: w["mean"] for k, w in synergy["mean_weights"].items()}
    assert synergy["top_expert"] == "synergy" and weights["synergy"] > 0.7 > 0.3 > max(
        w for k, w in weights.items() if k != "synergy"
    ), weights
    # on the synergy set the uniqueness experts cannot: under shuffle masking neither can use the other modality
    alone = {k: a["mean"] for k, a in synergy["expert_accuracy"].items()}
    assert max(alone["unique_m1"], alone["unique_m2"]) < 0.55, alone
    # the summary says what the runs say
    assert results["summary"]["per_expert"]["top_expert_matches"]["synergy"] is True
    s = results["sets"]["synergy"]
    beats = s["per_expert"]["accuracy"]["mean"] > s["vanilla"]["accuracy"]["mean"]
    assert results["summary"]["per_expert"]["beats_vanilla_on_synergy"] is beats
    assert results["config"]["variants"]["per_expert"]["expert_task_weight"] == 0.5


def test_thousand_sample_synergy_puts_the_synergy_expert_on_top(bench):
    # The 1000-training-sample regime (--n-train 1000), seed 0, per_expert. Worst of the ten runs: 0.95 of the weight
    # on the synergy expert, accuracy 0.84 (chance 1/3).
    torch.set_num_threads(1)
    results = bench.run(n_train=1000, seeds=(0,), sets=("synergy",), variants=("per_expert",))
    s = results["sets"]["synergy"]["per_expert"]
    assert s["top_expert"] == "synergy" and s["mean_weights"]["synergy"]["mean"] > 0.8, s["mean_weights"]
    assert s["accuracy"]["mean"] > 0.7, s["accuracy"]


def test_partial_runs_never_overwrite_the_full_results(bench):
    import argparse

    def suffix(**options):
        defaults = dict(hard=False, quick=False, n_train=None, features=None, steps=None, redundancy_noise=0.1)
        return bench._suffix(
            argparse.Namespace(**{**defaults, "sets": None, "variants": list(bench.VARIANTS), **options})
        )

    assert suffix() == ""
    assert suffix(hard=True) == "_hard" and suffix(n_train=1000) == "_n1000"
    assert suffix(quick=True, variants=["paper"]) == "_quick_paper"
    assert suffix(sets=["redundancy"], redundancy_noise=0.3) == "_redundancy_noise03_redundancy"
