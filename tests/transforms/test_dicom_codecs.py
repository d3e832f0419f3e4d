"""Every transfer syntax of mammography archives decodes; an undecodable file names its syntax and the package."""

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_files import mammogram, transcode_with_gdcm
from medmoe.transforms.io import MammogramReadError, read_mammogram
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
)

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
    ds, stored = mammogram(bits)
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
        transcode_with_gdcm(tmp_path / "plain", path, syntax)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    decoded = pydicom.dcmread(path).pixel_array.astype(np.int64)
    assert np.abs(decoded - stored).max() <= tolerance
    image, meta = read_mammogram(path)
    assert image.shape == (1, 64, 48) and meta["view"] == "CC" and 0.0 <= image.min() < image.max() <= 1.0


def test_undecodable_file_names_the_syntax_and_the_package(tmp_path: Path, monkeypatch):
    ds, _ = mammogram(12)
    pydicom.dcmwrite(tmp_path / "plain", ds, enforce_file_format=True)
    transcode_with_gdcm(tmp_path / "plain", tmp_path / "jpeg12", JPEGExtended12Bit)  # no permissive decoder
    with pytest.raises(
        MammogramReadError, match=r"jpeg12: .*1\.2\.840\.10008\.1\.2\.4\.51 \(JPEG Extended.*gpl-codecs"
    ):
        read_mammogram(tmp_path / "jpeg12")
    # a lossless JPEG with no decoder installed: the message lists what would decode it
    transcode_with_gdcm(tmp_path / "plain", tmp_path / "lossless", JPEGLosslessSV1)
    from pydicom.pixels import get_decoder

    decoder = get_decoder(JPEGLosslessSV1)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setitem(sys.modules, "gdcm", None)  # python-gdcm absent: no region reader either
    with pytest.raises(MammogramReadError, match=r"4\.70 \(JPEG Lossless.*no working decoder.*pip install python-gdcm"):
        read_mammogram(tmp_path / "lossless")
