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


def _run_with_batch(writer: EvaluationWriter, batches: list[dict]) -> None:
    """Like ``_run`` but the engine's batch also holds the extra keys of each item's ``"batch"``."""

    def step(engine, item):
        engine.state.batch = {"case_id": item["ids"], **item.get("batch", {})}
        return {"pred": item["pred"], "label": item["label"]}

    engine = Engine(step)
    writer.attach(engine)
    engine.run(batches, max_epochs=1)


def test_masks_and_dice_at_the_original_resolution(tmp_path: Path) -> None:
    """Cup logits on a 4 x 4 grid that came from an 8 x 8 crop box at (1, 2) of a 10 x 12 photograph."""
    from medmoe.transforms import CupDiscToLabel, LoadFundus, RestoreFundusGeometry

    logits = torch.zeros(2, 2, 4, 4)
    logits[:, 0] = 5.0
    logits[:, 1, :2, :2] = 10.0  # cup = top-left quarter of the box -> rows 1:5, cols 2:6 of the photograph
    net_truth = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    net_truth[:, :, :2, :2] = 1
    grey = np.full((10, 12), 255, np.uint8)
    grey[0:6, 1:7] = 128  # a GAMMA mask has a disc rim round the cup ({0, 255} alone is refused as binary)
    grey[1:5, 2:6] = 0  # the same cup: Dice 1
    Image.fromarray(grey).save(tmp_path / "a.png")
    cup = grey == 0
    grey[1:5, 4:6] = 128  # half of it is rim only: Dice 2*8/(16+8) = 2/3
    Image.fromarray(grey).save(tmp_path / "b.png")
    geometry = torch.tensor([[10, 12, 1, 2, 9, 10]] * 2)
    batch = {"geom": geometry, "cup_path": [str(tmp_path / "a.png"), str(tmp_path / "b.png")]}
    item = {
        "ids": ["a", "b"],
        "pred": {"cup": logits},
        "label": {"cup": net_truth, "cup_present": torch.tensor([True, True])},
        "batch": batch,
    }
    load = lambda path: (CupDiscToLabel()(LoadFundus(grey=True)(path)) == 2).long()  # noqa: E731
    spec = {"geometry_key": "geom", "restore": RestoreFundusGeometry("bilinear"), "truth_key": "cup_path"}
    out = tmp_path / "out"
    writer = EvaluationWriter(
        out,
        tasks={"cup": 2},
        id_key="case_id",
        n_bootstrap=0,
        segmentation_tasks={"cup": {"classes": 2}},
        mask_palette={"cup": [255, 0]},
        mask_regions={"cup": {"cup": [1]}},
        original_masks={"cup": {**spec, "load_truth": load}},
    )
    _run_with_batch(writer, [item])
    mask = np.asarray(Image.open(out / "cup_masks" / "a.png"))
    assert mask.shape == (10, 12) and np.array_equal(mask == 0, cup)  # on the photograph, pixel for pixel
    per_case = pd.read_csv(out / "segmentation.csv")
    np.testing.assert_allclose(per_case["dice_cup"], [1.0, 2 / 3])
    np.testing.assert_allclose(per_case["network_dice_cup"], [1.0, 1.0])  # the 4 x 4 truth misses the change
    metrics = json.loads((out / "metrics.json").read_text())["tasks"]["cup"]
    assert metrics["resolution"] == "original" and metrics["dice"] == pytest.approx(5 / 6)
    assert metrics["dice_network"] == pytest.approx(1.0) and metrics["dice_per_region"]["cup"]["n"] == 2
    overlay = np.asarray(Image.open(out / "cup_overlays" / "b.png"))
    assert overlay.ndim == 3 and overlay.shape[0] > 100

    bad = {**item, "batch": {"geom": geometry, "cup_path": [str(tmp_path / "a.png"), ""]}}
    with pytest.raises(ValueError, match=r"'cup' mask of b is flagged present but 'cup_path' names no file"):
        _run_with_batch(
            EvaluationWriter(
                out,
                {"cup": 2},
                "case_id",
                n_bootstrap=0,
                segmentation_tasks={"cup": {"classes": 2}},
                original_masks={"cup": {**spec, "load_truth": load}},
            ),
            [bad],
        )
    small = np.zeros((6, 6), np.uint8)
    with pytest.raises(ValueError, match=r"ground truth of a is \(6, 6\), its restored prediction \(10, 12\)"):
        _run_with_batch(
            EvaluationWriter(
                out,
                {"cup": 2},
                "case_id",
                n_bootstrap=0,
                segmentation_tasks={"cup": {"classes": 2}},
                original_masks={"cup": {**spec, "load_truth": lambda p: small}},
            ),
            [item],
        )
    with pytest.raises(ValueError, match="batch has no key 'geom'"):
        _run_with_batch(
            EvaluationWriter(
                out,
                {"cup": 2},
                "case_id",
                with_metrics=False,
                segmentation_tasks={"cup": {"classes": 2}},
                original_masks={"cup": {"geometry_key": "geom", "restore": spec["restore"]}},
            ),
            [{**item, "batch": {}}],
        )


def test_nested_disc_and_cup_regions_of_a_three_class_mask(tmp_path: Path) -> None:
    """Classes 0 background, 1 rim, 2 cup; regions cup = {2} and disc = {1, 2}, as the 3-class bundle option."""
    logits = torch.zeros(1, 3, 4, 4)
    logits[:, 1, :3, :3] = 5.0  # disc 3 x 3 ...
    logits[:, 2, :1, :1] = 9.0  # ... with a 1-pixel cup
    truth = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    truth[:, :, :3, :3] = 1
    truth[:, :, :2, :2] = 2  # 2 x 2 cup: cup Dice 2*1/(1+4) = 0.4; disc Dice 1
    writer = EvaluationWriter(
        tmp_path,
        tasks={"cup": 3},
        id_key="case_id",
        n_bootstrap=0,
        segmentation_tasks={"cup": {"classes": 3}},
        mask_palette={"cup": [255, 128, 0]},
        mask_regions={"cup": {"cup": [2], "disc": [1, 2]}},
    )
    _run_with_batch(writer, [{"ids": ["x"], "pred": {"cup": logits}, "label": {"cup": truth}}])
    row = pd.read_csv(tmp_path / "segmentation.csv").iloc[0]
    assert row["dice_cup"] == pytest.approx(0.4) and row["dice_disc"] == pytest.approx(1.0)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["tasks"]["cup"]
    assert metrics["dice"] == pytest.approx(0.7) and set(metrics["dice_per_region"]) == {"cup", "disc"}
    assert metrics["resolution"] == "network" and "dice_network" not in metrics
    grey = np.asarray(Image.open(tmp_path / "cup_masks" / "x.png"))
    assert grey[0, 0] == 0 and grey[2, 2] == 128 and grey[3, 3] == 255


def test_bad_regions_and_original_specs(tmp_path: Path) -> None:
    seg = {"cup": {"classes": 3}}
    with pytest.raises(ValueError, match=r"mask_regions\['cup'\].*1..2"):
        EvaluationWriter(tmp_path, {"cup": 3}, segmentation_tasks=seg, mask_regions={"cup": {"all": [0, 1]}})
    with pytest.raises(ValueError, match="not segmentation tasks"):
        EvaluationWriter(tmp_path, {"cup": 3}, segmentation_tasks=seg, mask_regions={"disc": {"d": [1]}})
    with pytest.raises(ValueError, match="callable 'restore'"):
        EvaluationWriter(tmp_path, {"cup": 3}, segmentation_tasks=seg, original_masks={"cup": {"geometry_key": "g"}})
    restore = {"geometry_key": "g", "restore": lambda p, g: p}
    with pytest.raises(ValueError, match="needs 'truth_key' and 'load_truth'"):
        EvaluationWriter(tmp_path, {"cup": 3}, segmentation_tasks=seg, original_masks={"cup": restore})
    with pytest.raises(ValueError, match="together"):
        EvaluationWriter(
            tmp_path, {"cup": 3}, segmentation_tasks=seg, original_masks={"cup": {**restore, "truth_key": "p"}}
        )


def test_dice_is_the_mean_per_case_dice_its_interval_is_about(tmp_path: Path) -> None:
    """Cases without a cup in truth or prediction score the disc only; ``dice`` averages cases, as ``dice_ci``."""
    truth, pred = torch.zeros(4, 1, 8, 8, dtype=torch.long), torch.zeros(4, 8, 8, dtype=torch.long)
    truth[:, 0, 2:6, 2:6], pred[:, 2:6, 2:6] = 1, 1  # the disc right everywhere
    truth[2:, 0, 3:5, 3:5] = 2  # cases c, d have a cup; the prediction misses it (cup Dice 0)
    logits = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 10
    writer = EvaluationWriter(
        tmp_path,
        tasks={"cup": 3},
        id_key="case_id",
        n_bootstrap=200,
        segmentation_tasks={"cup": {"classes": 3}},
        mask_regions={"cup": {"cup": [2], "disc": [1, 2]}},
    )
    _run_with_batch(writer, [{"ids": ["a", "b", "c", "d"], "pred": {"cup": logits}, "label": {"cup": truth}}])
    metrics = json.loads((tmp_path / "metrics.json").read_text())["tasks"]["cup"]
    assert metrics["dice"] == pytest.approx((1 + 1 + 0.5 + 0.5) / 4)  # cases a, b: disc 1; c, d: (0 + 1) / 2
    assert metrics["dice_ci"][0] <= metrics["dice"] <= metrics["dice_ci"][1]
    assert metrics["dice_per_region"]["cup"]["mean"] == 0.0 and metrics["dice_per_region"]["disc"]["mean"] == 1.0
