"""Smoke test of benchmarks/missing_modality.py --quick: runs end to end and writes the documented JSON + PNG."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "missing_modality.py"


def _load():
    spec = importlib.util.spec_from_file_location("missing_modality_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore")
def test_quick_run_writes_json_and_plot(tmp_path):
    bench = _load()
    out = tmp_path / "mm.json"
    bench.main(["--quick", "--out", str(out), "--modes", "zero", "moe"])
    data = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    assert data["config"]["removed_modality"] == "s2d_cc"
    assert set(data["test_time"]) == {"zero", "moe"} and set(data["train_time"]) == {"zero", "moe"}
    for key, rates in (("test_time", ["0.00", "0.25", "0.50", "0.75"]), ("train_time", ["0.00", "0.50"])):
        for res in data[key].values():
            assert set(res["eval"]) == {"test", "val+test"}
            for rows in res["eval"].values():
                assert sorted(rows) == rates
                for row in rows.values():
                    assert {"density", "birads", "risk", "mean", "mean_seed_std"} <= set(row)
                    assert math.isnan(row["mean"]) or 0.0 <= row["mean"] <= 1.0


def test_remove_view_is_nested_and_masks():
    bench = _load()
    import torch

    n, m = 20, len(bench.MODALITIES)
    data = {"images": torch.zeros(n, m, 1, 4, 4), "mask": torch.ones(n, m, dtype=torch.bool), "ids": list(range(n))}
    col = bench.MODALITIES.index(bench.REMOVED)
    half, quarter = bench.remove_view(data, 0.5, 3), bench.remove_view(data, 0.25, 3)
    assert int((~half["mask"][:, col]).sum()) == 10 and int((~quarter["mask"][:, col]).sum()) == 5
    assert bool((~quarter["mask"][:, col] <= ~half["mask"][:, col]).all())  # nested
    assert bool(torch.isnan(half["images"][~half["mask"][:, col], col]).all())
    assert bool(data["mask"].all())  # input untouched
    others = [i for i in range(m) if i != col]
    assert bool(half["mask"][:, others].all())
