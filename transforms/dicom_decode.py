"""A DICOM's stored pixel values: GDCM's region reader for JPEG Lossless and JPEG 2000 mammograms, pydicom otherwise.

pydicom decodes JPEG Lossless (and, first of its plugins, JPEG 2000) through GDCM's ``Image.GetBuffer``, which the
Python binding returns as a ``str``: a full-field 12-bit mammogram (3000 x 2500) goes through a 15 MB UTF-8 decode
and ``str.encode`` on top of the JPEG decode. GDCM's ``ImageRegionReader.ReadIntoBuffer`` writes the same values
straight into a ``bytearray``: JPEG Lossless in 0.09 s instead of pydicom's 0.20 s, JPEG 2000 lossless in 0.46 s
instead of 0.57 s (one such mammogram; GDCM decodes JPEG 2000 with OpenJPEG's threads either way;
``benchmarks/scale_data.py`` measures both at the cohort scale).

The region reader is used where its values are pydicom's by construction and by test
(``tests/transforms/test_dicom_decode.py``): one frame, one sample, unsigned 8- or 16-bit, one of
:data:`GDCM_DIRECT_SYNTAXES`, with Pixel Data that pydicom found complete (on a truncated file GDCM returns whatever
the stream held); GDCM clears the bits above Bits Stored as pydicom does. Everything else, and a file the region
reader cannot read, goes to ``ds.pixel_array``, so a corrupt stream fails there with pydicom's error (which
:func:`medmoe.transforms.dicom_codecs.undecodable_message` turns into a message naming the codec).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GDCM_DIRECT_SYNTAXES", "stored_pixels"]

logger = logging.getLogger(__name__)

#: transfer syntaxes read through GDCM's region reader: JPEG Lossless (process 14, and its selection value 1) and
#: JPEG 2000 (lossless only, and lossy, which pydicom also hands to GDCM first)
GDCM_DIRECT_SYNTAXES: frozenset[str] = frozenset(
    {"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}
)


def stored_pixels(ds: Any, path: str | Path) -> np.ndarray:
    """The stored values of ``ds`` (read from ``path``) as ``ds.pixel_array`` gives them, decoded by GDCM's region
    reader where that applies (see the module docstring).

    Args:
        ds: the pydicom dataset of ``path``.
        path: the file, which GDCM reads itself.

    Returns:
        The pixel array: ``(rows, columns)`` for a single-frame greyscale image.

    Raises:
        Whatever ``ds.pixel_array`` raises for data that neither decoder reads.
    """
    layout = _direct_layout(ds)
    if layout is not None:
        stored = _read_with_gdcm(path, *layout)
        if stored is not None:
            return stored
        logger.debug("%s: GDCM's region reader failed; decoding with pydicom", path)
    return ds.pixel_array


def _direct_layout(ds: Any) -> tuple[int, int, np.dtype] | None:
    """``(rows, columns, dtype)`` of the array the region reader fills for ``ds``, or None when pydicom decodes it."""
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    if syntax not in GDCM_DIRECT_SYNTAXES or "PixelData" not in ds:  # (a truncated file: GDCM would read garbage)
        return None
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        signed = int(ds.get("PixelRepresentation", 0) or 0)
        allocated, rows, columns = int(ds.BitsAllocated), int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):  # missing or malformed tags: pydicom says what is wrong
        return None
    if frames != 1 or samples != 1 or signed or allocated not in (8, 16) or rows < 1 or columns < 1:
        return None
    return rows, columns, np.dtype(np.uint8 if allocated == 8 else "<u2")


def _read_with_gdcm(path: str | Path, rows: int, columns: int, dtype: np.dtype) -> np.ndarray | None:
    """The whole image of ``path`` decoded by ``gdcm.ImageRegionReader`` into a ``(rows, columns)`` array, or None
    when GDCM cannot read it or its geometry or pixel format differs from the dataset's."""
    try:
        import gdcm
    except ImportError:
        return None
    reader = gdcm.ImageRegionReader()
    reader.SetFileName(str(path))
    if not reader.ReadInformation():
        return None
    image = reader.GetImage()
    pixel = image.GetPixelFormat()
    if list(image.GetDimensions())[:2] != [columns, rows] or pixel.GetSamplesPerPixel() != 1:
        return None
    if pixel.GetBitsAllocated() != dtype.itemsize * 8 or pixel.GetPixelRepresentation() != 0:
        return None
    box = gdcm.BoxRegion()
    box.SetDomain(0, columns - 1, 0, rows - 1, 0, 0)
    reader.SetRegion(box)
    length = rows * columns * dtype.itemsize
    if reader.ComputeBufferLength() != length:
        return None
    buffer = bytearray(length)
    if not reader.ReadIntoBuffer(buffer):
        return None
    return np.frombuffer(buffer, dtype=dtype).reshape(rows, columns)
