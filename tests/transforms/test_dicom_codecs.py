"""Every transfer syntax of mammography archives decodes; an undecodable file names its syntax and the package."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from medmoe.transforms.io import MammogramReadError, read_mammogram
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

MG = "1.2.840.10008.5.1.4.1.1.1.2"


def _mammogram(bits: int) -> tuple[Dataset, np.ndarray]:
    """A small For-Presentation MG image with a smooth breast-like ramp (compressible) and texture."""
    yy, xx = np.mgrid[0:64, 0:48]
    ramp = np.clip(1.2 - np.hypot(yy - 32, xx) / 40, 0, 1) + 0.05 * np.random.default_rng(0).random((64, 48))
    arr = np.rint(np.clip(ramp, 0, 1) * (2**bits - 1)).astype(np.uint16 if bits > 8 else np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MG, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MG, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.ImageLaterality = "MG", "CC", "L"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 64, 48, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (16 if bits > 8 else 8), bits, bits - 1, 0
    ds.PixelData = arr.tobytes()
    return ds, arr


def _transcode_with_gdcm(src: Path, dst: Path, syntax: str) -> None:
    """JPEG baseline / lossless encoders: GDCM (a dependency) writes them; pydicom has no encoder for these."""
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(syntax)))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()


# syntax, bits, how it is written, max abs error allowed against the stored values
CASES = [
    (ImplicitVRLittleEndian, 12, "meta", 0),
    (ExplicitVRLittleEndian, 12, "meta", 0),
    (DeflatedExplicitVRLittleEndian, 12, "meta", 0),
    (RLELossless, 12, "compress", 0),
    (JPEG2000Lossless, 12, "compress", 0),
    (JPEG2000, 12, "compress_lossy", 200),  # 8:1 lossy on a 4095-level image
    (JPEGLSLossless, 12, "compress", 0),
    (JPEGLSNearLossless, 12, "compress_lossy", 2),
    (JPEGLossless, 12, "gdcm", 0),
    (JPEGLosslessSV1, 12, "gdcm", 0),
    (JPEGLossless, 16, "gdcm", 0),
    (JPEGBaseline8Bit, 8, "gdcm", 12),
    (JPEGExtended12Bit, 8, "gdcm", 12),  # JPEG Extended with 8-bit samples (12-bit: see the next test)
]


@pytest.mark.parametrize("syntax, bits, how, tolerance", CASES, ids=[f"{c[0].name[:40]}-{c[1]}bit" for c in CASES])
def test_every_archive_syntax_decodes(tmp_path: Path, syntax, bits, how, tolerance):
    ds, stored = _mammogram(bits)
    path = tmp_path / "image"
    if how == "meta":
        ds.file_meta.TransferSyntaxUID = syntax
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    elif how == "compress":
        ds.compress(syntax)
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    elif how == "compress_lossy":
        options = {"j2k_cr": [8]} if syntax == JPEG2000 else {"jls_error": 2}
        ds.compress(syntax, **options)
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
    else:
        pydicom.dcmwrite(tmp_path / "plain", ds, enforce_file_format=True)
        _transcode_with_gdcm(tmp_path / "plain", path, syntax)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    decoded = pydicom.dcmread(path).pixel_array.astype(np.int64)
    assert np.abs(decoded - stored).max() <= tolerance
    image, meta = read_mammogram(path)
    assert image.shape == (1, 64, 48) and meta["view"] == "CC" and 0.0 <= image.min() < image.max() <= 1.0


def test_undecodable_file_names_the_syntax_and_the_package(tmp_path: Path, monkeypatch):
    ds, _ = _mammogram(12)
    pydicom.dcmwrite(tmp_path / "plain", ds, enforce_file_format=True)
    _transcode_with_gdcm(tmp_path / "plain", tmp_path / "jpeg12", JPEGExtended12Bit)  # no permissive decoder
    with pytest.raises(
        MammogramReadError, match=r"jpeg12: .*1\.2\.840\.10008\.1\.2\.4\.51 \(JPEG Extended.*gpl-codecs"
    ):
        read_mammogram(tmp_path / "jpeg12")
    # a lossless JPEG with no decoder installed: the message lists what would decode it
    _transcode_with_gdcm(tmp_path / "plain", tmp_path / "lossless", JPEGLosslessSV1)
    from pydicom.pixels import get_decoder

    decoder = get_decoder(JPEGLosslessSV1)
    monkeypatch.setattr(decoder, "_available", {})
    with pytest.raises(MammogramReadError, match=r"4\.70 \(JPEG Lossless.*no working decoder.*pip install python-gdcm"):
        read_mammogram(tmp_path / "lossless")
