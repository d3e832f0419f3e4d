"""Tests for the mammography transforms: loading, canonical side, breast crop, aspect-keeping resize, the chain."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from medmoe.transforms import (
    CanonicalSide,
    CanonicalSided,
    CropBreast,
    CropBreastd,
    EmptyMammogramError,
    LoadMammogram,
    LoadMammogramd,
    MammogramReadError,
    NotAMammogramError,
    ResizeKeepAspect,
    ResizeKeepAspectd,
    mammogram_preprocessing,
    mammography,
)
from monai.data import MetaTensor, decollate_batch, list_data_collate
from monai.transforms import Compose
from PIL import Image, ImageDraw, ImageFont

DATA = Path(__file__).resolve().parents[1] / "samples"  # real public samples with their licences (README there)
DENSITY = DATA / "mammography" / "monai_density"
CBIS = DATA / "mammography" / "cbis_ddsm" / "P_00820_LEFT_CC.dcm"
CHEST = DATA / "dicom" / "RG1_J2KR.dcm"


def breast(height: int = 60, width: int = 40, chest_wall: str = "left", marker: bool = True) -> MetaTensor:
    """A half-ellipse 'breast' against one side, plus a small separate bright marker in the far corner."""
    yy, xx = np.mgrid[:height, :width]
    x = xx if chest_wall == "left" else width - 1 - xx
    body = ((yy - height / 2) / (0.4 * height)) ** 2 + (x / (0.6 * width)) ** 2 <= 1
    image = np.where(body, 0.3 + 0.5 * (1 - x / width), 0.0)
    if marker:
        image[1:4, (width - 5 if chest_wall == "left" else 1) : (width - 2 if chest_wall == "left" else 4)] = 1.0
    return MetaTensor(torch.as_tensor(image[None], dtype=torch.float32), meta={"filename": "synthetic.png"})


def left_fraction(image: torch.Tensor, level: float = 0.05) -> float:
    """Share of the foreground pixels that lie in the left half."""
    foreground = (torch.as_tensor(image)[0] > level).float()
    width = foreground.shape[-1]
    return float(foreground[:, : width // 2].sum() / foreground.sum())


# ------------------------------------------------------------------------------------------ LoadMammogram


def test_load_png_with_overrides(tmp_path):
    Image.fromarray(np.linspace(0, 255, 30 * 20).reshape(30, 20).astype(np.uint8)).save(tmp_path / "a.png")
    image = LoadMammogram(view="mlo", laterality="right", image_type="S2D")(tmp_path / "a.png")
    assert isinstance(image, MetaTensor) and image.shape == (1, 30, 20) and image.dtype == torch.float32
    assert (image.meta["view"], image.meta["laterality"], image.meta["image_type"]) == ("MLO", "R", "s2d")
    assert image.meta["is_mammogram"] == -1 and image.meta["modality"] == "" and image.meta["format"] == "png"
    assert image.meta["filename_or_obj"] == str(tmp_path / "a.png")
    assert list(image.meta["spatial_shape"]) == [30, 20]
    # per-call overrides win over the constructor's
    assert LoadMammogram(laterality="R")(tmp_path / "a.png", laterality="L").meta["laterality"] == "L"


@pytest.mark.parametrize(("kwargs", "match"), [({"laterality": "B"}, "laterality"), ({"image_type": "dbt"}, "image")])
def test_load_rejects_bad_overrides(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoadMammogram(**kwargs)


def test_loadd_per_sample_overrides_and_missing_keys(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    load = LoadMammogramd(["cc", "mlo"], allow_missing_keys=True)
    out = load({"cc": str(tmp_path / "a.png"), "cc_view": "CC", "cc_laterality": "L", "cc_image_type": float("nan")})
    assert "mlo" not in out and out["cc"].meta["view"] == "CC" and out["cc"].meta["laterality"] == "L"
    assert out["cc"].meta["image_type"] == ""  # an empty CSV cell (NaN) is no override
    with pytest.raises(KeyError):
        LoadMammogramd(["cc", "mlo"])({"cc": str(tmp_path / "a.png")})


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [("cc_laterality", "B", "'L' or 'R'"), ("cc_view", 3, "must be a string"), ("cc_image_type", "dbt", "ffdm")],
)
def test_loadd_bad_per_sample_override_names_file_and_key(tmp_path, column, value, match):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match=rf"a\.png: bad per-sample override '{column}': .*{match}"):
        LoadMammogramd(["cc"])({"cc": str(tmp_path / "a.png"), column: value})


def test_loaded_images_collate_and_decollate(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    load = LoadMammogramd(["img"])
    samples = [load({"img": str(tmp_path / "a.png")}), load({"img": str(tmp_path / "a.png"), "img_laterality": "R"})]
    batch = list_data_collate(samples)  # fails if a meta value is None
    assert batch["img"].shape == (2, 1, 8, 8)
    assert [item["img"].meta["laterality"] for item in decollate_batch(batch)] == ["", "R"]


def test_load_missing_file_names_it(tmp_path):
    with pytest.raises(MammogramReadError, match="absent.dcm"):
        LoadMammogramd(["img"])({"img": str(tmp_path / "absent.dcm")})


# ------------------------------------------------------------------------------------------ CanonicalSide


@pytest.mark.parametrize(
    ("meta", "flipped", "source"),
    [
        ({"laterality": "R"}, True, "laterality"),
        ({"laterality": "L"}, False, "laterality"),
        ({"laterality": "L", "patient_orientation": "P\\L"}, True, "orientation"),
        ({"laterality": "R", "patient_orientation": "A\\R"}, False, "orientation"),
    ],
)
def test_canonical_side_from_tags(meta, flipped, source):
    image = breast(chest_wall="left")
    image.meta.update(meta)
    out = CanonicalSide()(image)
    assert out.meta["flipped"] is flipped and out.meta["chest_wall_source"] == source
    expected = torch.flip(image, dims=[-1]) if flipped else image
    assert torch.equal(out.as_tensor(), expected.as_tensor())


@pytest.mark.parametrize("chest_wall", ["left", "right"])
def test_canonical_side_from_intensity_and_inverse(chest_wall):
    image = breast(chest_wall=chest_wall)
    out = CanonicalSide()(image)
    assert out.meta["chest_wall_source"] == "intensity" and out.meta["flipped"] is (chest_wall == "right")
    assert left_fraction(out) > 0.7
    side = CanonicalSide()
    restored = side.inverse(side(image))
    assert torch.equal(restored.as_tensor(), image.as_tensor()) and restored.applied_operations == []


def test_canonical_side_without_a_flip_shares_the_pixels_not_the_bookkeeping():
    image = breast(chest_wall="left")
    image.meta["laterality"] = "L"
    out = CanonicalSide()(image)
    assert out.data_ptr() == image.data_ptr()  # no copy of a full-field image when nothing moves
    assert "flipped" not in image.meta and image.applied_operations == [] and len(out.applied_operations) == 1


def test_canonical_sided_inverse_and_missing_keys():
    data = {"a": breast(chest_wall="right"), "b": breast(chest_wall="left")}
    transform = CanonicalSided(["a", "b", "c"], allow_missing_keys=True)
    out = transform(data)
    assert out["a"].meta["flipped"] and not out["b"].meta["flipped"]
    back = transform.inverse(out)
    for key in ("a", "b"):
        assert torch.equal(back[key].as_tensor(), data[key].as_tensor())
    with pytest.raises(KeyError):
        CanonicalSided(["a", "c"])(data)


def test_spatial_transforms_reject_3d_and_name_the_file():
    volume = MetaTensor(torch.zeros(1, 4, 8, 8), meta={"filename": "volume.nii.gz"})
    for transform in (CanonicalSide(), CropBreast(), ResizeKeepAspect((8, 8))):
        with pytest.raises(ValueError, match=r"volume\.nii\.gz.*\(C, H, W\)"):
            transform(volume)


# ------------------------------------------------------------------------------------------ CropBreast


def upper_edge_otsu(values: np.ndarray, bins: int = 256) -> float:
    """The hand-written Otsu CropBreast used before scikit-image's: the same criterion, but the level at the upper
    edge of the best bin instead of its centre. Kept here only as the reference the swap is checked against."""
    hist, edges = np.histogram(np.asarray(values, dtype=np.float64), bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    low = np.cumsum(hist)
    mass = np.cumsum(hist * centers)
    mean_gap = mass / np.maximum(low, 1) - (mass[-1] - mass) / np.maximum(low[-1] - low, 1)
    return float(edges[int(np.argmax((low * (low[-1] - low) * mean_gap**2)[:-1])) + 1])


def test_crop_breast_otsu_keeps_at_least_the_breast_the_hand_version_kept(monkeypatch):
    """Demo mammograms (known breast = the clean rendering above its background): scikit-image's level (bin centre,
    at most the old upper bin edge) gives a box that covers every breast pixel the old one covered, more on some."""
    from medmoe.data.demo_mammo_images import render_kind, render_view, sample_anatomy

    rng = np.random.default_rng(0)
    kept = {"skimage": [], "hand": []}
    for i in range(48):
        clean = render_view(sample_anatomy(rng, i % 4, i % 3), ("CC", "MLO")[i % 2], (256, 192))
        image = torch.from_numpy(render_kind(clean, ("ffdm", "s2d")[i // 2 % 2], rng))[None]
        body = torch.from_numpy(clean > 0.1)
        for name in kept:
            if name == "hand":
                monkeypatch.setattr(mammography, "threshold_otsu", upper_edge_otsu)
            y0, y1, x0, x1 = CropBreast(threshold="otsu", margin=0).compute_box(image)
            kept[name].append(int(body[y0:y1, x0:x1].sum()))
            monkeypatch.undo()
    assert all(new >= old for new, old in zip(kept["skimage"], kept["hand"], strict=True))
    assert sum(kept["skimage"]) > sum(kept["hand"])


def test_crop_breast_float_threshold_is_a_fraction_of_the_range():
    # documented level: min + 0.5 * (max - min) = 10.5, so only the two 11s are foreground (0.5 * max would be 5.5)
    image = torch.tensor([[[10.0, 10, 10, 10.4, 11, 11]]]).expand(1, 4, 6).clone()
    assert CropBreast(threshold=0.5, margin=0, opening=0, chest_wall=None)(image).shape == (1, 4, 2)


@pytest.mark.parametrize("threshold", ["otsu", 0.1])
def test_crop_breast_drops_the_marker(threshold):
    image = breast(60, 40, chest_wall="left")
    out = CropBreast(threshold=threshold, margin=0)(image)
    body = torch.as_tensor(breast(60, 40, marker=False))[0] > 0
    rows, cols = torch.where(body)
    expected = (int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1)
    assert tuple(out.shape[1:]) == expected  # the marker at the top right is outside the box
    assert float(out.max()) < 1.0


def test_crop_breast_margin_and_inverse():
    image = breast(60, 40)
    crop = CropBreast(margin=2)
    out = crop(image)
    body = torch.as_tensor(breast(60, 40, marker=False))[0] > 0
    rows, _ = torch.where(body)
    assert out.shape[1] == int(rows.max() - rows.min()) + 1 + 4
    restored = crop.inverse(out)
    assert restored.shape == image.shape
    assert torch.equal(restored.as_tensor()[body[None]], image.as_tensor()[body[None]])
    assert float(restored[0, 1:4, -5:-2].max()) == 0.0  # the marker was cropped away, padded back with zeros


def test_crop_breast_working_resolution_box_covers_the_breast():
    image = breast(600, 400, marker=False)
    out = CropBreast(margin=0, working_size=64)(image)
    assert out.shape[1] >= 480 and out.shape[2] >= 240 and out.shape[1] <= 600
    assert float(out.double().sum()) == pytest.approx(float(image.double().sum()), rel=1e-9)  # only background cut


@pytest.mark.parametrize("value", [0.0, 0.5])
def test_crop_breast_empty_image_names_the_file(value):
    image = MetaTensor(torch.full((1, 16, 16), value), meta={"filename": "blank_LCC.dcm"})
    with pytest.raises(EmptyMammogramError, match=r"blank_LCC\.dcm"):
        CropBreast()(image)


def test_crop_breast_bad_arguments():
    with pytest.raises(ValueError, match="threshold"):
        CropBreast(threshold=1.5)


def test_crop_breastd_inverse():
    data = {"img": breast(60, 40, chest_wall="left")}
    crop = CropBreastd(["img", "other"], margin=3, allow_missing_keys=True)
    out = crop(data)
    assert out["img"].shape[1] < 60
    assert crop.inverse(out)["img"].shape == (1, 60, 40)


def _text(word: str, scale: int) -> np.ndarray:
    """A burned-in label: ``word`` in PIL's built-in bitmap font, blown up ``scale`` times (bool mask)."""
    canvas = Image.new("L", (8 * len(word) + 4, 16))
    ImageDraw.Draw(canvas).text((2, 2), word, fill=255, font=ImageFont.load_default())
    return np.kron(np.asarray(canvas) > 0, np.ones((scale, scale), bool))


def cluttered(height: int = 440, width: int = 300, frame: int = 0) -> tuple[MetaTensor, np.ndarray, dict]:
    """:func:`breast` plus burned-in text in three corners (one on the chest-wall side), a square marker, a ruler
    strip with ticks along the far edge and one along the bottom touching the chest wall; optionally a bright film
    frame of ``frame`` pixels round the image (touching the breast at the chest wall). Returns the image, the
    breast mask and the artefacts' boxes ``(y0, y1, x0, x1)``."""
    image = np.zeros((height, width), np.float32)
    image[60:-60] = breast(height - 120, width, marker=False)[0].numpy()
    body = image > 0
    boxes = {}
    for name, word, y, x in (("rmlo", "RMLO", 4, width - 110), ("cview", "C-View", 4, 4), ("lcc", "LCC", 380, 4)):
        text = _text(word, 3)[:, :100]
        image[y : y + text.shape[0], x : x + text.shape[1]][text] = 0.95
        boxes[name] = (y, y + text.shape[0], x, x + text.shape[1])
    image[150:170, 270:290] = 1.0
    boxes["marker"] = (150, 170, 270, 290)
    image[:, width - 8 :] = 0.6
    image[::10, width - 14 : width - 8] = 0.6  # ruler ticks
    boxes["ruler"] = (0, height, width - 14, width)
    image[height - 6 :, :] = 0.5
    boxes["bottom_ruler"] = (height - 6, height, 0, width)
    if frame:
        for band in (np.s_[:frame, :], np.s_[-frame:, :], np.s_[:, :frame], np.s_[:, -frame:]):
            image[band] = np.maximum(image[band], 0.3)
    tensor = torch.as_tensor(image[None], dtype=torch.float32)
    return MetaTensor(tensor, meta={"filename": "cluttered.png"}), body, boxes


@pytest.mark.parametrize("threshold", ["log_otsu", "triangle", 0.1])
@pytest.mark.parametrize("frame", [0, 5])
def test_crop_breast_drops_text_markers_rulers_and_film_frame(threshold, frame):
    image, body, boxes = cluttered(frame=frame)
    y0, y1, x0, x1 = CropBreast(threshold=threshold, margin=0).compute_box(image)
    rows, cols = np.nonzero(body)
    assert y0 <= rows.min() and y1 > rows.max() and x0 == 0 and x1 > cols.max()  # the whole breast
    for name, (b0, b1, c0, c1) in boxes.items():  # and none of the clutter
        assert b1 <= y0 or b0 >= y1 or c1 <= x0 or c0 >= x1, name
    if frame:  # the frame joins the breast at the chest wall: at most two opening radii of it stay in the box
        radius = 0.015 * max(body.shape)
        assert y0 >= rows.min() - 2 * radius - 1 and y1 <= rows.max() + 2 * radius + 2


def test_crop_breast_without_the_opening_or_chest_wall_rule_keeps_the_clutter():
    """The two steps the clutter test relies on, each shown to matter."""
    image, body, _ = cluttered(frame=5)
    assert CropBreast(margin=0, opening=0)(image).shape == image.shape  # the frame links everything
    square = torch.zeros(1, 100, 100)
    square[0, 30:60, 0:20] = 0.5  # breast at the chest wall
    square[0, 10:90, 50:100] = 0.5  # a bigger bright object away from it, at the other edge
    assert CropBreast(margin=0)(square).shape == (1, 30, 20)
    assert CropBreast(margin=0, chest_wall=None)(square).shape == (1, 80, 50)
    assert CropBreast(margin=0, chest_wall="right")(square).shape == (1, 80, 50)
    with pytest.raises(EmptyMammogramError, match=r"synthetic\.png.*chest wall.*CanonicalSide.*chest_wall=None"):
        CropBreast()(breast(60, 40, chest_wall="right", marker=False)[:, :, :30])


def test_crop_breast_keeps_the_whole_breast_on_demo_views_of_every_density():
    """Demo mammograms with a known breast mask: >= 99 % of the breast in the box for every density class (plain
    Otsu splits fatty from dense tissue and loses much of fatty breasts)."""
    from medmoe.data.demo_mammo_images import render_kind, render_view, sample_anatomy

    rng = np.random.default_rng(1)
    kept = {"log_otsu": np.zeros((4, 8)), "otsu": np.zeros((4, 8))}
    for i in range(32):
        density = i % 4
        clean = render_view(sample_anatomy(rng, density, i % 3), ("CC", "MLO")[i // 4 % 2], (256, 192))
        image = torch.from_numpy(render_kind(clean, ("ffdm", "s2d")[i // 8 % 2], rng))[None]
        body = clean > 0.1
        for threshold, table in kept.items():
            y0, y1, x0, x1 = CropBreast(threshold=threshold, margin=0).compute_box(image)
            table[density, i // 4] = body[y0:y1, x0:x1].sum() / body.sum()
    assert kept["log_otsu"].min() >= 0.99
    assert kept["otsu"].min() < 0.9 and kept["otsu"][0].mean() < kept["log_otsu"][0].mean() - 0.05


# ------------------------------------------------------------------------------------------ ResizeKeepAspect


def test_resize_keep_aspect_pads_right_and_bottom():
    image = torch.ones(1, 100, 40)
    resize = ResizeKeepAspect((50, 50))
    out = resize(image)
    assert out.shape == (1, 50, 50)
    assert torch.allclose(out[0, :, :20], torch.ones(50, 20)) and float(out[0, :, 20:].abs().max()) == 0.0
    wide = resize(torch.ones(1, 40, 100))
    assert torch.allclose(wide[0, :20], torch.ones(20, 50)) and float(wide[0, 20:].abs().max()) == 0.0
    assert resize.fitted_size(100, 40) == (50, 20)


def test_resize_keep_aspect_enlarges_small_images_and_inverts():
    image = breast(30, 20)
    resize = ResizeKeepAspect((64, 64))
    out = resize(image)
    assert out.shape == (1, 64, 64) and float(out[0, :, 43:].abs().max()) == 0.0
    restored = resize.inverse(out)
    assert restored.shape == image.shape and restored.applied_operations == []
    assert float((restored - image).abs().mean()) < 0.05


def test_resize_keep_aspectd_inverse_restores_shape():
    data = {"img": breast(120, 70)}
    resize = ResizeKeepAspectd(["img", "absent"], spatial_size=(32, 32), allow_missing_keys=True)
    out = resize(data)
    assert out["img"].shape == (1, 32, 32)
    assert resize.inverse(out)["img"].shape == (1, 120, 70)
    with pytest.raises(ValueError, match="spatial_size"):
        ResizeKeepAspect((32,))


# ------------------------------------------------------------------------------------------ the chain


def test_preprocessing_chain_and_compose_inverse(tmp_path):
    image = breast(90, 60, chest_wall="right")[0].numpy()
    Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / "r.png")
    chain = Compose(mammogram_preprocessing(["img"], spatial_size=(48, 32)))
    out = chain({"img": str(tmp_path / "r.png")})
    assert out["img"].shape == (1, 48, 32) and out["img"].meta["flipped"]
    assert left_fraction(out["img"]) > 0.7
    names = [op["class"] for op in out["img"].applied_operations]
    assert names == ["CanonicalSide", "CropBreast", "ResizeKeepAspect", "ResizeKeepAspect"]
    back = chain.inverse(out)["img"]
    assert back.shape == (1, 90, 60) and left_fraction(back) < 0.3  # chest wall on the right again


def test_all_density_jpegs_load_and_end_up_chest_wall_left():
    rows = list(csv.DictReader(open(DENSITY / "labels.csv")))
    assert len(rows) == 16
    load = LoadMammogramd(["img"])
    rest = Compose(mammogram_preprocessing(["img"], spatial_size=(128, 96))[1:])
    for row in rows:
        view = row["view_burned_in_marker_visual_read"]
        sample = {"img": str(DENSITY / row["file"])}
        if view != "unknown":  # the cohort's own view / side columns override the (absent) tags
            sample |= {"img_view": view[1:], "img_laterality": view[0]}
        loaded = load(sample)["img"]
        assert loaded.shape == (1, int(row["height"]), int(row["width"])), row["file"]
        assert 0.0 <= float(loaded.min()) and float(loaded.max()) <= 1.0 and float(loaded.max()) > 0.5
        assert loaded.meta["format"] == "jpeg" and loaded.meta["is_mammogram"] == -1
        if view != "unknown":
            assert (loaded.meta["view"], loaded.meta["laterality"]) == (view[1:], view[0])
            loaded.meta["laterality"] = ""  # burned-in reads disagree with the pixel layout for some: use pixels
        out = rest({"img": loaded})["img"]
        assert out.shape == (1, 128, 96)
        assert left_fraction(out) > 0.5, row["file"]


def test_cbis_ddsm_through_the_chain():
    chain = Compose(mammogram_preprocessing(["cc"], spatial_size=(256, 192), require_mammogram=True))
    out = chain({"cc": str(CBIS)})["cc"]
    meta = out.meta
    assert (meta["view"], meta["laterality"], meta["modality"], meta["is_mammogram"]) == ("CC", "L", "MG", 1)
    assert not meta["flipped"] and meta["chest_wall_source"] == "laterality"
    assert out.shape == (1, 256, 192) and left_fraction(out) > 0.6
    # the burned-in "LCC" label (top right) and the film border strips are outside the crop
    assert out.applied_operations[1]["extra_info"]["cropped"][3] > 500
    # the box, against the breast read by eye on the film (rows ~600-4250, nipple at column ~1590 of 4736 x 2624)
    # and the clutter (bright film frame ~70 rows at the top and bottom, "LCC" right of column ~2300)
    image = LoadMammogram()(CBIS)
    y0, y1, x0, x1 = CropBreast().compute_box(image)
    assert 100 < y0 <= 650 and 4200 <= y1 < 4736 - 100 and x0 == 0 and 1560 <= x1 < 2200
    # the default working size (512) finds the box of the finer 1024 working image to within the 16-pixel margin
    finer = CropBreast(working_size=1024).compute_box(image)
    assert max(abs(a - b) for a, b in zip((y0, y1, x0, x1), finer)) <= 16


@pytest.mark.parametrize("name", ["A/sample_A1.jpg", "B/sample_B2.jpg", "D/sample_D2.jpg"])
def test_density_jpegs_crop_drops_the_burned_in_marker_and_keeps_the_breast(name):
    image = LoadMammogram()(DENSITY / name)
    image.meta["laterality"] = ""  # the pixels decide the side, as in the test above
    image = CanonicalSide()(image)
    y0, y1, x0, x1 = CropBreast().compute_box(image)
    pixels = image[0].numpy()
    inside = np.zeros(pixels.shape, bool)
    inside[y0:y1, x0:x1] = True
    foreground, marker = pixels > 0.02, pixels > 0.6
    assert (foreground & ~inside).sum() < 0.01 * foreground.sum()  # the breast is in the box
    assert marker[:, x1:].sum() > 1000  # the bright burned-in view marker beside it is not
    assert (x1 - x0) < 0.75 * pixels.shape[1] and foreground[inside].mean() > 1.5 * foreground.mean()


def test_require_mammogram_rejects_the_chest_radiograph():
    with pytest.raises(NotAMammogramError, match=r"RG1_J2KR\.dcm.*'CR'"):
        LoadMammogram(require_mammogram=True)(CHEST)
    assert issubclass(NotAMammogramError, ValueError)


@pytest.mark.parametrize("radius", [1.0, 2.5, 7.0])
def test_box_limited_morphology_equals_the_whole_image_transform(radius):
    from medmoe.transforms.mammography import _dilate, _erode
    from scipy import ndimage

    rng = np.random.default_rng(int(radius * 10))
    for trial in range(6):
        mask = ndimage.gaussian_filter(rng.random((60, 48)), 3) > 0.5 + 0.02 * trial  # blobs, some at the edges
        mask[: trial * 3] = False  # and some boxes away from the edges
        whole_dilation = ndimage.distance_transform_edt(~mask) <= radius if mask.any() else mask
        whole_erosion = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1] > radius
        np.testing.assert_array_equal(_dilate(mask, radius), whole_dilation)
        np.testing.assert_array_equal(_erode(mask, radius), whole_erosion)
    empty = np.zeros((8, 8), bool)
    assert not _dilate(empty, radius).any() and not _erode(empty, radius).any()
