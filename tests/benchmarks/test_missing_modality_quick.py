"""Smoke test of benchmarks/missing_modality.py --quick: runs end to end and writes the documented JSON + PNG."""

from __future__ import annotations

import json
import math

import pytest


@pytest.mark.filterwarnings("ignore")
def test_quick_run_writes_json_and_plot(tmp_path, load_benchmark):
    bench = load_benchmark("missing_modality")
    out = tmp_path / "mm.json"
    modes = ["zero", "moe_masked"]  # moe_masked runs the whole "moe" path plus the masked-retrieval term
    bench.main(["--quick", "--out", str(out), "--modes", *modes])
    data = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    assert data["config"]["removed_modality"] == "key" and data["config"]["cohort"] == "views"
    assert set(data["test_time"]) == set(modes) and set(data["train_time"]) == set(modes)
    rates = ["0.00", "0.25", "0.50", "0.75"]
    for key in ("test_time", "train_time"):
        for res in data[key].values():
            assert set(res["eval"]) == {"test", "val+test"}
            for rows in res["eval"].values():
                assert sorted(rows) == rates
                for row in rows.values():
                    assert {"sum", "diff", "mean", "mean_seed_std"} <= set(row)
                    assert math.isnan(row["mean"]) or 0.0 <= row["mean"] <= 1.0


def test_remove_view_is_nested_and_masks(load_benchmark):
    bench = load_benchmark("missing_modality")
    import torch

    n, m = 20, len(bench.MODALITIES)
    data = {"images": torch.zeros(n, m, 1, 4, 4), "mask": torch.ones(n, m, dtype=torch.bool), "ids": list(range(n))}
    col = bench.MODALITIES.index(bench.REMOVED)
    half, quarter = bench.remove_view(data, 0.5, 3, col), bench.remove_view(data, 0.25, 3, col)
    assert int((~half["mask"][:, col]).sum()) == 10 and int((~quarter["mask"][:, col]).sum()) == 5
    assert bool((~quarter["mask"][:, col] <= ~half["mask"][:, col]).all())  # nested
    assert bool(torch.isnan(half["images"][~half["mask"][:, col], col]).all())
    assert bool(data["mask"].all())  # input untouched
    others = [i for i in range(m) if i != col]
    assert bool(half["mask"][:, others].all())


def test_synthetic_views_carry_the_designed_signal(load_benchmark):
    bench = load_benchmark("missing_modality")
    import torch

    data = bench.synthetic_views(400, seed=5, prefix="t-")
    again = bench.synthetic_views(400, seed=5, prefix="t-")
    assert torch.equal(data["images"], again["images"]) and data["ids"][:2] == ["t-0", "t-1"]  # seeded
    assert data["images"].shape == (400, 3, 1, 32, 32) and bool(data["mask"].all())
    counts = torch.bincount(data["diff"], minlength=3)
    assert counts.min() > 100 and 0.4 < data["sum"].float().mean() < 0.6  # tertiles, balanced binary
    # blob amplitude read at the key view's first blob centre vs the left view's z1 blob: correlated, not equal
    key_z1 = data["images"][:, 0, 0, 9:11, 9:11].mean((1, 2))
    left_z1 = data["images"][:, 1, 0, 15:17, 7:9].mean((1, 2))
    corr = torch.corrcoef(torch.stack([key_z1, left_z1]))[0, 1]
    assert 0.5 < corr < 0.9


def test_modes_build_the_documented_retriever_options(load_benchmark):
    bench = load_benchmark("missing_modality")
    spec = bench.COHORTS["views"]
    options = {"num_supports": 3, "capacity": 32, "masked_retrieval": 0.25, "reconstruction_weight": 1.0}
    expected = {  # mode: (masked_retrieval, support_residual, support_selection)
        "moe": (0.0, False, "nearest"),
        "moe_random": (0.0, False, "random"),
        "moe_masked": (0.25, False, "nearest"),
        "moe_residual": (0.0, True, "nearest"),
        "moe_masked_residual": (0.25, True, "nearest"),
    }
    for mode, (masked, residual, selection) in expected.items():
        r = bench.build(mode, spec, 32, options).retriever
        assert (r.masked_retrieval, r.support_residual, r.support_selection) == (masked, residual, selection), mode
        assert r.num_supports == 3 and r.bank.capacity == 32
    assert bench.build("zero", spec, 32, options).retriever is None
