"""``python -m medmoe.apps.baselines``: k seeds of the model and a baseline, trained, scored and compared."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from medmoe.apps.baselines import main

from medmoe.data import make_fastmri_demo

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_two_seeds_of_model_and_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cohort = make_fastmri_demo(tmp_path / "demo", num_volumes=20, num_slices=4, image_size=32)
    bundle = tmp_path / "fastmri_i2m2"
    shutil.copytree(REPO / "bundles" / "fastmri_i2m2" / "configs", bundle / "configs")
    (bundle / "configs" / "baseline_intra.json").write_text(json.dumps({"network_def#mode": "intra"}))
    (bundle / "docs").mkdir()
    readme = bundle / "docs" / "README.md"
    readme.write_text("# demo\n\n<!-- baselines:start -->\nold\n<!-- baselines:end -->\n\nafter\n")
    out = tmp_path / "runs"
    argv = ["--bundle", str(bundle), "--seeds", "0", "1", "--out_dir", str(out), "--n_bootstrap", "100", "--readme",
            "--cohort_csv", str(cohort), "--image_size", "[24, 24]", "--batch_size", "4", "--device", "cpu",
            "--max_epochs", "1", "--bundle_root", str(bundle)]  # fmt: skip
    results = main(argv)

    rows = results["baseline_intra.json"]
    assert [r["row"] for r in rows] == ["acl", "meniscus", "cartilage", "other"]
    test = pd.read_csv(cohort).query("split == 'test'")
    for seed in (0, 1):
        for config in ("train", "baseline_intra"):
            assert (out / config / f"seed{seed}" / "models" / "model.pt").is_file()
    assert all(r["n"] == test[r["row"]].notna().sum() for r in rows)  # test split only, not the val rows
    # the two seeds are two trainings: different weights, so different test AUROCs for some task
    assert any(r["model_seeds"][0] != r["model_seeds"][1] for r in rows)
    text = readme.read_text()
    assert "old" not in text and "| i2m2 vs intra | acl AUROC |" in text and text.endswith("after\n")
    assert json.loads((out / "baselines.json").read_text())["seeds"] == [0, 1]
    plots = sorted(p.name for p in (out / "compare_baseline_intra").glob("roc_*.png"))  # both ROC curves per task
    assert plots == ["roc_acl.png", "roc_cartilage.png", "roc_meniscus.png", "roc_other.png"]

    # a second call reuses the finished runs (same numbers, no training)
    again = main([a for a in argv if a != "--readme"])
    assert again["baseline_intra.json"][0]["model_seeds"] == rows[0]["model_seeds"]


def test_missing_baseline_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--bundle", str(REPO / "bundles" / "fastmri_i2m2"), "--configs", "baseline_nothing.json"])
