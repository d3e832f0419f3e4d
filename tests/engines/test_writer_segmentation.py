"""EvaluationWriter and the validation Dice metric with a classification and a segmentation task."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from ignite.engine import Engine
from PIL import Image

from medmoe.engines import EvaluationWriter, SegmentationDice, mean_of
from medmoe.engines.metrics import quadratic_kappa


def _batches():
    """Two batches of 2: grade logits (b, 3); cup logits (b, 2, 4, 4) predicting the left half as cup."""
    pred_cup = torch.zeros(2, 2, 4, 4)
    pred_cup[:, 1, :, :2] = 5.0
    truth_half = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    truth_half[:, :, :, :2] = 1  # perfect
    truth_quarter = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    truth_quarter[:, :, :2, :2] = 1  # Dice 2*4/(8+4) = 2/3
    out = []
    for b, truth in enumerate((truth_half, truth_quarter)):
        out.append(
            {
                "ids": [f"c{2 * b}", f"c{2 * b + 1}"],
                "pred": {"grade": torch.tensor([[3.0, 0, 0], [0, 3.0, 0]]), "cup": pred_cup},
                "label": {"grade": torch.tensor([0, 1]), "cup": truth, "cup_present": torch.tensor([True, b == 0])},
            }
        )
    return out


def _run(writer: EvaluationWriter) -> None:
    def step(engine, batch):
        engine.state.batch = {"case_id": batch["ids"]}
        return {"pred": batch["pred"], "label": batch["label"]}

    engine = Engine(step)
    writer.attach(engine)
    engine.run(_batches(), max_epochs=1)


def test_segmentation_dice_and_masks(tmp_path: Path) -> None:
    writer = EvaluationWriter(
        tmp_path,
        tasks={"grade": 3, "cup": 2},  # the bundle passes every task; cup is recognised as segmentation
        id_key="case_id",
        n_bootstrap=0,
        segmentation_tasks={"cup": {"modality": "fundus", "classes": 2}},
        mask_palette={"cup": [255, 0]},
    )
    _run(writer)
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert list(predictions["id"]) == ["c0", "c1", "c2", "c3"]
    assert not any(c.startswith("cup") for c in predictions.columns)
    per_case = pd.read_csv(tmp_path / "segmentation.csv")
    assert list(per_case["id"]) == ["c0", "c1", "c2"]  # c3's mask is flagged absent
    np.testing.assert_allclose(per_case["dice_1"], [1.0, 1.0, 2 / 3])
    metrics = json.loads((tmp_path / "metrics.json").read_text())["tasks"]
    assert metrics["grade"]["accuracy"] == 1.0 and metrics["grade"]["n"] == 4
    assert metrics["cup"]["n"] == 3 and metrics["cup"]["dice"] == pytest.approx(8 / 9)
    assert metrics["cup"]["dice_ci"] == [None, None]  # n_bootstrap=0
    assert metrics["grade"]["kappa"] == 1.0  # all grades right
    overlays = sorted(p.name for p in (tmp_path / "cup_overlays").iterdir())
    assert overlays == ["c0.png", "c1.png", "c2.png"]  # the 3 lowest-Dice cases (all 3 present ones)
    mask = np.asarray(Image.open(tmp_path / "cup_masks" / "c3.png"))
    assert mask.dtype == np.uint8 and (mask[:, :2] == 0).all() and (mask[:, 2:] == 255).all()


def test_bad_palette(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mask_palette"):
        EvaluationWriter(tmp_path, {"grade": 3}, segmentation_tasks={"cup": {"classes": 2}}, mask_palette={"cup": [0]})


def test_segmentation_dice_metric_matches_the_writer() -> None:
    metric = SegmentationDice("cup")
    metric.reset()
    for batch in _batches():
        metric.update((batch["pred"], batch["label"]))
    assert metric.compute() == pytest.approx(8 / 9)  # c3 flagged absent, as in segmentation.csv
    metric.reset()
    empty = torch.zeros(1, 2, 4, 4)
    empty[:, 0] = 1.0  # predicts background; truth empty too -> skipped
    metric.update(({"cup": empty}, {"cup": torch.zeros(1, 1, 4, 4, dtype=torch.long)}))
    assert np.isnan(metric.compute())
    assert mean_of(0.5, float("nan"), 1.0) == 0.75 and np.isnan(mean_of(float("nan")))


def test_dice_interval_and_kappa_with_bootstrap(tmp_path: Path) -> None:
    writer = EvaluationWriter(
        tmp_path,
        tasks={"grade": 3, "cup": 2},
        id_key="case_id",
        n_bootstrap=200,
        segmentation_tasks={"cup": {"modality": "fundus", "classes": 2}},
        n_overlays=1,
    )
    _run(writer)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["tasks"]
    low, high = metrics["cup"]["dice_ci"]
    assert 2 / 3 <= low <= 8 / 9 <= high <= 1.0  # per-case Dice 1, 1, 2/3
    assert [p.name for p in (tmp_path / "cup_overlays").iterdir()] == ["c2.png"]  # the worst case only
    assert metrics["grade"]["kappa_ci"] == [1.0, 1.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quadratic_kappa_matches_sklearn(seed: int) -> None:
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    expected = cohen_kappa_score(y, p, weights="quadratic", labels=[0, 1, 2, 3])
    assert quadratic_kappa(y, p, 4) == pytest.approx(expected, abs=1e-12)
