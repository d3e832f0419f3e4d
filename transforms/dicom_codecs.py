"""Which package decodes which DICOM transfer syntax, and an error that says so.

Decoding goes through pydicom's pixel-data plugins. The installed set (all with licences that fit an Apache-2.0
project) covers the transfer syntaxes found in mammography archives:

=====================================  ==========================  ============================================
transfer syntax                        UID                         decoded by (licence)
=====================================  ==========================  ============================================
Implicit / Explicit VR Little Endian   1.2.840.10008.1.2, .1.2.1   pydicom (MIT)
Deflated Explicit VR Little Endian     1.2.840.10008.1.2.1.99      pydicom (zlib)
RLE Lossless                           1.2.840.10008.1.2.5         pydicom, pylibjpeg-rle (MIT)
JPEG Baseline (8-bit)                  1.2.840.10008.1.2.4.50      Pillow (MIT-CMU), python-gdcm (Apache-2.0)
JPEG Extended (8-bit)                  1.2.840.10008.1.2.4.51      Pillow, python-gdcm
JPEG Lossless (Process 14, SV1)        1.2.840.10008.1.2.4.57/.70  python-gdcm
JPEG-LS lossless / near-lossless       1.2.840.10008.1.2.4.80/.81  pyjpegls (MIT), python-gdcm
JPEG 2000 lossless / lossy             1.2.840.10008.1.2.4.90/.91  pylibjpeg-openjpeg (MIT), python-gdcm
=====================================  ==========================  ============================================

Not covered by a permissive decoder: JPEG Extended with **12-bit** samples (.51, rare in mammography; pydicom's
GDCM and Pillow plugins refuse it). The GPL-3.0 ``pylibjpeg-libjpeg`` decodes it and is offered only as the opt-in
extra ``pip install "medmoe[gpl-codecs]"``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["GPL_ONLY_HINT", "PERMISSIVE_DECODERS", "undecodable_message"]

#: transfer syntax UID -> the permissive package(s) that decode it (each a dependency of medmoe)
PERMISSIVE_DECODERS: dict[str, str] = {
    "1.2.840.10008.1.2.5": "pydicom (built in) or pylibjpeg-rle",
    "1.2.840.10008.1.2.4.50": "pillow or python-gdcm",
    "1.2.840.10008.1.2.4.51": "pillow or python-gdcm (8-bit samples only)",
    "1.2.840.10008.1.2.4.57": "python-gdcm",
    "1.2.840.10008.1.2.4.70": "python-gdcm",
    "1.2.840.10008.1.2.4.80": "pyjpegls or python-gdcm",
    "1.2.840.10008.1.2.4.81": "pyjpegls or python-gdcm",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg or python-gdcm",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg or python-gdcm",
}

GPL_ONLY_HINT = (
    "the only decoder for this syntax is GPL-3.0 licensed and not installed by default: "
    'pip install "medmoe[gpl-codecs]" (pylibjpeg + pylibjpeg-libjpeg)'
)


def undecodable_message(ds: Any, err: BaseException) -> str:
    """Why ``ds.pixel_array`` failed: the transfer syntax by UID and name, and the package that would decode it.

    Args:
        ds: the pydicom dataset whose pixel data could not be decoded.
        err: the decoder's exception.

    Returns:
        One sentence without the file name (the caller prefixes it).
    """
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None:
        return f"cannot decode the pixel data (no TransferSyntaxUID in the file meta): {type(err).__name__}: {err}"
    syntax = UID(str(syntax))
    name = f"{syntax} ({syntax.name})" if syntax.name != str(syntax) else f"{syntax} (unknown transfer syntax)"
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"cannot decode the pixel data: pydicom has no decoder for transfer syntax {name}"
    bits = int(ds.get("BitsStored", 0) or 0)
    if syntax == "1.2.840.10008.1.2.4.51" and bits > 8:
        hint = f"{bits}-bit JPEG Extended: {GPL_ONLY_HINT}"
    elif decoder.available_plugins:
        hint = f"installed decoder(s) {', '.join(decoder.available_plugins)} failed: the data may be corrupt"
    else:
        package = PERMISSIVE_DECODERS.get(str(syntax), "a pydicom pixel-data plugin for it")
        hint = f"no working decoder: pip install {package.split(' or ')[-1].split(' ')[0]} (decodes it: {package})"
    return f"cannot decode the pixel data of transfer syntax {name} ({hint}): {type(err).__name__}: {err}"
