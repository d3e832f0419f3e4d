"""Tests for medmoe.transforms.oct on the real Heidelberg Spectralis .vol export and on generated files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from medmoe.transforms.oct import (
    LoadOCT,
    LoadOCTd,
    OCTDenoise,
    OCTDenoised,
    OCTNormalizeIntensity,
    OCTNormalizeIntensityd,
    SelectBScan,
    SelectBScand,
    oct_preprocess,
    read_oct,
)
from monai.data import MetaTensor
from monai.transforms import Resize
from PIL import Image

DATA = Path(__file__).resolve().parents[1] / "samples"  # real public samples with their licences (README there)
VOL = DATA / "oct" / "Willis_B_716_0.vol"


def test_heidelberg_vol_real_bscan():
    vol = LoadOCTd(["oct"])({"oct": str(VOL)})["oct"]
    assert vol.shape == (1, 1, 496, 768) and vol.dtype == torch.float32
    bscan = SelectBScan()(vol)
    assert bscan.shape == (1, 496, 768)
    # the retina (middle rows) is much brighter than the vitreous above it
    profile = bscan[0].mean(1)
    assert float(profile[150:350].max()) > 3 * float(profile[:40].mean())
    norm = OCTNormalizeIntensity()(vol)
    assert float(norm.min()) == 0.0 and float(norm.max()) == 1.0


def _write_multiframe_dicom(path: Path, frames: np.ndarray, rgb: bool = False) -> None:
    """Write ``frames`` ``(N, H, W)``, or with ``rgb`` ``(N, H, W, 3)`` / single-frame ``(H, W, 3)``, as 8-bit DICOM."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.5.4"  # Ophthalmic Tomography Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OPT"
    shape = frames.shape[:-1] if rgb else frames.shape
    if len(shape) == 3:
        ds.NumberOfFrames = shape[0]
    ds.Rows, ds.Columns = shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = (3, "RGB") if rgb else (1, "MONOCHROME2")
    if rgb:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = frames.astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_readers_folder_dicom_nifti_npy(tmp_path):
    folder = tmp_path / "bscans"
    folder.mkdir()
    for i in (1, 2, 10, 3):  # GAMMA names B-scans by number: 10 must come last
        Image.fromarray(np.full((12, 16), 10 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("ignored")
    vol = LoadOCT()(folder)
    assert vol.shape == (1, 4, 12, 16) and vol[0, :, 0, 0].tolist() == [10, 20, 30, 100]
    frames = np.stack([np.full((12, 16), v, np.uint8) for v in (5, 50, 150)])
    _write_multiframe_dicom(tmp_path / "oct.dcm", frames)
    assert np.array_equal(read_oct(tmp_path / "oct.dcm"), frames.astype(np.float32))
    nib.save(nib.Nifti1Image(frames.astype(np.float32), np.eye(4)), tmp_path / "oct.nii.gz")
    assert np.array_equal(read_oct(tmp_path / "oct.nii.gz"), frames)
    np.save(tmp_path / "oct.npy", frames)
    assert LoadOCT()(tmp_path / "oct.npy").shape == (1, 3, 12, 16)
    assert SelectBScand(["v"], index=-1)({"v": LoadOCT()(tmp_path / "oct.npy")})["v"][0, 0, 0] == 150


def test_16bit_bscans_keep_their_values(tmp_path):
    folder = tmp_path / "bscans16"
    folder.mkdir()
    scan = (np.arange(32 * 40).reshape(32, 40) * 50).astype(np.uint16)  # 0 .. 63950
    for i in range(3):
        Image.fromarray(scan + i).save(folder / f"{i}.png")
    assert Image.open(folder / "0.png").mode.startswith("I")
    vol = read_oct(folder)
    assert vol.dtype == np.float32 and np.array_equal(vol[1], scan + 1.0)  # not clipped at 255
    assert len(np.unique(vol[0])) == 32 * 40
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(folder / "3.png")
    with pytest.raises(ValueError, match=r"3\.png: 8-bit B-scan in a folder of 16-bit"):
        read_oct(folder)


def test_colour_dicom_is_read_as_luminance(tmp_path):
    rng = np.random.default_rng(0)
    single = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)  # one colour frame: not 12 B-scans of width 3
    _write_multiframe_dicom(tmp_path / "rgb.dcm", single, rgb=True)
    vol = read_oct(tmp_path / "rgb.dcm")
    assert vol.shape == (1, 12, 16)
    np.testing.assert_allclose(vol[0], single.mean(-1), atol=1e-4)
    frames = rng.integers(0, 255, (2, 12, 16, 3), dtype=np.uint8)
    _write_multiframe_dicom(tmp_path / "rgb2.dcm", frames, rgb=True)
    np.testing.assert_allclose(read_oct(tmp_path / "rgb2.dcm"), frames.mean(-1), atol=1e-4)


def test_denoise_keeps_applied_operations_so_resize_inverts():
    resize = Resize((2, 8, 8))
    vol = resize(MetaTensor(torch.rand(1, 3, 10, 10), meta={"filename_or_obj": "scan.vol"}))
    out = OCTDenoise()(vol)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "scan.vol"
    assert [op["class"] for op in out.applied_operations] == ["Resize"]
    assert resize.inverse(out).shape == (1, 3, 10, 10)


def test_denoise_reduces_speckle_and_keeps_structure():
    rng = np.random.default_rng(0)
    clean = np.zeros((1, 2, 64, 64), np.float32)
    clean[..., 20:40, :] = 1.0  # a bright layer
    noisy = torch.from_numpy(clean * rng.gamma(4.0, 1 / 4.0, clean.shape).astype(np.float32) + 0.05)  # speckle
    for method in ("median", "nl_means"):
        out = OCTDenoised(["v"], method=method)({"v": noisy})["v"]
        assert out.shape == noisy.shape
        layer_before = float(noisy[..., 24:36, 4:60].std())
        assert float(out[..., 24:36, 4:60].std()) < 0.7 * layer_before
        assert abs(float(out[..., 24:36, :].mean()) - float(noisy[..., 24:36, :].mean())) < 0.1  # level kept
        assert float(out[..., 45:, :].max()) < 0.2  # background stays dark


def test_chain_resamples_to_fixed_size_and_inverts():
    chain = oct_preprocess("oct", num_bscans=4, size=(128, 192))
    out = chain({"oct": str(VOL)})
    assert out["oct"].shape == (1, 4, 128, 192) and 0 <= float(out["oct"].min()) <= float(out["oct"].max()) <= 1
    assert chain.inverse(out)["oct"].shape == (1, 1, 496, 768)
    d = OCTNormalizeIntensityd(["oct"], lower=0, upper=100)({"oct": torch.arange(8.0).reshape(1, 2, 2, 2)})
    assert torch.allclose(d["oct"].flatten(), torch.arange(8.0) / 7)


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        LoadOCT()(tmp_path / "missing.vol")
    (tmp_path / "empty.vol").write_bytes(b"")
    with pytest.raises(ValueError, match=r"key 'oct'.*empty"):
        LoadOCTd(["oct"])({"oct": tmp_path / "empty.vol"})
    (tmp_path / "junk.vol").write_bytes(b"HSF-OCT-103" + b"\x00" * 100)
    with pytest.raises(ValueError, match="junk.vol"):
        LoadOCT()(tmp_path / "junk.vol")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="no B-scan images"):
        LoadOCT()(tmp_path / "empty_dir")
    np.save(tmp_path / "bad.npy", np.zeros((2, 2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="shape"):
        LoadOCT()(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match=r"\(1, N, H, W\)"):
        OCTNormalizeIntensity()(torch.ones(4, 4))  # wrong rank
    bad = torch.ones(1, 1, 4, 4)
    bad[..., 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"key 'v'.*NaN"):
        OCTDenoised(["v"])({"v": bad})
    with pytest.raises(ValueError, match="out of range"):
        SelectBScan(5)(torch.ones(1, 2, 4, 4))
    with pytest.raises(ValueError, match="method"):
        OCTDenoise("wavelet")
