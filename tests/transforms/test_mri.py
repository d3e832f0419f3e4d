"""Tests for medmoe.transforms.mri on the real Colin27 T1 brain (downsampled first to keep them fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from medmoe.transforms.mri import (
    BrainForegroundCrop,
    BrainForegroundCropd,
    LoadVolume,
    LoadVolumed,
    N4BiasFieldCorrection,
    N4BiasFieldCorrectiond,
    NormalizeForeground,
    NormalizeForegroundd,
    OtsuForeground,
    mri_preprocess,
    read_volume,
)
from monai.data import MetaTensor
from monai.transforms import Orientation, ResizeWithPadOrCrop, Spacing
from scipy.ndimage import binary_fill_holes

DATA = Path(__file__).resolve().parents[1] / "samples"  # real public samples with their licences (README there)
BRAIN = DATA / "mri" / "ch2.nii.gz"


@pytest.fixture(scope="module")
def brain() -> MetaTensor:
    """The real brain resampled to 6 mm and padded / cropped to 32^3 (1, 32, 32, 32)."""
    vol = Spacing(pixdim=(6.0, 6.0, 6.0))(LoadVolume()(BRAIN))
    return ResizeWithPadOrCrop((32, 32, 32))(vol)


def test_load_nifti_real_brain():
    d = LoadVolumed(["t1"])({"t1": str(BRAIN)})
    vol = d["t1"]
    assert isinstance(vol, MetaTensor) and vol.shape == (1, 181, 217, 181)
    assert torch.allclose(vol.affine[:3, :3], torch.eye(3, dtype=torch.float64))  # 1 mm RAS
    assert vol.meta["filename_or_obj"].endswith("ch2.nii.gz")
    assert float(vol.min()) == 0.0 and float(vol.max()) > 50


def _write_dicom_series(folder: Path, volume: np.ndarray, spacing=(0.9, 0.8, 2.5), origin=(-10.0, 20.0, 5.0)):
    """Write ``volume`` (x, y, z) as an axial DICOM series with SimpleITK (one file per slice)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.transpose(volume, (2, 1, 0)).astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(volume.shape[2]):
        sl = image[:, :, z]
        sl.SetMetaData("0008|0060", "MR")
        sl.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.1")
        sl.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        sl.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, z)))))
        sl.SetMetaData("0020|0013", str(z + 1))
        sl.SetMetaData("0018|0050", str(spacing[2]))
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_orientation_ras_and_spacing(tmp_path):
    vol = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    _write_dicom_series(tmp_path, vol)
    array, affine = read_volume(tmp_path)
    assert array.shape == (6, 5, 4) and np.array_equal(array, vol)
    # LPS identity direction becomes RAS with flipped x and y
    assert np.allclose(np.diag(affine)[:3], [-0.9, -0.8, 2.5], atol=1e-4)
    assert np.allclose(affine[:3, 3], [10.0, -20.0, 5.0], atol=1e-4)
    ras = Orientation(axcodes="RAS", labels=None)(LoadVolume()(tmp_path))
    assert np.allclose(np.diag(ras.affine.numpy())[:3], [0.9, 0.8, 2.5], atol=1e-4)
    assert np.array_equal(ras[0].numpy(), vol[::-1, ::-1, :])
    resampled = Spacing(pixdim=(1.8, 1.6, 2.5))(ras)
    assert resampled.shape[1:] == (3, 3, 4)


def test_n4_removes_a_synthetic_bias_field(brain):
    ramp = torch.linspace(0.6, 1.4, 32)[None, :, None, None].expand_as(brain)
    biased = brain * ramp
    fg = OtsuForeground()(brain)

    def corr(a):
        return np.corrcoef(brain[fg].numpy(), a[fg].numpy())[0, 1]

    out = N4BiasFieldCorrectiond(["t1"], num_iterations=(20, 20), shrink_factor=1)({"t1": biased})["t1"]
    assert isinstance(out, MetaTensor) and out.shape == brain.shape
    assert corr(biased) < 0.8 and corr(out) > 0.9
    # the estimated field follows the ramp: left / right intensity ratio drops from 0.43 towards 1
    left, right = fg[0, :12], fg[0, 20:]
    ratio = out[0, :12][left].mean() / out[0, 20:][right].mean()
    truth = brain[0, :12][left].mean() / brain[0, 20:][right].mean()
    assert abs(float(ratio / truth) - 1) < 0.2


def test_brain_crop_normalize_and_inverse(brain):
    crop = BrainForegroundCrop(margin=1)
    out = crop(brain)
    assert all(o < s for o, s in zip(out.shape[1:], brain.shape[1:], strict=True))
    fg = OtsuForeground()(brain)
    assert int(OtsuForeground()(out).sum()) == int(fg.sum())  # nothing of the head cut away
    assert crop.inverse(out).shape == brain.shape
    norm = NormalizeForeground(lower=1, upper=99)(out)
    mask = torch.from_numpy(binary_fill_holes(OtsuForeground()(out)[0].numpy()))[None]  # ventricles included
    assert abs(float(norm[mask].mean())) < 1e-4 and abs(float(norm[mask].std()) - 1) < 1e-3
    assert float(norm[~mask].abs().max()) == 0.0
    values = out[mask]
    lo, hi = np.percentile(values.numpy(), [1, 99])
    clipped = (values.clamp(float(lo), float(hi)) - values.clamp(float(lo), float(hi)).mean()) / values.clamp(
        float(lo), float(hi)
    ).std()
    assert float(norm[mask].max()) == pytest.approx(float(clipped.max()), rel=1e-2)
    d = {"t1": brain, "seg": (brain > 40).float()}
    cropped = BrainForegroundCropd(["t1", "seg"], source_key="t1")(d)
    assert cropped["seg"].shape == cropped["t1"].shape
    nd = NormalizeForegroundd(["t1"], mask_key="seg")(cropped)
    sel = cropped["seg"] > 0
    assert abs(float(nd["t1"][sel].mean())) < 1e-4


def test_full_chain_and_inverse():
    chain = mri_preprocess("t1", pixdim=(4.0, 4.0, 4.0), spatial_size=(48, 48, 48))
    out = chain({"t1": str(BRAIN)})["t1"]
    assert out.shape == (1, 48, 48, 48) and torch.isfinite(out).all()
    assert np.allclose(out.pixdim[:3].numpy(), 4.0)
    fg = out != 0
    assert abs(float(out[fg].mean())) < 0.05 and abs(float(out[fg].std()) - 1) < 0.05
    assert chain.inverse({"t1": out})["t1"].shape == (1, 181, 217, 181)


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        LoadVolume()(tmp_path / "missing.nii.gz")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"key 't1'.*empty"):
        LoadVolumed(["t1"])({"t1": tmp_path / "empty.nii.gz"})
    (tmp_path / "junk.nii").write_bytes(b"not a nifti" * 10)
    with pytest.raises(ValueError, match="junk.nii"):
        LoadVolume()(tmp_path / "junk.nii")
    (tmp_path / "nodicom").mkdir()
    with pytest.raises(ValueError, match="no DICOM series"):
        LoadVolume()(tmp_path / "nodicom")
    with pytest.raises(ValueError, match="channel-first"):
        N4BiasFieldCorrection()(torch.ones(8, 8, 8))  # wrong rank
    bad = torch.ones(1, 8, 8, 8)
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"key 'img'.*NaN or infinite"):
        NormalizeForegroundd(["img"])({"img": bad})
    with pytest.raises(ValueError, match="empty foreground"):
        NormalizeForeground()(torch.ones(1, 4, 4, 4))
    with pytest.raises(ValueError, match="source key 'img'"):
        BrainForegroundCropd(["seg"], source_key="img")({"seg": torch.ones(1, 4, 4, 4)})
    with pytest.raises(ValueError, match="lower < upper"):
        NormalizeForeground(lower=90, upper=10)
