"""Tests for medmoe.transforms.io.read_mammogram on synthetic DICOM / PNG / JPEG and the real shared samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from medmoe.transforms.io import META_KEYS, MammogramReadError, read_mammogram
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

DATA = Path(__file__).resolve().parents[1] / "samples"  # real public samples with their licences (README there)
CBIS = DATA / "mammography" / "cbis_ddsm" / "P_00820_LEFT_CC.dcm"
CHEST = DATA / "dicom" / "RG1_J2KR.dcm"

MG_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    bits_stored: int = 14,
    photometric: str = "MONOCHROME2",
    implicit: bool = False,
    **tags,
) -> Path:
    """Write a minimal single-frame DICOM (or multi-frame for a 3D array) with the given tags; explicit VR little
    endian, or implicit VR (no VR stored, so pydicom resolves LUT Data's "US or OW" itself) with ``implicit``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = tags.get("SOPClassUID", MG_PRESENTATION)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "PHI-12345"
    ds.PatientBirthDate = "19700101"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint16)).tobytes()
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp(high: int, shape: tuple[int, int] = (8, 12)) -> np.ndarray:
    return np.linspace(0, high, shape[0] * shape[1]).round().astype(np.uint16).reshape(shape)


# ------------------------------------------------------------------------------------------ synthetic DICOM values


@pytest.mark.parametrize("bits", [12, 14, 16])
def test_monochrome2_without_window_uses_stored_range(tmp_path, bits):
    pixels = ramp(2**bits - 1)
    image, meta = read_mammogram(write_dicom(tmp_path / "a.dcm", pixels, bits_stored=bits))
    assert image.shape == (1, 8, 12) and image.dtype == np.float32
    np.testing.assert_allclose(image[0], pixels / (2**bits - 1), atol=1e-6)
    assert meta["bits_stored"] == bits and meta["photometric"] == "MONOCHROME2"


@pytest.mark.parametrize("bits", [12, 14, 16])
def test_monochrome1_is_inverted(tmp_path, bits):
    pixels = ramp(2**bits - 1)
    image, meta = read_mammogram(write_dicom(tmp_path / "m1.dcm", pixels, bits_stored=bits, photometric="MONOCHROME1"))
    np.testing.assert_allclose(image[0], 1.0 - pixels / (2**bits - 1), atol=1e-6)
    assert image[0, 0, 0] == pytest.approx(1.0) and image[0, -1, -1] == pytest.approx(0.0)
    assert meta["photometric"] == "MONOCHROME1"


def test_rescale_then_window(tmp_path):
    pixels = np.array([[0, 250, 500], [750, 1000, 2000]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "w.dcm", pixels, bits_stored=12, RescaleSlope=2, RescaleIntercept=0,
        WindowCenter=1000, WindowWidth=2000, VOILUTFunction="LINEAR_EXACT",
    )  # fmt: skip
    image, _ = read_mammogram(path)
    # modality values 0, 500, 1000, 1500, 2000, 4000 through the window [0, 2000]
    np.testing.assert_allclose(image[0], [[0.0, 0.25, 0.5], [0.75, 1.0, 1.0]], atol=1e-6)


def test_rescale_intercept_without_window_keeps_full_range(tmp_path):
    pixels = ramp(4095)
    path = write_dicom(tmp_path / "r.dcm", pixels, bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024)
    image, _ = read_mammogram(path)
    np.testing.assert_allclose(image[0], pixels / 4095, atol=1e-6)


def test_rescale_slope_without_intercept_is_ignored_like_pydicom(tmp_path):
    pixels = ramp(4095)
    path = write_dicom(tmp_path / "s.dcm", pixels, bits_stored=12, RescaleSlope=2)  # pydicom needs both tags
    image, _ = read_mammogram(path)
    np.testing.assert_allclose(image[0], pixels / 4095, atol=1e-6)


def test_window_on_monochrome1_is_inverted_after_windowing(tmp_path):
    pixels = np.array([[100, 200, 300]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "w1.dcm", pixels, bits_stored=12, photometric="MONOCHROME1",
        WindowCenter=200, WindowWidth=200, VOILUTFunction="LINEAR_EXACT",
    )  # fmt: skip
    image, _ = read_mammogram(path)
    np.testing.assert_allclose(image[0], [[1.0, 0.5, 0.0]], atol=1e-6)


def test_voi_lut_sequence(tmp_path):
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 16]
    lut.add_new("LUTData", "US", (np.arange(4096) // 16).astype(np.uint16).tolist())
    pixels = np.array([[0, 160, 4095]], dtype=np.uint16)
    image, _ = read_mammogram(write_dicom(tmp_path / "lut.dcm", pixels, bits_stored=12, VOILUTSequence=[lut]))
    np.testing.assert_allclose(image[0], [[0.0, 10 / 255, 1.0]], atol=1e-6)


def lut_item(values: np.ndarray, vr: str, bit_depth: int = 16, **tags) -> Dataset:
    """A Modality / VOI LUT item; VR "OW" stores LUT Data as bytes, which pydicom hands back as bytes."""
    item = Dataset()
    item.LUTDescriptor = [len(values), 0, bit_depth]
    for keyword, value in tags.items():
        setattr(item, keyword, value)
    data = values.astype("<u2").tobytes() if vr == "OW" else values.astype(np.uint16).tolist()
    item.add_new("LUTData", vr, data)
    return item


LUT_PIXELS = np.array([[0, 1000, 2000, 4095], [7, 100, 3000, 4000]], dtype=np.uint16)
CURVE = (np.sqrt(np.arange(4096) / 4095) * 60000).round()  # 16-bit entries that never reach 65535


@pytest.mark.parametrize("vr, implicit", [("US", False), ("OW", False), ("OW", True)])
def test_voi_lut_data_as_bytes_matches_pydicom(tmp_path, vr, implicit):
    path = write_dicom(
        tmp_path / "voi.dcm", LUT_PIXELS, bits_stored=12, implicit=implicit, VOILUTSequence=[lut_item(CURVE, vr)]
    )
    ds = pydicom.dcmread(path)
    assert isinstance(ds.VOILUTSequence[0].LUTData, bytes) == (vr == "OW" or implicit)
    image, _ = read_mammogram(path)
    expected = apply_voi_lut(ds.pixel_array, ds, prefer_lut=True) / CURVE.max()
    np.testing.assert_allclose(image[0], expected, atol=1e-6)


@pytest.mark.parametrize("vr", ["US", "OW"])
def test_modality_lut_data_as_bytes_matches_pydicom(tmp_path, vr):
    item = lut_item(CURVE, vr, ModalityLUTType="US")
    path = write_dicom(tmp_path / "mod.dcm", LUT_PIXELS, bits_stored=12, ModalityLUTSequence=[item])
    ds = pydicom.dcmread(path)
    image, _ = read_mammogram(path)
    np.testing.assert_allclose(image[0], apply_modality_lut(ds.pixel_array, ds) / CURVE.max(), atol=1e-6)


@pytest.mark.parametrize("vr", ["US", "OW"])
def test_window_after_modality_lut_uses_the_window_output_range(tmp_path, vr):
    item = lut_item(np.arange(4096) // 4, vr, ModalityLUTType="US")  # modality values 0 .. 1023
    path = write_dicom(
        tmp_path / "mw.dcm", LUT_PIXELS, bits_stored=12, ModalityLUTSequence=[item], WindowCenter=512, WindowWidth=1024
    )
    ds = pydicom.dcmread(path)
    image, _ = read_mammogram(path)
    # pydicom maps the window onto 0 .. 2**16 - 1 (the Modality LUT's bit depth), not onto 0 .. 1023
    windowed = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds).astype(np.float64), ds, prefer_lut=False)
    np.testing.assert_allclose(image[0], windowed / 65535, atol=1e-6)
    np.testing.assert_allclose(image[0, 0], [0.0, 0.2444, 0.4888, 1.0], atol=1e-3)  # not saturated at 1


def test_window_with_negative_rescale_slope_matches_pydicom(tmp_path):
    path = write_dicom(
        tmp_path / "neg.dcm", LUT_PIXELS, bits_stored=12, RescaleSlope=-1, RescaleIntercept=4095,
        WindowCenter=2048, WindowWidth=2048,
    )  # fmt: skip
    ds = pydicom.dcmread(path)
    image, _ = read_mammogram(path)
    windowed = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, prefer_lut=False)
    np.testing.assert_allclose(image[0], (windowed - 4095) / (0 - 4095), atol=1e-6)  # y_min 4095, y_max 0
    assert image[0, 0, 0] == pytest.approx(1.0) and image[0, 0, -1] == pytest.approx(0.0)


def test_short_lut_data_names_the_file(tmp_path):
    item = lut_item(CURVE[:100], "OW")
    item.LUTDescriptor = [4096, 0, 16]
    path = write_dicom(tmp_path / "short.dcm", LUT_PIXELS, bits_stored=12, VOILUTSequence=[item])
    with pytest.raises(MammogramReadError, match="short.dcm.*LUT Data holds 100 entries"):
        read_mammogram(path)


def test_unused_high_bits_are_ignored(tmp_path):
    pixels = np.array([[0, 4095, 4096 + 100]], dtype=np.uint16)  # 12 bits stored; the last one overflows
    image, _ = read_mammogram(write_dicom(tmp_path / "hb.dcm", pixels, bits_stored=12))
    assert float(image.max()) <= 1.0 and image[0, 0, 1] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ synthetic DICOM tags


def test_ffdm_tags(tmp_path):
    path = write_dicom(tmp_path / "ffdm.dcm", ramp(100), ViewPosition="MLO", ImageLaterality="R",
                       PatientOrientation=["A", "F"])  # fmt: skip
    _, meta = read_mammogram(path)
    assert set(meta) == set(META_KEYS)
    assert meta["format"] == "dicom" and meta["filename"] == str(path)
    assert (meta["modality"], meta["is_mammogram"], meta["view"], meta["laterality"]) == ("MG", True, "MLO", "R")
    assert meta["image_type"] == "ffdm" and meta["patient_orientation"] == ["A", "F"]


def test_no_patient_tags_in_meta(tmp_path):
    _, meta = read_mammogram(write_dicom(tmp_path / "phi.dcm", ramp(100), ViewPosition="CC"))
    text = repr(meta)
    for secret in ("Doe", "Jane", "PHI-12345", "19700101"):
        assert secret not in text
    assert not any("patient" in key and key != "patient_orientation" for key in meta)


@pytest.mark.parametrize(
    ("code", "scheme", "meaning", "view"),
    [
        ("399368009", "SCT", "medio-lateral oblique", "MLO"),
        ("399162004", "SCT", "cranio-caudal", "CC"),
        ("R-10242", "SRT", "cranio-caudal", "CC"),
        ("R-10226", "SRT", "medio-lateral oblique", "MLO"),
        ("X-0000", "99LOCAL", "Cranio-Caudal", "CC"),
        ("X-0000", "99LOCAL", "cranio-caudal exaggerated laterally", "XCCL"),
    ],
)
def test_view_from_view_code_sequence(tmp_path, code, scheme, meaning, view):
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code, scheme, meaning
    path = write_dicom(tmp_path / "vcs.dcm", ramp(100), ViewCodeSequence=[item], Laterality="L")
    _, meta = read_mammogram(path)
    assert meta["view"] == view and meta["laterality"] == "L"


def test_view_laterality_and_s2d_from_series_description(tmp_path):
    path = write_dicom(tmp_path / "cv.dcm", ramp(100), SeriesDescription="R MLO C-View")
    _, meta = read_mammogram(path)
    assert (meta["view"], meta["laterality"], meta["image_type"]) == ("MLO", "R", "s2d")


@pytest.mark.parametrize(
    "tags",
    [
        {"SeriesDescription": "LCC Intelligent 2D"},
        {"ProtocolName": "S2D screening"},
        {"ImageType": ["DERIVED", "PRIMARY", "TOMOSYNTHESIS", "GENERATED_2D"]},
        {"SeriesDescription": "2DS L CC"},
    ],
)
def test_synthesized_2d_detection(tmp_path, tags):
    _, meta = read_mammogram(write_dicom(tmp_path / "s2d.dcm", ramp(100), **tags))
    assert meta["image_type"] == "s2d"


def test_image_type_unknown_for_digitised_film(tmp_path):
    path = write_dicom(tmp_path / "film.dcm", ramp(100), SOPClassUID="1.2.840.10008.5.1.4.1.1.7", ConversionType="DF")
    assert read_mammogram(path)[1]["image_type"] is None


def test_extensionless_dicom_is_sniffed(tmp_path):
    path = write_dicom(tmp_path / "IM0001", ramp(100), ViewPosition="CC")
    assert read_mammogram(path)[1]["view"] == "CC"


# ------------------------------------------------------------------------------------------ PNG / JPEG


def test_png_16bit_and_rgb_grey(tmp_path):
    grey16 = ramp(65535, (6, 5))
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    image, meta = read_mammogram(tmp_path / "g16.png")
    np.testing.assert_allclose(image[0], grey16 / 65535, atol=1e-6)
    assert (meta["format"], meta["bits_stored"], meta["is_mammogram"], meta["modality"]) == ("png", 16, None, None)

    grey8 = ramp(255, (6, 5)).astype(np.uint8)
    Image.fromarray(np.stack([grey8] * 3, axis=-1)).save(tmp_path / "rgb.png")
    image, meta = read_mammogram(tmp_path / "rgb.png")
    assert image.shape == (1, 6, 5) and meta["bits_stored"] == 8
    np.testing.assert_allclose(image[0], grey8 / 255, atol=1e-6)


def test_jpeg(tmp_path):
    Image.fromarray(np.full((16, 8, 3), 200, np.uint8)).save(tmp_path / "x.jpeg", quality=95)
    image, meta = read_mammogram(tmp_path / "x.jpeg")
    assert image.shape == (1, 16, 8) and meta["format"] == "jpeg" and meta["view"] is None
    np.testing.assert_allclose(image, 200 / 255, atol=2 / 255)


# ------------------------------------------------------------------------------------------ bad input


def test_missing_file(tmp_path):
    with pytest.raises(MammogramReadError, match="nope.dcm"):
        read_mammogram(tmp_path / "nope.dcm")


@pytest.mark.parametrize("name", ["bad.dcm", "bad.png", "bad.jpg"])
def test_corrupt_bytes(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(MammogramReadError, match=name):
        read_mammogram(tmp_path / name)


def test_truncated_dicom_pixels(tmp_path):
    path = write_dicom(tmp_path / "trunc.dcm", ramp(100, (64, 64)))
    path.write_bytes(path.read_bytes()[:-4000])
    with pytest.raises(MammogramReadError, match="trunc.dcm"):
        read_mammogram(path)


def test_unsupported_extension(tmp_path):
    (tmp_path / "scan.tiff").write_bytes(b"II*\x00")
    with pytest.raises(MammogramReadError, match=r"scan\.tiff.*unsupported"):
        read_mammogram(tmp_path / "scan.tiff")


def test_multiframe_dicom_is_rejected(tmp_path):
    path = write_dicom(tmp_path / "tomo.dcm", np.zeros((3, 8, 8), np.uint16))
    with pytest.raises(MammogramReadError, match=r"tomo\.dcm.*NumberOfFrames=3"):
        read_mammogram(path)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # 0 * inf
def test_non_finite_pixels(tmp_path):
    path = write_dicom(tmp_path / "nan.dcm", ramp(100), RescaleSlope="1e400", RescaleIntercept=0)  # inf slope
    with pytest.raises(MammogramReadError, match=r"nan\.dcm"):
        read_mammogram(path)


def test_error_is_a_value_error(tmp_path):
    with pytest.raises(ValueError):
        read_mammogram(tmp_path / "missing.png")


# ------------------------------------------------------------------------------------------ real samples


@pytest.fixture(scope="module")
def cbis():
    return read_mammogram(CBIS)


def test_cbis_ddsm_tags_and_pixels(cbis):
    image, meta = cbis
    assert image.shape == (1, 4736, 2624) and image.dtype == np.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert (meta["modality"], meta["is_mammogram"]) == ("MG", True)
    assert meta["view"] == "CC"  # only in PatientOrientation
    assert meta["laterality"] == "L"  # only in Laterality
    assert meta["image_type"] is None  # digitised film, not FFDM
    assert meta["patient_orientation"] is None
    assert "P_00820" not in repr({k: v for k, v in meta.items() if k != "filename"})


def test_monochrome1_chest_is_inverted():
    image, meta = read_mammogram(CHEST)
    assert image.shape == (1, 1955, 1841)
    assert (meta["modality"], meta["is_mammogram"], meta["photometric"]) == ("CR", False, "MONOCHROME1")
    # independent reference: stored -> window (15000 / 30000 on 15 bits) -> [0, 1], not inverted
    ds = pydicom.dcmread(CHEST)
    stored = ds.pixel_array.astype(np.float64)
    center, width = float(ds.WindowCenter) - 0.5, float(ds.WindowWidth) - 1
    plain = np.clip((stored - center) / width + 0.5, 0, 1)
    np.testing.assert_allclose(image[0], 1.0 - plain, atol=1e-5)
    # air in the lungs dark, mediastinum bright
    a = image[0]
    height, width_px = a.shape
    rows = slice(int(0.3 * height), int(0.6 * height))
    left_lung = a[rows, int(0.2 * width_px) : int(0.35 * width_px)].mean()
    right_lung = a[rows, int(0.65 * width_px) : int(0.8 * width_px)].mean()
    lungs = (left_lung + right_lung) / 2
    mediastinum = a[rows, int(0.45 * width_px) : int(0.55 * width_px)].mean()
    assert mediastinum > lungs + 0.15


# ------------------------------------------------------------------------------------------ the float32 fast path

FAST_PATH_TAGS = [
    {},
    {"RescaleSlope": 1, "RescaleIntercept": -1024},
    {"RescaleSlope": 0.5, "RescaleIntercept": 3},
    {"WindowCenter": 2048, "WindowWidth": 1500},
    {"WindowCenter": 1800, "WindowWidth": 900, "VOILUTFunction": "LINEAR_EXACT"},
    {"WindowCenter": [1500, 2500], "WindowWidth": [1000, 3000]},  # the first window, as pydicom
    {"RescaleSlope": -1, "RescaleIntercept": 4095, "WindowCenter": 2048, "WindowWidth": 2048},
    {"RescaleSlope": 2, "RescaleIntercept": -100, "WindowCenter": 4000, "WindowWidth": 5000},
]


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("tags", FAST_PATH_TAGS, ids=[str(i) for i in range(len(FAST_PATH_TAGS))])
def test_float32_fast_path_equals_the_lut_window_path(tmp_path, monkeypatch, tags, photometric):
    from medmoe.transforms import io

    pixels = np.random.default_rng(0).integers(0, 4096, (16, 20)).astype(np.uint16)
    pixels[0, :3] = [0, 4095, 4096 + 7]  # the ends and an overflowing high bit
    path = write_dicom(tmp_path / "f.dcm", pixels, bits_stored=12, photometric=photometric, **tags)
    ds = pydicom.dcmread(path)
    assert io._affine_to_unit_range(ds, 12, False, 0, 4095) is not None  # these tags take the fast path
    fast, _ = read_mammogram(path)
    monkeypatch.setattr(io, "_affine_to_unit_range", lambda *args: None)
    general, _ = read_mammogram(path)
    assert fast.dtype == general.dtype == np.float32
    np.testing.assert_allclose(fast, general, rtol=0, atol=1e-6)
    assert 0.0 <= fast.min() and fast.max() <= 1.0 and fast.max() > fast.min()


def test_fast_path_leaves_sigmoid_and_luts_to_the_general_path(tmp_path):
    from medmoe.transforms import io

    path = write_dicom(
        tmp_path / "s.dcm", ramp(4095), bits_stored=12, WindowCenter=2048, WindowWidth=1000, VOILUTFunction="SIGMOID"
    )
    assert io._affine_to_unit_range(pydicom.dcmread(path), 12, False, 0, 4095) is None
    path = write_dicom(tmp_path / "l.dcm", LUT_PIXELS, bits_stored=12, VOILUTSequence=[lut_item(CURVE, "US")])
    assert io._affine_to_unit_range(pydicom.dcmread(path), 12, False, 0, 4095) is None
