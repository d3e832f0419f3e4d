"""GDCM's region reader gives pydicom's stored values for JPEG Lossless / JPEG 2000 mammograms, and everything it
does not read (or cannot) goes to pydicom."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_files import mammogram, transcode_with_gdcm
from medmoe.transforms import dicom_decode
from medmoe.transforms.dicom_decode import stored_pixels
from medmoe.transforms.io import MammogramReadError, read_mammogram
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLossless, JPEGLosslessSV1, RLELossless

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture
def region_reads(monkeypatch) -> list[Path]:
    """The files GDCM's region reader decoded (it returned an array), in order."""
    reads, read = [], dicom_decode._read_with_gdcm

    def spy(path, rows, columns, dtype):
        out = read(path, rows, columns, dtype)
        if out is not None:
            reads.append(Path(path))
        return out

    monkeypatch.setattr(dicom_decode, "_read_with_gdcm", spy)
    return reads


def _write(tmp_path: Path, syntax: str, bits: int, rows: int = 64, columns: int = 48) -> tuple[Path, np.ndarray]:
    ds, values = mammogram(bits, rows, columns)
    path = tmp_path / f"ts{syntax.split('.')[-1]}_{bits}.dcm"
    if syntax in (JPEG2000Lossless, JPEG2000):
        ds.compress(syntax, **({"j2k_cr": [8]} if syntax == JPEG2000 else {}))
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    else:
        pydicom.dcmwrite(tmp_path / "plain", ds, enforce_file_format=True)
        transcode_with_gdcm(tmp_path / "plain", path, syntax)
    return path, values


CASES = [(JPEGLossless, 12), (JPEGLossless, 16), (JPEGLosslessSV1, 12), (JPEGLosslessSV1, 8), (JPEG2000Lossless, 12)]


@pytest.mark.parametrize("syntax, bits", CASES, ids=[f"{s.name[:24]}-{b}bit" for s, b in CASES])
def test_region_reader_gives_pydicoms_values(tmp_path: Path, region_reads, syntax, bits):
    path, values = _write(tmp_path, syntax, bits, rows=96, columns=72)  # rows != columns: the axes stay apart
    ds = pydicom.dcmread(path)
    out = stored_pixels(ds, path)
    assert region_reads == [path]
    expected = ds.pixel_array
    assert out.dtype == expected.dtype and out.shape == (96, 72)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out, values)  # lossless: the values written


def test_lossy_jpeg2000_and_a_real_sample_match_pydicom(tmp_path: Path, region_reads):
    lossy, values = _write(tmp_path, JPEG2000, 12)
    real = SAMPLES / "dicom" / "RG1_J2KR.dcm"  # 15 of 16 bits stored, MONOCHROME1 (licence in tests/samples)
    for path in (lossy, real):
        ds = pydicom.dcmread(path)
        np.testing.assert_array_equal(stored_pixels(ds, path), ds.pixel_array)
    assert region_reads == [lossy, real]
    assert 0 < np.abs(stored_pixels(pydicom.dcmread(lossy), lossy).astype(int) - values).max() <= 200


def test_unused_high_bits_are_cleared_as_pydicom_does(tmp_path: Path, region_reads):
    path, _ = _write(tmp_path, JPEGLossless, 16)  # 16-bit stream, then the header says 12 bits stored
    ds = pydicom.dcmread(path)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.save_as(tmp_path / "bits12", enforce_file_format=True)
    ds = pydicom.dcmread(tmp_path / "bits12")
    out = stored_pixels(ds, tmp_path / "bits12")
    assert region_reads == [tmp_path / "bits12"] and out.max() <= 4095
    np.testing.assert_array_equal(out, ds.pixel_array)


def test_other_layouts_and_syntaxes_go_to_pydicom(tmp_path: Path, region_reads):
    rle = SAMPLES / "mammography" / "cbis_ddsm" / "P_00820_LEFT_CC.dcm"  # RLE Lossless: pydicom's own decoder
    ds, values = mammogram(12)
    ds.PixelRepresentation = 1  # signed stored values
    pydicom.dcmwrite(tmp_path / "plain_signed", ds, enforce_file_format=True)
    transcode_with_gdcm(tmp_path / "plain_signed", tmp_path / "signed", JPEGLossless)
    ds, _ = mammogram(12)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pydicom.dcmwrite(tmp_path / "native", ds, enforce_file_format=True)
    for path in (rle, tmp_path / "signed", tmp_path / "native"):
        ds = pydicom.dcmread(path)
        assert str(ds.file_meta.TransferSyntaxUID) in (RLELossless, JPEGLossless, ExplicitVRLittleEndian)
        np.testing.assert_array_equal(stored_pixels(ds, path), ds.pixel_array)
    assert region_reads == []


def test_geometry_that_disagrees_with_gdcm_goes_to_pydicom(tmp_path: Path, region_reads):
    path, _ = _write(tmp_path, JPEGLosslessSV1, 12)
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 48, 64  # the header's geometry is not the stream's
    with pytest.raises(RuntimeError, match="Unable to decode"):  # pydicom's own error for the inconsistent file
        stored_pixels(ds, path)
    assert region_reads == []


def test_loader_reads_jpeg_lossless_through_the_region_reader(tmp_path: Path, region_reads, monkeypatch):
    path, values = _write(tmp_path, JPEGLosslessSV1, 12)
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(lambda self: pytest.fail("pydicom decode")))
    image, meta = read_mammogram(path)
    assert region_reads == [path] and meta["bits_stored"] == 12
    np.testing.assert_allclose(image[0], values / 4095, atol=1e-6)


def test_corrupt_stream_fails_with_the_codec_message(tmp_path: Path, region_reads):
    path, _ = _write(tmp_path, JPEGLosslessSV1, 12, rows=256, columns=192)
    data = bytearray(path.read_bytes())
    middle = len(data) - 8000
    data[middle : middle + 2000] = b"\x00" * 2000  # inside the JPEG stream, the file's structure intact
    (tmp_path / "corrupt").write_bytes(bytes(data))
    with pytest.raises(MammogramReadError, match=r"corrupt: cannot decode the pixel data of transfer syntax .*4\.70"):
        read_mammogram(tmp_path / "corrupt")
    assert region_reads == []


def test_truncated_file_is_not_read_past_its_end(tmp_path: Path, region_reads):
    path, _ = _write(tmp_path, JPEGLosslessSV1, 12, rows=256, columns=192)
    (tmp_path / "cut.dcm").write_bytes(path.read_bytes()[:-3000])  # pydicom drops the incomplete Pixel Data
    with pytest.warns(UserWarning, match="End of file"):
        ds = pydicom.dcmread(tmp_path / "cut.dcm")
    with pytest.raises(AttributeError, match="no 'Pixel Data'"):  # GDCM alone would return the stream's garbage
        stored_pixels(ds, tmp_path / "cut.dcm")
    assert region_reads == []
