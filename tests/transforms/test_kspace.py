"""Tests for medmoe.transforms.kspace on the real TWIX phantom and on k-space computed from a real MRI slice."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from medmoe.transforms import (
    AddComplexGaussianNoise,
    AddComplexGaussianNoised,
    AddRicianNoise,
    AddRicianNoised,
    ComplexCenterCrop,
    ComplexCenterCropd,
    ComplexToMagnitudePhase,
    ComplexToMagnitudePhased,
    ImageToKspace,
    ImageToKspaced,
    KspaceToImage,
    KspaceToImaged,
    LoadKspace,
    LoadKspaced,
    MagnitudePhaseToComplex,
    MagnitudePhaseToComplexd,
    RemoveReadoutOversampling,
    RemoveReadoutOversamplingd,
    RootSumOfSquares,
    RootSumOfSquaresd,
    UndersampleKspace,
    UndersampleKspaced,
    fft2c,
    ifft2c,
    read_kspace,
)

DATA = Path(__file__).resolve().parents[1] / "samples"  # real public samples with their licences (README there)
TWIX = DATA / "kspace" / "gre.dat"
BRAIN = DATA / "mri" / "ch2.nii.gz"


@pytest.fixture(scope="module")
def brain_slice() -> torch.Tensor:
    """A real axial T1 slice (1, 181, 217), float32, scaled to [0, 1]."""
    import nibabel as nib

    img = nib.load(str(BRAIN))
    sl = np.asarray(img.dataobj[:, :, 90], dtype=np.float32)
    return torch.from_numpy(sl / sl.max())[None]


@pytest.fixture(scope="module")
def twix_kspace() -> torch.Tensor:
    return read_kspace(TWIX)


def test_fft_round_trip_and_parseval(brain_slice):
    k = ImageToKspace()(brain_slice)
    assert k.dtype == torch.complex64 and k.shape == brain_slice.shape
    assert torch.allclose((k.abs() ** 2).sum(), (brain_slice**2).sum(), rtol=1e-4)  # Parseval
    back = KspaceToImage()(k)
    assert torch.allclose(back.real, brain_slice, atol=1e-5) and back.imag.abs().max() < 1e-5
    # centred: the DC term sits at (H // 2, W // 2) and equals sum / sqrt(N)
    dc = k[0, brain_slice.shape[1] // 2, brain_slice.shape[2] // 2]
    assert math.isclose(dc.real.item(), brain_slice.sum().item() / math.sqrt(181 * 217), rel_tol=1e-4)
    x = torch.randn(2, 3, 16, 20, dtype=torch.complex128)
    assert torch.allclose(ifft2c(fft2c(x)), x, atol=1e-12)


def test_dictionary_fft_and_rss(brain_slice):
    coils = torch.stack([brain_slice[0] * 0.6, brain_slice[0] * 0.8]).to(torch.complex64)
    d = ImageToKspaced(["k"])({"k": coils})
    d = KspaceToImaged(["k"])(d)
    d = RootSumOfSquaresd(["k"])(d)
    assert d["k"].shape == (1, 181, 217)
    assert torch.allclose(d["k"], brain_slice, atol=1e-5)  # sqrt(0.36 + 0.64) = 1


def test_magnitude_phase_recombine():
    x = torch.randn(2, 8, 10, dtype=torch.complex64)
    joint = ComplexToMagnitudePhase()(x)
    assert joint.shape == (4, 8, 10) and not torch.is_complex(joint)
    assert torch.allclose(joint[:2], x.abs()) and joint[2:].abs().max() <= math.pi
    assert torch.allclose(MagnitudePhaseToComplex()(joint), x, atol=1e-6)
    assert torch.allclose(MagnitudePhaseToComplex()(joint[:2], joint[2:]), x, atol=1e-6)
    ri = ComplexToMagnitudePhase("real_imag")(x)
    assert torch.equal(ri[:2], x.real) and torch.allclose(MagnitudePhaseToComplex("real_imag")(ri), x)
    d = ComplexToMagnitudePhased(["img"], split=True)({"img": x})
    assert set(d) == {"img_magnitude", "img_phase"} and d["img_phase"].shape == (2, 8, 10)
    back = MagnitudePhaseToComplexd(["img"], split=True)(d)
    assert torch.allclose(back["img"], x, atol=1e-6) and set(back) == {"img"}
    joint_d = MagnitudePhaseToComplexd(["img"])(ComplexToMagnitudePhased(["img"])({"img": x}))
    assert torch.allclose(joint_d["img"], x, atol=1e-6)


def test_magnitude_phase_dict_form_takes_mode():
    x = torch.randn(2, 8, 10, dtype=torch.complex64)
    joint = ComplexToMagnitudePhased(["img"], mode="real_imag")({"img": x})["img"]
    assert torch.equal(joint, torch.cat([x.real, x.imag]))
    d = ComplexToMagnitudePhased(["img"], split=True, mode="real_imag")({"img": x})
    assert set(d) == {"img_real", "img_imag"} and torch.equal(d["img_imag"], x.imag)
    back = MagnitudePhaseToComplexd(["img"], split=True, mode="real_imag")(d)
    assert set(back) == {"img"} and torch.equal(back["img"], x)
    assert torch.equal(MagnitudePhaseToComplexd(["img"], mode="real_imag")({"img": joint})["img"], x)
    with pytest.raises(ValueError, match="mode must be"):
        ComplexToMagnitudePhased(["img"], mode="polar")


def test_center_crop_default_320_and_inverse(brain_slice):
    img = ifft2c(fft2c(brain_slice))
    out = ComplexCenterCrop()(img)
    assert out.shape == (1, 320, 320) and torch.is_complex(out)
    assert torch.allclose(out[0, 69:250, 51:268].real, brain_slice[0], atol=1e-5)  # padded symmetrically
    d = ComplexCenterCropd(["x"], roi_size=(64, 64))({"x": img})
    assert d["x"].shape == (1, 64, 64)
    inv = ComplexCenterCropd(["x"], roi_size=(64, 64))
    assert inv.inverse(inv({"x": img}))["x"].shape == (1, 181, 217)


@pytest.mark.parametrize("mask_type", ["equispaced", "random"])
def test_undersampling_mask_fraction(mask_type):
    k = torch.ones(1, 8, 368, dtype=torch.complex64)
    t = UndersampleKspace(mask_type, center_fractions=[0.08], accelerations=[4])
    t.set_random_state(0)
    fractions = []
    for _ in range(100):
        out = t(k)
        fractions.append(float(t.mask.mean()))
        assert torch.equal(out[0, 0], t.mask.to(torch.complex64))
        centre = round(368 * 0.08)
        start = (368 - centre + 1) // 2
        assert bool(t.mask[start : start + centre].all())  # fully sampled centre
    tol = 0.01 if mask_type == "equispaced" else 0.005
    assert abs(np.mean(fractions) - 0.25) < tol
    if mask_type == "equispaced":
        assert np.ptp(fractions) < 0.01


def test_undersampling_dict_shares_mask_between_keys():
    k = torch.randn(2, 4, 64, dtype=torch.complex64)
    t = UndersampleKspaced(["a", "b"], "random", [0.1, 0.05], [4, 8])
    t.set_random_state(3)
    d = t({"a": k, "b": k.clone()})
    assert torch.equal(d["a"], d["b"]) and d["mask"].shape == (64,)
    assert torch.equal(d["a"], k * d["mask"])
    d2 = t({"a": k, "b": k})
    assert not torch.equal(d["mask"], d2["mask"])  # a new draw per sample


def test_undersample_dict_without_kspace_gets_no_stale_mask():
    t = UndersampleKspaced(["k"], allow_missing_keys=True).set_random_state(0)
    first = t({"k": torch.ones(2, 8, 100, dtype=torch.complex64)})
    assert first["mask"].shape == (100,)
    assert t({"id": 2}) == {"id": 2}  # no k-space, so no mask (not the previous sample's)
    assert t({"k": torch.ones(2, 8, 60, dtype=torch.complex64)})["mask"].shape == (60,)


def test_complex_noise_statistics(brain_slice):
    img = brain_slice.to(torch.complex64).repeat(1, 2, 2)
    t = AddComplexGaussianNoise(percent=5.0)
    t.set_random_state(0)
    noisy = t(img)
    sigma = 0.05 * float(img.abs().max())
    diff = noisy - img
    assert abs(diff.real.std().item() / sigma - 1) < 0.02 and abs(diff.imag.std().item() / sigma - 1) < 0.02
    assert abs(diff.real.mean().item()) < 0.01 * sigma
    # magnitude becomes Rician: background mean sigma * sqrt(pi / 2)
    background = img.abs() == 0
    assert abs(noisy.abs()[background].mean().item() / (sigma * math.sqrt(math.pi / 2)) - 1) < 0.03


def test_rician_noise_statistics_and_paired_keys():
    m = torch.zeros(1, 200, 200)
    m[:, :100] = 1.0
    t = AddRicianNoise(percent=10.0)
    t.set_random_state(1)
    out = t(m)
    sigma = 0.1
    assert abs(out[:, 100:].mean().item() / (sigma * math.sqrt(math.pi / 2)) - 1) < 0.03
    # high SNR region: approximately Gaussian around sqrt(A^2 + sigma^2)
    assert abs(out[:, :100].mean().item() - math.sqrt(1 + sigma**2)) < 0.01
    assert bool((out >= 0).all())
    d = AddRicianNoised(["a", "b"], percent=(5.0, 10.0))
    d.set_random_state(0)
    r = d({"a": m, "b": m.clone()})
    assert torch.equal(r["a"], r["b"]) and 5.0 <= d.transform.percent <= 10.0
    c = AddComplexGaussianNoised(["x"], percent=5.0, prob=0.0)({"x": m.to(torch.complex64)})
    assert torch.equal(c["x"], m.to(torch.complex64))


def test_twix_coil_images_rss_and_oversampling(twix_kspace):
    k = twix_kspace
    assert k.shape == (2, 320, 160) and k.dtype == torch.complex64  # (coils, readout 2x oversampled, lines)
    coils = KspaceToImage()(k)
    rss = RootSumOfSquares()(coils)
    assert rss.shape == (1, 320, 160)
    assert torch.allclose(rss[0] ** 2, coils[0].abs() ** 2 + coils[1].abs() ** 2, rtol=1e-4)
    # the phantom sits in the central half of the oversampled readout field of view
    energy = rss[0] ** 2
    assert energy[80:240].sum() / energy.sum() > 0.95
    k_os = RemoveReadoutOversampling()(k)
    assert k_os.shape == (2, 160, 160)
    rss_os = RootSumOfSquares()(KspaceToImage()(k_os))
    assert torch.allclose(rss_os[0], rss[0, 80:240], atol=1e-3 * float(rss.max()))
    # both coils see the phantom, with different sensitivities
    c0, c1 = coils.abs()
    assert float(torch.corrcoef(torch.stack([c0.flatten(), c1.flatten()]))[0, 1]) > 0.3
    assert not torch.allclose(c0, c1)


def test_twix_dictionary_loader_and_chain():
    d = LoadKspaced(["k"], remove_oversampling=True)({"k": str(TWIX)})
    d = RemoveReadoutOversamplingd(["k"], factor=1)(d)
    d = UndersampleKspaced(["k"], "equispaced", [0.08], [4])(d)
    d = KspaceToImaged(["k"])(d)
    assert d["k"].shape == (2, 160, 160) and abs(float(d["mask"].mean()) - 0.25) < 0.02


def test_fastmri_h5_single_and_multi_coil(tmp_path, brain_slice):
    k = fft2c(brain_slice)[0].numpy()
    single = tmp_path / "single.h5"
    with h5py.File(single, "w") as f:
        f["kspace"] = np.stack([k, 2 * k, 3 * k])  # (S, H, W)
    multi = tmp_path / "multi.h5"
    with h5py.File(multi, "w") as f:
        f["kspace"] = np.stack([np.stack([k, -k])] * 4)  # (S, C, H, W)
    assert LoadKspace(slice_index=1)(single).shape == (1, 181, 217)
    assert torch.allclose(LoadKspace(slice_index=2)(single)[0], torch.from_numpy(3 * k))
    assert read_kspace(single).shape == (1, 3, 181, 217)
    mc = LoadKspace(slice_index=-1)(multi)
    assert mc.shape == (2, 181, 217) and torch.allclose(mc[1], torch.from_numpy(-k))
    assert read_kspace(multi).shape == (2, 4, 181, 217)
    with pytest.raises(ValueError, match=r"single.h5: slice 3 out of range \(the file has 3 slices\)"):
        LoadKspace(slice_index=3)(single)
    rss = RootSumOfSquares()(KspaceToImage()(mc))
    assert torch.allclose(rss, brain_slice * math.sqrt(2), atol=1e-5)
    np.save(tmp_path / "k.npy", k)
    assert torch.allclose(LoadKspace()(tmp_path / "k.npy")[0], torch.from_numpy(k))


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        LoadKspace()(tmp_path / "missing.h5")
    (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        LoadKspace()(tmp_path / "empty.h5")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown k-space file type"):
        LoadKspace()(tmp_path / "x.txt")
    with h5py.File(tmp_path / "nok.h5", "w") as f:
        f["reconstruction_rss"] = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="no 'kspace' dataset"):
        LoadKspace()(tmp_path / "nok.h5")
    np.save(tmp_path / "real.npy", np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="must be complex"):
        LoadKspace()(tmp_path / "real.npy")
    bad = np.ones((4, 4), np.complex64)
    bad[0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"key 'k'.*NaN"):
        LoadKspaced(["k"])({"k": tmp_path / "nan.npy"})
    (tmp_path / "junk.dat").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="junk.dat"):
        LoadKspace()(tmp_path / "junk.dat")
    with pytest.raises(ValueError, match="channel-first"):
        KspaceToImage()(torch.ones(8, 8, dtype=torch.complex64))  # wrong rank
    with pytest.raises(ValueError, match=r"key 'img'.*NaN"):
        KspaceToImaged(["img"])({"img": torch.full((1, 4, 4), float("nan"), dtype=torch.complex64)})
    with pytest.raises(ValueError, match="complex"):
        UndersampleKspace()(torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="mask_type"):
        UndersampleKspace("radial")
    with pytest.raises(ValueError, match="non-negative"):
        AddRicianNoise()(-torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="divisible"):
        RemoveReadoutOversampling(3)(torch.ones(1, 8, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match="even channel"):
        MagnitudePhaseToComplex()(torch.ones(3, 4, 4))
    assert KspaceToImaged(["k"], allow_missing_keys=True)({"other": 1}) == {"other": 1}
