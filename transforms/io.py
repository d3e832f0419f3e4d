"""Reading mammograms (DICOM, JPEG, PNG) into a normalised array plus PHI-free metadata.

Every reader returns a float32 array of shape ``(1, H, W)`` with values in ``[0, 1]`` where dense tissue
is bright, whatever the photometric interpretation or bit depth of the file, and a metadata dict with a
fixed set of keys (``None`` when unknown). Patient tags (name, id, birth date, ...) are never read into
the metadata and never logged: the metadata is built from a whitelist.

Example:
    >>> image, meta = read_mammogram("P_00820_LEFT_CC.dcm")  # doctest: +SKIP
    >>> image.shape, meta["view"], meta["laterality"], meta["modality"]  # doctest: +SKIP
    ((1, 4736, 2624), 'CC', 'L', 'MG')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .dicom_codecs import undecodable_message
from .dicom_decode import stored_pixels
from .dicom_tags import IMAGE_TYPES, MAMMOGRAPHY_VIEWS, dicom_meta, normalize_laterality

__all__ = [
    "IMAGE_TYPES",
    "MAMMOGRAPHY_VIEWS",
    "META_KEYS",
    "MammogramReadError",
    "SUPPORTED_EXTENSIONS",
    "collate_safe_meta",
    "normalize_laterality",
    "read_mammogram",
    "validate_overrides",
]

#: Keys always present in the metadata returned by :func:`read_mammogram`.
META_KEYS: tuple[str, ...] = (
    "filename",
    "format",
    "modality",
    "is_mammogram",
    "sop_class",
    "view",
    "laterality",
    "image_type",
    "photometric",
    "bits_stored",
    "patient_orientation",
)

#: File extensions understood by :func:`read_mammogram`, mapped to the ``format`` meta value.
SUPPORTED_EXTENSIONS: dict[str, str] = {
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".dic": "dicom",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
}


class MammogramReadError(ValueError):
    """A mammogram file could not be read; the message always names the file."""


def read_mammogram(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a DICOM, JPEG or PNG mammogram as a ``(1, H, W)`` float32 image in ``[0, 1]``, dense tissue bright.

    DICOM: stored values -> Modality LUT (rescale slope / intercept or LUT) -> VOI LUT or window
    (or, when the file has neither, the full stored bit range) -> ``[0, 1]`` -> inverted when
    ``PhotometricInterpretation`` is MONOCHROME1. JPEG / PNG: greyscale (RGB grey collapses to one
    channel) divided by the maximum of the bit depth (8 or 16 bit).

    Args:
        path: a ``.dcm``/``.dicom``/``.dic`` (or extension-less DICOM), ``.jpg``/``.jpeg`` or ``.png`` file.

    Returns:
        ``(image, meta)``: ``image`` float32 of shape ``(1, H, W)``; ``meta`` holds exactly :data:`META_KEYS`:
        ``filename``, ``format`` ("dicom" | "jpeg" | "png"), ``modality`` (DICOM Modality or None),
        ``is_mammogram`` (True/False for DICOM, None for JPEG/PNG), ``view`` ("CC", "MLO", ... or None),
        ``laterality`` ("L" | "R" | None), ``image_type`` ("ffdm" | "s2d" | None), ``photometric``,
        ``bits_stored`` and ``patient_orientation`` (list of two direction codes, or None).

    Raises:
        MammogramReadError: missing file, unsupported extension, unreadable or corrupt file, pixel data
            that is not a single 2D greyscale frame, non-finite pixel values.

    Example:
        >>> image, meta = read_mammogram("sample_A1.jpg")  # doctest: +SKIP
        >>> image.shape, image.dtype, meta["format"]  # doctest: +SKIP
        ((1, 2457, 1996), dtype('float32'), 'jpeg')
    """
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise MammogramReadError(f"{name}: no such file (check the path and the data root).")
    fmt = _format_of(path)
    if fmt == "dicom":
        image, meta = _read_dicom(path)
    else:
        image, meta = _read_pillow(path, fmt)
    if not np.isfinite(image).all():
        raise MammogramReadError(f"{name}: the pixel data holds NaN or infinite values.")
    meta = {key: meta.get(key) for key in META_KEYS} | {"filename": name, "format": fmt}
    return image[None].astype(np.float32, copy=False), meta


def validate_overrides(
    view: Any = None, laterality: Any = None, image_type: Any = None
) -> tuple[str | None, str | None, str | None]:
    """Check and normalise cohort overrides: ``(" mlo", "left", "S2D")`` -> ``("MLO", "L", "s2d")``.

    None, ``""`` and NaN (an empty CSV cell) mean "no override" and come back as None.

    Raises:
        ValueError: a value that is not a string, a laterality other than L / R, an image type other than
            "ffdm" / "s2d".
    """
    cleaned = []
    for value, what in ((view, "view"), (laterality, "laterality"), (image_type, "image_type")):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            cleaned.append(None)
        elif not isinstance(value, str):
            raise ValueError(f"{what} override must be a string, got {type(value).__name__} {value!r}.")
        else:
            cleaned.append(value.strip() or None)
    view_, side_, type_ = cleaned
    side = normalize_laterality(side_)
    if side_ is not None and side is None:
        raise ValueError(f"laterality override must be 'L' or 'R' (or 'left' / 'right'), got {side_!r}.")
    if type_ is not None and type_.lower() not in IMAGE_TYPES:
        raise ValueError(f"image_type override must be one of {IMAGE_TYPES}, got {type_!r}.")
    return (view_.upper() if view_ else None), side, (type_.lower() if type_ else None)


def collate_safe_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The :func:`read_mammogram` metadata in a form MONAI's collate can batch (it cannot batch None).

    Unknown strings become ``""``, ``patient_orientation`` the DICOM string ``"A\\R"`` (or ``""``),
    ``is_mammogram`` an int (1 MG, 0 another modality, -1 unknown) and an unknown ``bits_stored`` -1.
    """
    out = {key: ("" if value is None else value) for key, value in meta.items()}
    out["is_mammogram"] = {True: 1, False: 0, None: -1}[meta.get("is_mammogram")]
    orientation = meta.get("patient_orientation")
    out["patient_orientation"] = "\\".join(orientation) if orientation else ""
    out["bits_stored"] = -1 if meta.get("bits_stored") is None else int(meta["bits_stored"])
    return out


# ---------------------------------------------------------------------------------------------------- formats


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in SUPPORTED_EXTENSIONS:
        return SUPPORTED_EXTENSIONS[suffix]
    if suffix == "" and _has_dicom_preamble(path):
        return "dicom"
    supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
    raise MammogramReadError(
        f"{path}: unsupported file type {suffix or '(no extension, no DICOM preamble)'!r}; "
        f"supported: {supported}, or an extension-less DICOM file."
    )


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _read_pillow(path: Path, fmt: str) -> tuple[np.ndarray, dict[str, Any]]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            picture = ImageOps.exif_transpose(opened)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise MammogramReadError(f"{path}: not a readable {fmt.upper()} image ({type(err).__name__}: {err}).") from err
    numeric = high_bit_depth_grey(picture)
    if numeric is None:  # L, LA, RGB, RGBA, P, 1, CMYK, YCbCr: luminance in 8 bits (grey RGB keeps its values)
        array, bits = np.asarray(picture.convert("L"), dtype=np.float32) * np.float32(1 / 255), 8
    else:
        raw, bits = numeric
        array = raw / 65535.0 if bits == 16 else min_max_scale(raw)
    if array.ndim != 2:
        raise MammogramReadError(f"{path}: expected a 2D greyscale image, got pixel data of shape {array.shape}.")
    return np.clip(array, 0.0, 1.0, out=array), {"bits_stored": bits}


def high_bit_depth_grey(picture: Any) -> tuple[np.ndarray, int] | None:
    """Values of a 16-bit, 32-bit integer or float greyscale Pillow image as float64, with its bit depth (16 or 32).

    None for 8-bit and colour modes, which ``picture.convert("L")`` reads correctly; on the modes handled here
    ``convert("L")`` clips at 255 instead of scaling. 16-bit PNGs open as ``I;16`` or, in some Pillow versions,
    as 32-bit ``I``: an ``I`` image within ``0 .. 65535`` counts as 16 bits.
    """
    mode = picture.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(picture, dtype=np.float64), 16
    if mode == "I":
        raw = np.asarray(picture, dtype=np.float64)
        return raw, 16 if raw.max(initial=0) <= 65535 and raw.min(initial=0) >= 0 else 32
    if mode == "F":
        return np.asarray(picture, dtype=np.float64), 32
    return None


def min_max_scale(array: np.ndarray) -> np.ndarray:
    """``array`` scaled to ``[0, 1]`` by its finite minimum and maximum (zeros if constant, unchanged if no value
    is finite)."""
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return array
    low, high = float(finite.min()), float(finite.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


# ---------------------------------------------------------------------------------------------------- DICOM


def _read_dicom(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as err:
        raise MammogramReadError(f"{path}: not a readable DICOM file ({type(err).__name__}).") from err
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise MammogramReadError(f"{path}: the DICOM file has no pixel data.")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames != 1 or samples != 1:
        raise MammogramReadError(
            f"{path}: expected a single-frame greyscale 2D image, got NumberOfFrames={frames}, "
            f"SamplesPerPixel={samples} (tomosynthesis volumes and colour images are not mammograms)."
        )
    try:
        stored = stored_pixels(ds, path)
    except Exception as err:  # decoders raise many types (missing plugin, truncated stream, ...)
        raise MammogramReadError(f"{path}: {undecodable_message(ds, err)}") from err
    if stored.ndim != 2:
        raise MammogramReadError(f"{path}: expected 2D pixel data, got an array of shape {stored.shape}.")
    image = _dicom_to_unit_range(stored, ds, path)
    return image, dicom_meta(ds)


def _dicom_to_unit_range(stored: np.ndarray, ds: Any, path: Path) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise MammogramReadError(
            f"{path}: expected a MONOCHROME1/2 image, got PhotometricInterpretation {photometric}."
        )
    bits = int(ds.get("BitsStored", stored.dtype.itemsize * 8) or stored.dtype.itemsize * 8)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if stored.dtype.kind in "iu":  # unused high bits may carry overlays or garbage: keep the stored range
        low_stored, high_stored = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        if stored.max() > high_stored or (stored.dtype.kind == "i" and stored.min() < low_stored):  # copy if needed
            stored = np.clip(stored, low_stored, high_stored)
    else:
        low_stored, high_stored = float(np.nanmin(stored)), float(np.nanmax(stored))
    affine = _affine_to_unit_range(ds, bits, signed, low_stored, high_stored) if stored.dtype.kind in "iu" else None
    if affine is not None:  # one float32 pass; the float64 LUT / window path below gives the same values
        image = np.multiply(stored, np.float32(affine[0]), dtype=np.float32)
        image += np.float32(affine[1])
        np.clip(image, 0.0, 1.0, out=image)
        return np.subtract(1.0, image, out=image) if photometric == "MONOCHROME1" else image
    try:
        low, high = _modality_range(ds, low_stored, high_stored)  # also checks the Modality LUT Data
        values = apply_modality_lut(stored, ds).astype(np.float64)
        if not np.isfinite(values).all():
            raise MammogramReadError(f"{path}: the pixel data holds NaN or infinite values.")
        voi_lut = ds.get("VOILUTSequence")
        has_lut = bool(voi_lut) and voi_lut[0].get("LUTData") is not None
        has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
        if has_lut:
            lut = _lut_data(voi_lut[0], ds)
            indices = values.astype(np.int64) if np.array_equal(values, np.round(values)) else values
            values = apply_voi_lut(indices, ds, prefer_lut=True).astype(np.float64)
            low, high = float(lut.min()), float(lut.max())
        elif has_window:
            values = apply_voi_lut(values, ds, prefer_lut=False).astype(np.float64)
            low, high = _window_range(ds, bits, signed)
    except MammogramReadError:
        raise
    except (ValueError, TypeError, AttributeError, IndexError) as err:
        raise MammogramReadError(f"{path}: invalid Modality LUT / VOI LUT / window tags: {err}") from err
    if high == low:
        image = np.zeros_like(values)
    else:  # high < low after windowing with a negative RescaleSlope: the window still maps low -> 0
        image = np.clip((values - low) / (high - low), 0.0, 1.0)
    return 1.0 - image if photometric == "MONOCHROME1" else image


def _affine_to_unit_range(
    ds: Any, bits: int, signed: bool, low_stored: float, high_stored: float
) -> tuple[float, float] | None:
    """``(a, b)`` with ``clip(a * stored + b, 0, 1)`` equal to the Modality LUT -> VOI -> ``[0, 1]`` map, or None.

    Without a Modality LUT Sequence or VOI LUT data, and with a LINEAR / LINEAR_EXACT window (or none), every step
    is a rescale followed by a clamp: pydicom's windowing clamps to ``(y_min, y_max)`` outside the window and is
    linear between, so after the ``[0, 1]`` normalisation the map is ``clip((v - (c - w / 2)) / w, 0, 1)`` of the
    rescaled value ``v`` (``c - 0.5``, ``w - 1`` for LINEAR). Anything else (LUTs, SIGMOID, a degenerate range)
    returns None and takes the general path.
    """
    voi_lut = ds.get("VOILUTSequence")
    if ds.get("ModalityLUTSequence") or (bool(voi_lut) and voi_lut[0].get("LUTData") is not None):
        return None
    try:
        slope, intercept = 1.0, 0.0
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
            low, high = _modality_range(ds, low_stored, high_stored)
            ok = high > low and slope != 0 and np.isfinite([slope, intercept, low, high]).all()
            return (slope / (high - low), (intercept - low) / (high - low)) if ok else None
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        center, width = (float(v[0] if ds[k].VM > 1 else v) for k, v in (("WindowCenter", ds.WindowCenter),
                                                                      ("WindowWidth", ds.WindowWidth)))  # fmt: skip
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        return None  # the general path reports bad tags with the file's name
    if function == "LINEAR" and width >= 1:
        center, width = center - 0.5, width - 1
    elif function != "LINEAR_EXACT":
        return None
    y_min, y_max = _window_range(ds, bits, signed)
    if not width > 0 or y_max == y_min or not all(np.isfinite([slope, intercept, center, width])):
        return None
    # (y - y_min) / (y_max - y_min) of the windowed value is the window position t in [0, 1] (for either sign of
    # y_max - y_min): t = (slope * stored + intercept - center) / width + 0.5
    return slope / width, (intercept - center) / width + 0.5


def _lut_data(item: Any, ds: Any) -> np.ndarray:
    """The entries of a Modality / VOI LUT item as pydicom's ``apply_modality_lut`` / ``apply_voi_lut`` use them.

    pydicom gives LUT Data (VR "US or OW") as a list of ints for US and as raw bytes for OW (usual in explicit-VR
    files; also how it resolves the ambiguous VR in implicit-VR ones). Bytes hold one 16-bit word per entry in the
    dataset's byte order; the entries are then cast to 8 or 16 bits by the LUT Descriptor's bit depth.

    Raises:
        ValueError: a LUT Descriptor without 3 values, or fewer LUT Data entries than it declares.
    """
    descriptor = [int(v) for v in item.LUTDescriptor]
    if len(descriptor) != 3:
        raise ValueError(f"LUT Descriptor must hold 3 values, got {descriptor}.")
    entries, depth = descriptor[0] or 2**16, descriptor[2]
    data = item.LUTData
    if isinstance(data, (bytes, bytearray)):
        little_endian = getattr(ds, "original_encoding", (None, True))[1] is not False
        words = np.frombuffer(data, dtype="<u2" if little_endian else ">u2")
    else:
        words = np.asarray(data, dtype=np.int64).ravel()
    if words.size < entries:
        raise ValueError(f"LUT Data holds {words.size} entries, the LUT Descriptor declares {entries}.")
    return words[:entries].astype(np.uint8 if depth <= 8 else np.uint16)


def _modality_range(ds: Any, low_stored: float, high_stored: float) -> tuple[float, float]:
    """Output range of the Modality LUT applied to the stored range.

    As in pydicom's ``apply_modality_lut``, a rescale needs both RescaleSlope and RescaleIntercept.
    """
    modality_lut = ds.get("ModalityLUTSequence")
    if modality_lut:
        lut = _lut_data(modality_lut[0], ds)
        return float(lut.min()), float(lut.max())
    if "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
        return low_stored, high_stored
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    ends = (low_stored * slope + intercept, high_stored * slope + intercept)
    return min(ends), max(ends)


def _window_range(ds: Any, bits: int, signed: bool) -> tuple[float, float]:
    """``(y_min, y_max)`` that pydicom's ``apply_windowing`` maps values below / above the window to.

    After a Modality LUT Sequence it is ``0 .. 2**LUTDescriptor[2] - 1``, else the stored bit range, rescaled
    when both RescaleSlope and RescaleIntercept are present (so ``y_min > y_max`` for a negative slope).
    """
    modality_lut = ds.get("ModalityLUTSequence")
    if modality_lut:
        y_min, y_max = 0.0, float(2 ** int(modality_lut[0].LUTDescriptor[2]) - 1)
    elif signed:
        y_min, y_max = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    else:
        y_min, y_max = 0.0, float(2**bits - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        y_min, y_max = y_min * float(slope) + float(intercept), y_max * float(slope) + float(intercept)
    return y_min, y_max
