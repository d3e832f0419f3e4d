"""Small DICOM mammograms the decoding tests write: an MG dataset with a breast-like ramp, and GDCM's encoders."""

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MG = "1.2.840.10008.5.1.4.1.1.1.2"


def mammogram(bits: int, rows: int = 64, columns: int = 48) -> tuple[Dataset, np.ndarray]:
    """A small For-Presentation MG image with a smooth breast-like ramp (compressible) and texture."""
    yy, xx = np.mgrid[0:rows, 0:columns]
    texture = 0.05 * np.random.default_rng(0).random((rows, columns))
    ramp = np.clip(1.2 - np.hypot(yy - rows / 2, xx) / (0.625 * rows), 0, 1) + texture
    arr = np.rint(np.clip(ramp, 0, 1) * (2**bits - 1)).astype(np.uint16 if bits > 8 else np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MG, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MG, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.ImageLaterality = "MG", "CC", "L"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (16 if bits > 8 else 8), bits, bits - 1, 0
    ds.PixelData = arr.tobytes()
    return ds, arr


def transcode_with_gdcm(src: Path, dst: Path, syntax: str) -> None:
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
