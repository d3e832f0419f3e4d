"""Segmentation metrics agree with MONAI's DiceMetric / HausdorffDistanceMetric(95) / SurfaceDistanceMetric."""

import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDistanceMetric
from monai.networks.utils import one_hot
from PIL import Image
from scipy.ndimage import gaussian_filter

from medmoe.metrics import case_metrics, evaluate_segmentation, pairs_from_folders


def _random_labels(rng, shape):
    field = gaussian_filter(rng.normal(size=shape), 1.5)
    return np.digitize(field, np.quantile(field, [0.6, 0.85]))


@pytest.mark.parametrize("seed,shape", [(0, (40, 36)), (1, (20, 24, 18)), (2, (31, 17)), (3, (16, 22, 12))])
def test_case_metrics_match_monai(seed, shape):
    rng = np.random.default_rng(seed)
    pred, truth = _random_labels(rng, shape), _random_labels(rng, shape)
    spacing = tuple(rng.uniform(0.5, 2.0, len(shape)))
    ours = case_metrics(pred, truth, [1, 2], spacing)
    p, t = one_hot(torch.tensor(pred)[None, None], 3), one_hot(torch.tensor(truth)[None, None], 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dice = DiceMetric(include_background=False)(p, t)[0]
        hd95 = HausdorffDistanceMetric(include_background=False, percentile=95)(p, t, spacing=spacing)[0]
        assd = SurfaceDistanceMetric(include_background=False, symmetric=True)(p, t, spacing=spacing)[0]
    for i, lab in enumerate((1, 2)):
        np.testing.assert_allclose(ours[lab]["dice"], dice[i].item(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ours[lab]["hd95"], hd95[i].item(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ours[lab]["assd"], assd[i].item(), rtol=1e-6, atol=1e-6)
        inter = ((pred == lab) & (truth == lab)).sum()
        union = ((pred == lab) | (truth == lab)).sum()
        assert ours[lab]["iou"] == pytest.approx(inter / union)


def test_empty_masks():
    t = np.zeros((8, 8), int)
    t[2:5, 2:5] = 1
    res = case_metrics(np.zeros_like(t), t, [1, 2])
    assert res[1]["dice"] == 0 and np.isnan(res[1]["hd95"])
    assert all(np.isnan(res[2][m]) for m in ("dice", "iou", "hd95", "assd"))
    with pytest.raises(ValueError, match="shape"):
        case_metrics(t[:4], t, [1])


def _write_nifti(path, arr, spacing):
    nib.save(nib.Nifti1Image(arr.astype(np.uint8), np.diag([*spacing, 1.0])), str(path))


def test_evaluate_segmentation_from_folders(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "p").mkdir()
    (tmp_path / "t").mkdir()
    truths, preds = [], []
    for i in range(5):
        t, p = _random_labels(rng, (12, 14, 10)), _random_labels(rng, (12, 14, 10))
        _write_nifti(tmp_path / "t" / f"c{i}.nii.gz", t, (0.7, 0.8, 2.0))
        _write_nifti(tmp_path / "p" / f"c{i}.nii.gz", p, (0.7, 0.8, 2.0))
        truths.append(t)
        preds.append(p)
    pairs = pairs_from_folders(tmp_path / "p", tmp_path / "t")
    pairs["site"] = ["A", "B", "A", "B", "A"]
    res = evaluate_segmentation(pairs, group_by="site", n_bootstrap=100)
    assert res["labels"] == [1, 2]
    direct = [case_metrics(p, t, [1, 2], (0.7, 0.8, 2.0)) for p, t in zip(preds, truths)]
    summary = {(e["metric"], e["class"], e["group"]): e for e in res["metrics"]}
    for lab in (1, 2):
        for m in ("dice", "hd95"):
            e = summary[(m, lab, None)]
            assert e["value"] == pytest.approx(np.mean([d[lab][m] for d in direct]), rel=1e-5)
            assert e["ci_low"] <= e["value"] <= e["ci_high"] and e["n"] == 5
    assert summary[("dice", 1, "site=A")]["n"] == 3
    assert summary[("dice", None, None)]["value"] == pytest.approx(
        np.mean([(d[1]["dice"] + d[2]["dice"]) / 2 for d in direct])
    )
    assert len(res["per_case"]) == 10 and res["worst"][0] in pairs["id"].tolist()


def test_segmentation_input_errors(tmp_path):
    for sub in ("p", "t"):
        (tmp_path / sub).mkdir()
    a = np.zeros((10, 10), np.uint8)
    a[2:6, 3:7] = 1
    Image.fromarray(a).save(tmp_path / "t" / "x.png")
    Image.fromarray(a[:9]).save(tmp_path / "p" / "x.png")
    with pytest.raises(ValueError, match="case 'x'.*shape"):
        evaluate_segmentation(pairs_from_folders(tmp_path / "p", tmp_path / "t"), n_bootstrap=0)
    Image.fromarray(a * 3).save(tmp_path / "p" / "x.png")
    with pytest.raises(ValueError, match=r"labels outside the expected set \[1\]: x: \[3\]"):
        evaluate_segmentation(pairs_from_folders(tmp_path / "p", tmp_path / "t"), [1], n_bootstrap=0)
    Image.fromarray(a).save(tmp_path / "p" / "y.png")
    with pytest.raises(ValueError, match="1 only in .*: y"):
        pairs_from_folders(tmp_path / "p", tmp_path / "t")
    (tmp_path / "p" / "y.png").unlink()
    _write_nifti(tmp_path / "t" / "z.nii.gz", np.ones((4, 4, 4)), (1, 1, 1))
    _write_nifti(tmp_path / "p" / "z.nii.gz", np.ones((4, 4, 4)), (1, 1, 1.5))
    with pytest.raises(ValueError, match="case 'z'.*spacing"):
        evaluate_segmentation(pairs_from_folders(tmp_path / "p", tmp_path / "t"), n_bootstrap=0)
