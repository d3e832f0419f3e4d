"""Tests for medmoe.transforms.ophthalmology on the real fundus photograph (downsampled first)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from medmoe.transforms import (
    CupDiscToLabel,
    CupDiscToLabeld,
    FundusFOVCrop,
    FundusFOVCropd,
    FundusFOVMask,
    FundusFOVMaskd,
    FundusNormalize,
    FundusNormalized,
    LabelToCupDisc,
    LabelToCupDiscd,
    LoadFundus,
    LoadFundusd,
    OpticDiscCrop,
    OpticDiscCropd,
    fov_mask,
    fundus_preprocess,
)
from medmoe.transforms.fundus_geometry import RestoreFundusGeometry, RestoreFundusGeometryd
from monai.data import MetaTensor
from monai.transforms import Resize, Resized
from PIL import Image

DATA = Path(__file__).resolve().parents[1] / "samples"  # real public samples with their licences (README there)
RETINA = DATA / "fundus" / "retina.jpg"
DISC = (164, 63)  # optic disc centre (row, col) at 352 px, found by eye and as the brightest blob


@pytest.fixture(scope="module")
def fundus() -> torch.Tensor:
    """The real fundus photograph resized to (3, 352, 352)."""
    img = LoadFundus()(RETINA)
    assert img.shape == (3, 1411, 1411) and float(img.max()) <= 255
    return Resize((352, 352), mode="area")(img)


def _gamma_mask(shape=(352, 352), centre=DISC, disc_r=30, cup_r=14) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    r2 = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2
    mask = np.full(shape, 255, np.uint8)
    mask[r2 <= disc_r**2] = 128
    mask[r2 <= cup_r**2] = 0
    return mask


def test_load_fundus_rgb_channel_first_and_grey(tmp_path):
    d = LoadFundusd(["img"])({"img": str(RETINA)})
    ref = np.asarray(Image.open(RETINA).convert("RGB"))
    assert d["img"].shape == (3, 1411, 1411) and np.array_equal(d["img"][:, 700, 300].numpy(), ref[700, 300])
    Image.fromarray(_gamma_mask()).save(tmp_path / "mask.png")
    m = LoadFundus(grey=True)(tmp_path / "mask.png")
    assert m.shape == (1, 352, 352) and set(np.unique(m.numpy())) == {0.0, 128.0, 255.0}


def test_fov_mask_real_and_robust_to_borders_and_notches(fundus):
    m = FundusFOVMask()(fundus)
    assert m.shape == (1, 352, 352) and 0.74 < float(m.mean()) < 0.80  # a disc of radius ~175 px
    rows, cols = torch.nonzero(m[0], as_tuple=True)
    assert abs(float(rows.float().mean()) - 175.5) < 3 and abs(float(cols.float().mean()) - 175.5) < 3
    # black borders (asymmetric) plus a black notch cut into the rim, plus a burned-in white label in the corner
    padded = torch.zeros(3, 452, 402)
    padded[:, 60:412, 30:382] = fundus
    padded[:, 60:90, 190:215] = 0  # notch at the top of the FOV
    padded[:, 430:445, 5:40] = 255  # text label outside the FOV
    pm = fov_mask(padded)
    assert float((pm[0, 60:412, 30:382] ^ m[0].bool()).float().mean()) < 0.01  # same circle, shifted
    assert not bool(pm[0, 430:445, 5:40].any()) and bool(pm[0, 75, 200])  # label dropped, notch filled
    d = FundusFOVMaskd(["img"])({"img": padded})
    assert torch.equal(d["img_fov"].bool(), pm)


def test_fov_crop_with_mask_and_inverse(fundus):
    padded = torch.zeros(3, 452, 402)
    padded[:, 60:412, 30:382] = fundus
    crop = FundusFOVCrop()
    out = crop(padded)
    assert abs(out.shape[1] - 350) <= 4 and abs(out.shape[2] - 350) <= 4
    assert torch.allclose(crop.inverse(out)[:, 70:400, 40:370], padded[:, 70:400, 40:370])
    mask = torch.zeros(1, 452, 402)
    mask[:, 200:220, 100:120] = 1
    d = FundusFOVCropd(["img", "mask"], source_key="img")({"img": padded, "mask": mask})
    assert d["mask"].shape[1:] == d["img"].shape[1:] and float(d["mask"].sum()) == 400


def test_normalize_inside_fov_and_clahe(fundus):
    m = fov_mask(fundus)
    out = FundusNormalize()(fundus)
    inside = out[:, m[0]]
    assert torch.allclose(inside.mean(1), torch.zeros(3), atol=1e-4)
    assert torch.allclose(inside.std(1), torch.ones(3), atol=1e-3)
    assert float(out[:, ~m[0]].abs().max()) == 0.0
    raw_local = torch.from_numpy(np.asarray(fundus[1])).unfold(0, 32, 32).unfold(1, 32, 32).std((-1, -2)).mean()
    eq = FundusNormalized(["img"], mask_key="fov", clahe=True)({"img": fundus, "fov": m.float()})["img"]
    assert torch.allclose(eq[:, m[0]].std(1), torch.ones(3), atol=1e-3)
    # CLAHE raises local contrast relative to the global spread
    local = lambda x: x[1].unfold(0, 32, 32).unfold(1, 32, 32).std((-1, -2)).mean() / x[1][m[0]].std()  # noqa: E731
    assert float(local(eq)) > float(local(out)) * 1.1 and float(raw_local) > 0


def test_optic_disc_crop_from_mask_and_coordinates(fundus):
    gamma = torch.from_numpy(_gamma_mask())[None]
    label = CupDiscToLabel()(gamma)
    crop = OpticDiscCrop((96, 96))
    out = crop(fundus, disc_mask=label)
    assert out.shape == (3, 96, 96)
    assert torch.equal(out, fundus[:, 116:212, 15:111])
    # the crop holds the brightest region of the photograph: the real optic disc
    assert float(out[1].mean()) > 1.3 * float(fundus[1][fov_mask(fundus)[0]].mean())
    assert crop.inverse(out).shape == fundus.shape
    edge = OpticDiscCrop((96, 96))(fundus, centre=(5, 340))  # shifted to stay inside the image
    assert torch.equal(edge, fundus[:, 0:96, 256:352])
    d = OpticDiscCropd(["img", "seg"], (64, 64), disc_key="seg")({"img": fundus, "seg": label})
    assert d["img"].shape == (3, 64, 64) and int((d["seg"] == 2).sum()) == int((label == 2).sum())
    c = OpticDiscCropd(["img"], (64, 64), centre_key="disc_rc")
    r = c({"img": fundus, "disc_rc": DISC})
    assert c.inverse(r)["img"].shape == fundus.shape


def test_cup_disc_conversion_round_trip():
    gamma = torch.from_numpy(_gamma_mask())[None]
    label = CupDiscToLabeld(["m"])({"m": gamma})["m"]
    assert label.dtype == torch.int64 and set(torch.unique(label).tolist()) == {0, 1, 2}
    assert int((label == 2).sum()) == int((gamma == 0).sum()) and int((label == 1).sum()) == int((gamma == 128).sum())
    nested = CupDiscToLabel("disc_cup")(gamma)
    assert nested.shape == (2, 352, 352) and int(nested[0].sum()) == int((gamma < 255).sum())
    assert torch.equal(LabelToCupDiscd(["m"])({"m": label})["m"], gamma.to(torch.uint8))
    assert torch.equal(LabelToCupDisc()(nested), gamma.to(torch.uint8))
    noisy = gamma.float() + torch.randint(-20, 20, gamma.shape).clamp(min=0).float() * (gamma < 255)
    assert torch.equal(CupDiscToLabel()(noisy.clamp(0, 255)), label)  # JPEG-like noise tolerated


def test_full_chain(tmp_path):
    mask = np.full((1411, 1411), 255, np.uint8)
    mask[620:700, 220:300] = 128  # a GAMMA mask has a disc rim around the cup ({0, 255} alone is refused)
    mask[640:680, 240:280] = 0
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = fundus_preprocess("fundus", "cupdisc", size=128)({"fundus": str(RETINA), "cupdisc": str(tmp_path / "m.png")})
    assert out["fundus"].shape == (3, 128, 128) and out["cupdisc"].shape == (1, 128, 128)
    assert 8 <= int((out["cupdisc"] == 2).sum()) <= 20 and abs(float(out["fundus"][out["fundus"] != 0].mean())) < 0.1


def _synthetic_fundus_files(tmp_path: Path) -> tuple[Path, Path]:
    """A 100 x 120 'photograph' (bright disc-shaped FOV on black) and its GAMMA mask, as 8-bit PNGs."""
    yy, xx = np.ogrid[:100, :120]
    r2 = (yy - 50) ** 2 + (xx - 60) ** 2
    photo = np.zeros((100, 120, 3), np.uint8)
    photo[r2 < 40**2] = (150, 90, 40)
    photo[r2 < 10**2] = (230, 200, 120)
    Image.fromarray(photo).save(tmp_path / "f.png")
    Image.fromarray(_gamma_mask((100, 120), (50, 60), disc_r=10, cup_r=5)).save(tmp_path / "m.png")
    return tmp_path / "f.png", tmp_path / "m.png"


def test_fundus_chain_inverse_restores_the_original_size(tmp_path):
    photo, mask = _synthetic_fundus_files(tmp_path)
    chain = fundus_preprocess("fundus", "cupdisc", size=64)
    out = chain({"fundus": str(photo), "cupdisc": str(mask)})
    for key, channels in (("fundus", 3), ("cupdisc", 1)):
        assert isinstance(out[key], MetaTensor) and out[key].shape == (channels, 64, 64)
        assert [op["class"] for op in out[key].applied_operations] == ["CropForeground", "Resize"]
        assert out[key].meta["filename_or_obj"] == str(photo if key == "fundus" else mask)
    back = chain.inverse(out)
    assert back["fundus"].shape == (3, 100, 120) and back["cupdisc"].shape == (1, 100, 120)
    label = back["cupdisc"][0]
    assert int(label[50, 60]) == 2 and int(label[50, 67]) == 1 and int(label[0, 0]) == 0  # cup, rim, padding


def test_intensity_and_label_steps_keep_meta_and_applied_operations():
    image = Resize((40, 40))(MetaTensor(torch.rand(3, 50, 50) * 200 + 20, meta={"filename_or_obj": "f.png"}))
    out = FundusNormalize()(image, torch.ones(1, 40, 40))
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "f.png"
    assert [op["class"] for op in out.applied_operations] == ["Resize"]
    resize = Resize((40, 40), mode="nearest-exact")
    grey = resize(MetaTensor(torch.full((1, 50, 50), 128.0), meta={"id": 7}))
    for converted in (
        CupDiscToLabel()(grey),
        CupDiscToLabel("disc_cup")(grey),
        LabelToCupDisc()(CupDiscToLabel()(grey)),
    ):
        assert isinstance(converted, MetaTensor) and converted.meta["id"] == 7
        assert [op["class"] for op in converted.applied_operations] == ["Resize"]
    assert resize.inverse(CupDiscToLabel()(grey)).shape == (1, 50, 50)  # the same instance: MONAI checks its id


def test_16bit_fundus_and_masks_keep_their_levels(tmp_path):
    ramp = (np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16)  # 0 .. 59950
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    grey = LoadFundus(grey=True)(tmp_path / "grey16.png")
    np.testing.assert_allclose(grey[0].numpy(), ramp * (255 / 65535), rtol=1e-6)  # [0, 255], not clipped at 255
    assert len(torch.unique(grey)) == 30 * 40
    rgb = LoadFundus()(tmp_path / "grey16.png")
    assert rgb.shape == (3, 30, 40) and torch.equal(rgb[0], grey[0]) and torch.equal(rgb[2], grey[0])
    gamma = _gamma_mask((30, 40), (15, 20), disc_r=10, cup_r=5)
    expected = CupDiscToLabel()(torch.from_numpy(gamma)[None])
    for name, levels in (("full_scale.png", gamma.astype(np.uint16) * 257), ("small.png", gamma.astype(np.uint16))):
        Image.fromarray(levels).save(tmp_path / name)  # 0 / 32896 / 65535, or 0 / 128 / 255 in a 16-bit file
        mask = LoadFundus(grey=True)(tmp_path / name)
        assert torch.equal(CupDiscToLabel(strict=True)(mask), expected), name


def test_optic_disc_crop_keeps_an_axis_smaller_than_the_window():
    image = torch.rand(3, 100, 120)
    crop = OpticDiscCrop((256, 64))
    out = crop(image, centre=(50, 60))
    assert out.shape == (3, 100, 64) and torch.equal(out, image[:, :, 28:92])  # documented: no padding
    assert crop.inverse(out).shape == (3, 100, 120)


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        LoadFundus()(tmp_path / "missing.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"key 'f'.*empty"):
        LoadFundusd(["f"])({"f": tmp_path / "empty.png"})
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match="bad.jpg"):
        LoadFundus()(tmp_path / "bad.jpg")
    with pytest.raises(ValueError, match="channel-first"):
        FundusFOVMask()(torch.ones(64, 64))
    with pytest.raises(ValueError, match="black"):
        fov_mask(torch.zeros(3, 32, 32))
    nan = torch.ones(3, 16, 16)
    nan[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"key 'img'.*NaN"):
        FundusNormalized(["img"])({"img": nan})
    with pytest.raises(ValueError, match="disc mask is empty"):
        OpticDiscCrop((8, 8))(torch.ones(3, 16, 16), disc_mask=torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="disc mask or centre"):
        OpticDiscCrop((8, 8))(torch.ones(3, 16, 16))
    with pytest.raises(ValueError, match="strict"):
        CupDiscToLabel(strict=True)(torch.full((1, 4, 4), 100.0))
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        CupDiscToLabel()(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="exactly one"):
        OpticDiscCropd(["img"], (8, 8))


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.parametrize("size", [64, 128])
def test_crop_resize_then_restore_gives_the_original_geometry(fundus, size):
    """A GAMMA disc / cup mask on the real photograph (off-centre FOV in black borders) goes through the bundle's
    FOV crop + resize to the network size and back; the restored mask lies where the original one does."""
    padded = torch.zeros(3, 452, 402)
    padded[:, 60:412, 30:382] = fundus
    grey = torch.full((1, 452, 402), 255.0)
    grey[:, 60:412, 30:382] = torch.from_numpy(_gamma_mask()).float()  # disc radius 30, cup 14 at the real disc
    original = CupDiscToLabel()(grey)
    d = FundusFOVCropd(["img", "mask"], source_key="img", geometry_key="geom")({"img": padded, "mask": grey})
    height, width, r0, c0, r1, c1 = d["geom"].tolist()
    assert (height, width) == (452, 402) and d["geom"].dtype == torch.int64
    assert abs(r0 - 60) <= 3 and abs(c0 - 30) <= 3 and abs(r1 - 412) <= 3 and abs(c1 - 382) <= 3
    assert d["img"].shape[1:] == (r1 - r0, c1 - c0)
    d = Resized(["img", "mask"], (size, size), mode=["area", "nearest-exact"])(d)
    d = CupDiscToLabeld(["mask"])(d)
    back = RestoreFundusGeometryd(["mask"], geometry_key="geom")(d)["mask"]
    assert back.shape == original.shape
    assert _dice(back >= 1, original >= 1) > (0.95 if size == 128 else 0.93)  # disc
    assert _dice(back == 2, original == 2) > (0.9 if size == 128 else 0.8)  # cup, 4 px radius at 64
    assert not back[:, :r0].any() and not back[:, :, c1:].any()  # background outside the crop box
    grey_back = LabelToCupDisc()(back)
    assert grey_back.shape == (1, 452, 402) and set(torch.unique(grey_back).tolist()) == {0, 128, 255}
    # probabilities restored bilinearly, then argmax: at least as close as the nearest-neighbour label map
    onehot = torch.nn.functional.one_hot(d["mask"][0].long(), 3).permute(2, 0, 1).float()
    soft = RestoreFundusGeometry(mode="bilinear")(onehot, d["geom"]).argmax(0, keepdim=True)
    assert _dice(soft >= 1, original >= 1) >= _dice(back >= 1, original >= 1) - 0.01


def test_restore_places_the_box_and_keeps_dtype():
    label = torch.zeros(1, 4, 4, dtype=torch.long)
    label[:, 1:3, 1:3] = 1
    out = RestoreFundusGeometry()(label, torch.tensor([10, 12, 2, 4, 10, 12]))
    assert out.shape == (1, 10, 12) and out.dtype == torch.int64
    assert torch.equal(torch.nonzero(out[0]).amin(0), torch.tensor([4, 6])) and int(out.sum()) == 16
    # a box reaching past the image (e.g. k_divisible padding): only the overlap is kept
    ones = RestoreFundusGeometry(fill=-1.0)(torch.ones(1, 4, 4), [10, 10, -2, -2, 8, 8])
    assert int((ones == 1).sum()) == 64 and int((ones == -1).sum()) == 36
    probs = RestoreFundusGeometry("bilinear")(torch.rand(2, 8, 8, dtype=torch.float64), [16, 16, 0, 0, 16, 16])
    assert probs.dtype == torch.float32 and probs.shape == (2, 16, 16)
    steps = fundus_preprocess("fundus", "cupdisc", size=32, load=False, geometry_key="geom")
    img = torch.zeros(3, 40, 50)
    img[:, 5:35, 10:40] = 100.0
    out = steps({"fundus": img, "cupdisc": torch.full((1, 40, 50), 255.0)})
    assert out["geom"].tolist() == [40, 50, 5, 10, 35, 40]


def test_restore_and_geometry_errors():
    with pytest.raises(ValueError, match="mode"):
        RestoreFundusGeometry(mode="cubic")
    with pytest.raises(ValueError, match="geometry must be"):
        RestoreFundusGeometry()(torch.zeros(1, 4, 4), [10, 10, 0, 0])
    with pytest.raises(ValueError, match="invalid geometry"):
        RestoreFundusGeometry()(torch.zeros(1, 4, 4), [10, 10, 5, 0, 5, 10])
    with pytest.raises(ValueError, match=r"\(C, h, w\)"):
        RestoreFundusGeometry()(torch.zeros(4, 4), [10, 10, 0, 0, 10, 10])
    with pytest.raises(ValueError, match="geometry key 'geom' missing"):
        RestoreFundusGeometryd(["m"], geometry_key="geom")({"m": torch.zeros(1, 4, 4)})
    with pytest.raises(ValueError, match=r"key 'm'.*invalid geometry"):
        RestoreFundusGeometryd(["m"], geometry_key="g")({"m": torch.zeros(1, 4, 4), "g": [0, 10, 0, 0, 5, 5]})
    img = torch.zeros(3, 40, 50)
    img[:, 5:35, 10:40] = 100.0
    with pytest.raises(ValueError, match=r"key 'mask' is 20 x 25 but 'img' is 40 x 50"):
        FundusFOVCropd(["img", "mask"], source_key="img")({"img": img, "mask": torch.zeros(1, 20, 25)})


# ------------------------------------------------------------------------------------------ mask conventions


def _disc(shape=(60, 80), centre=(30, 40), r=12) -> np.ndarray:
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r**2


@pytest.mark.parametrize(
    "name, pixels, found",
    [
        ("disc01.png", _disc().astype(np.uint8), r"\{0, 1\}.*0/1"),  # the 'cup everywhere' case
        ("disc0255.png", _disc().astype(np.uint8) * 255, r"\{0, 255\}.*0/255"),  # background 0 read as cup
        ("cup_black.png", np.where(_disc(), 0, 255).astype(np.uint8), r"\{0, 255\}.*no 128 disc rim"),
    ],
)
def test_binary_masks_are_refused_under_gamma_naming_file_convention_and_values(tmp_path, name, pixels, found):
    Image.fromarray(pixels).save(tmp_path / name)
    mask = LoadFundus(grey=True)(tmp_path / name)
    with pytest.raises(ValueError, match=rf"{name}.*mask_convention='gamma'.*{found}.*'binary_disc'.*'binary_cup'"):
        CupDiscToLabel()(mask)


def test_the_fundus_chain_refuses_a_01_disc_mask_and_reads_it_when_told(tmp_path):
    disc = _disc((1411, 1411), (660, 260), 60)
    Image.fromarray(disc.astype(np.uint8)).save(tmp_path / "disc01.png")
    sample = {"fundus": str(RETINA), "cupdisc": str(tmp_path / "disc01.png")}
    with pytest.raises(RuntimeError) as info:  # MONAI's Compose wraps the transform's error
        fundus_preprocess("fundus", "cupdisc", size=64)(sample)
    assert isinstance(info.value.__cause__, ValueError)
    assert re.search(r"disc01\.png.*'gamma'.*\{0, 1\}", str(info.value.__cause__))
    out = fundus_preprocess("fundus", "cupdisc", size=64, mask_convention="binary_disc")(sample)["cupdisc"]
    assert (
        set(torch.unique(out).tolist()) == {0, 1} and 15 <= int((out == 1).sum()) <= 35
    )  # pi * (60 * 64 / 1411) ** 2 = 23


@pytest.mark.parametrize("scale", [1, 255])
@pytest.mark.parametrize("convention, value", [("binary_disc", 1), ("binary_cup", 2)])
def test_binary_masks_are_read_with_an_explicit_convention(tmp_path, scale, convention, value):
    disc = _disc()
    Image.fromarray(disc.astype(np.uint8) * scale).save(tmp_path / "m.png")
    mask = LoadFundus(grey=True)(tmp_path / "m.png")
    label = CupDiscToLabeld(["m"], mask_convention=convention)({"m": mask})["m"]
    assert label.dtype == torch.int64 and label.shape == (1, 60, 80)
    assert torch.equal(label[0], torch.from_numpy(disc).long() * value)
    assert label.meta["filename_or_obj"].endswith("m.png")


def test_binary_conventions_refuse_grey_masks_and_the_nested_output():
    gamma = MetaTensor(torch.from_numpy(_gamma_mask())[None].float(), meta={"filename_or_obj": "gamma_0001.png"})
    assert set(torch.unique(CupDiscToLabel()(gamma)).tolist()) == {0, 1, 2}  # the GAMMA convention reads it
    for convention in ("binary_disc", "binary_cup"):
        with pytest.raises(ValueError, match=r"gamma_0001\.png.*binary 0/1 or 0/255.*\{0, 128, 255\}.*'gamma'"):
            CupDiscToLabel(mask_convention=convention)(gamma)
        with pytest.raises(ValueError, match="only one of them"):
            CupDiscToLabel("disc_cup", mask_convention=convention)
    with pytest.raises(ValueError, match="mask_convention must be one of"):
        CupDiscToLabel(mask_convention="binary")
