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


def test_quick_run_finds_the_matching_expert(bench):
    # per_expert (mixed masking, centred logits, per-expert task loss 0.5), benchmark defaults (T = 2), seed 0.
    # At this short length (500 steps, 1000 samples) the assertions below held for seeds 0, 1 and 2 (top weight
    # uniqueness 0.62-0.65 vs <= 0.36 for any other expert, synergy 0.97-0.99 vs <= 0.02; the synergy expert
    # 0.83-0.89 alone, the uniqueness experts <= 0.44). The redundancy set is left out: at this length its
    # weights are still close to uniform (top weight redundancy in 1 of those 3 seeds; 4/5 in the full run).
    torch.set_num_threads(1)
    results = bench.run(
        n_train=1000, n_test=600, steps=500, seeds=(0,), sets=("uniqueness", "synergy"), variants=("per_expert",)
    )
    for kind, s in results["sets"].items():
        r = s["per_expert"]
        assert s["vanilla"]["accuracy"]["mean"] > 0.6 and r["accuracy"]["mean"] > 0.6, (kind, s)
        weights = {k: w["mean"] for k, w in r["mean_weights"].items()}
        assert abs(sum(weights.values()) - 1.0) < 1e-3
        # the largest mean weight is on the expert matching the interaction, by a wide margin ...
        assert r["top_expert"] == s["matching_expert"] and r["seeds_top_expert_matches"] == 1, (kind, weights)
        assert weights[s["matching_expert"]] > 0.5 > max(w for k, w in weights.items() if k != s["matching_expert"])
        # ... and it predicts the label on its own (chance = 1/3)
        alone = {k: a["mean"] for k, a in r["expert_accuracy"].items()}
        assert alone[s["matching_expert"]] > 0.75, (kind, alone)
    # on the synergy set the uniqueness experts cannot: under shuffle masking neither can use the other modality
    alone = {k: a["mean"] for k, a in results["sets"]["synergy"]["per_expert"]["expert_accuracy"].items()}
    assert max(alone["unique_m1"], alone["unique_m2"]) < 0.5, alone
    assert results["summary"]["per_expert"]["top_expert_matches"] == {"uniqueness": True, "synergy": True}
    assert isinstance(results["summary"]["per_expert"]["beats_vanilla_on_synergy"], bool)
    assert results["config"]["variants"]["per_expert"]["expert_task_weight"] == 0.5


def test_hard_synergy_i2moe_beats_vanilla(bench):
    # The --hard regime (1000 training samples, 16 features per modality, 1500 steps), seed 0, the paper's
    # losses: I2MoE 0.824 vs vanilla 0.6925 in the benchmark (5 seeds: I2MoE above vanilla in 4; see
    # docs/methods/i2moe.md). The assertion leaves a 0.05 margin below the measured 0.13 gap.
    torch.set_num_threads(1)
    results = bench.run(**{**bench.HARD, "seeds": (0,), "variants": ("paper",)})
    s = results["sets"]["synergy"]
    vanilla, i2moe = s["vanilla"]["accuracy"]["mean"], s["paper"]["accuracy"]["mean"]
    assert i2moe > vanilla + 0.05, (i2moe, vanilla)
    assert results["summary"]["paper"]["beats_vanilla_on_synergy"] is True
    assert results["config"]["n_train"] == 1000 and results["config"]["features"] == 16


def test_thousand_sample_synergy_per_expert_beats_vanilla_with_the_synergy_expert_on_top(bench):
    # The 1000-training-sample regime (--n-train 1000, benchmarks/results/i2moe_synthetic_n1000.json), seed 0:
    # per_expert 0.860 vs vanilla 0.8415 with 0.99 of the weight on the synergy expert (5 seeds: above vanilla
    # in all 5, +0.003 to +0.019; synergy on top in 5/5). The margin asserted is half the measured one.
    torch.set_num_threads(1)
    results = bench.run(n_train=1000, seeds=(0,), sets=("synergy",), variants=("per_expert",))
    s = results["sets"]["synergy"]
    vanilla, i2moe = s["vanilla"]["accuracy"]["mean"], s["per_expert"]["accuracy"]["mean"]
    assert i2moe > vanilla + 0.009, (i2moe, vanilla)
    assert s["per_expert"]["top_expert"] == "synergy"
    assert s["per_expert"]["mean_weights"]["synergy"]["mean"] > 0.9


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
