"""Fast version of benchmarks/i2moe_synthetic.py: both models learn known interactions; the JSON has every field."""

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
    uniq = bench.make_set("uniqueness", 200, 4, seed=0)
    torch.testing.assert_close(uniq["y"], (uniq["m1"][:, 0] > 0).long())
    red = bench.make_set("redundancy", 200, 4, seed=0)
    assert ((red["m1"][:, 0] > 0) == (red["m2"][:, 0] > 0)).float().mean() > 0.9
    syn = bench.make_set("synergy", 2000, 4, seed=0)
    # neither modality alone predicts the XOR label
    for key in ("m1", "m2"):
        assert abs(((syn[key][:, 0] > 0).long() == syn["y"]).float().mean().item() - 0.5) < 0.05
    with pytest.raises(ValueError, match="unknown interaction"):
        bench.make_set("xor", 10, 4, seed=0)


def test_quick_run_learns_and_reports(bench):
    torch.set_num_threads(1)
    results = bench.run(n_train=600, n_test=400, steps=120, seeds=(0,), sets=("uniqueness", "synergy"))
    for kind, r in results["sets"].items():
        assert r["vanilla_accuracy_mean"] > 0.6 and r["i2moe_accuracy_mean"] > 0.6, (kind, r)
        assert abs(sum(r["i2moe_mean_weights"].values()) - 1.0) < 1e-3
        assert r["matching_expert"] in r["i2moe_mean_weights"]
        assert set(r["i2moe_expert_accuracy"]) == set(r["i2moe_mean_weights"])
    assert set(results["top_expert_matches"]) == {"uniqueness", "synergy"}
    assert isinstance(results["i2moe_beats_vanilla_on_synergy"], bool)
