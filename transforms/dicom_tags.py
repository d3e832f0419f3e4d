"""Mammography DICOM header parsing: view, laterality, FFDM vs synthesized 2D, orientation, PHI-free metadata.

Used by :func:`medmoe.transforms.io.read_mammogram`. Only the whitelisted tags named here are read, so patient
identifiers never reach the metadata. View comes from ViewPosition, then the View Code Sequence, then a
view written into PatientOrientation (CBIS-DDSM), then SeriesDescription; laterality from ImageLaterality /
Laterality, then SeriesDescription tokens such as "RMLO".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["IMAGE_TYPES", "MAMMOGRAPHY_SOP_CLASSES", "MAMMOGRAPHY_VIEWS", "dicom_meta", "normalize_laterality"]

#: Mammography view codes (DICOM CID 4014 abbreviations, as used in ViewPosition).
MAMMOGRAPHY_VIEWS: frozenset[str] = frozenset(
    {"CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "FB", "SIO", "ISO", "AT", "CV", "TAN", "RL", "RM"}
)

#: Values of the ``image_type`` meta key: full-field digital mammogram, synthesized 2D (from tomosynthesis).
IMAGE_TYPES: tuple[str, ...] = ("ffdm", "s2d")

# View Code Sequence: (coding scheme independent) code value -> view.
_VIEW_CODES: dict[str, str] = {
    "R-10242": "CC",
    "R-10226": "MLO",
    "R-10224": "ML",
    "R-10228": "LM",
    "R-10230": "LMO",
    "399162004": "CC",
    "399368009": "MLO",
}
# Code meanings with spaces/hyphens removed, most specific first.
_VIEW_MEANINGS: tuple[tuple[str, str], ...] = (
    ("craniocaudalexaggeratedlaterally", "XCCL"),
    ("craniocaudalexaggeratedmedially", "XCCM"),
    ("superolateraltoinferomedialoblique", "SIO"),
    ("inferomedialtosuperolateraloblique", "ISO"),
    ("mediolateraloblique", "MLO"),
    ("lateromedialoblique", "LMO"),
    ("mediolateral", "ML"),
    ("lateromedial", "LM"),
    ("caudocranial", "FB"),
    ("craniocaudal", "CC"),
    ("axillarytail", "AT"),
    ("cleavage", "CV"),
    ("tangential", "TAN"),
)
_S2D_PHRASES = ("cview", "synthesized", "synthesised", "synthetic2d", "intelligent2d", "generated2d")
_S2D_TOKENS = frozenset({"s2d", "2ds", "syn2d", "synth2d"})
# SOP classes of 2D projection images acquired digitally (DX and MG, for presentation / for processing).
_DIGITAL_2D_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.1.1",
        "1.2.840.10008.5.1.4.1.1.1.2",
        "1.2.840.10008.5.1.4.1.1.1.2.1",
    }
)


#: SOP classes a 2D mammogram is stored in: Digital Mammography and Digital X-Ray (For Presentation / For
#: Processing) and Secondary Capture (digitised film such as CBIS-DDSM). With Modality MG these make a mammogram;
#: a CT / CR / MR SOP class never does, whatever its Modality tag says.
MAMMOGRAPHY_SOP_CLASSES: frozenset[str] = _DIGITAL_2D_SOP_CLASSES | {"1.2.840.10008.5.1.4.1.1.7"}


def normalize_laterality(value: Any) -> str | None:
    """Map "L"/"LEFT"/"l" to "L" and "R"/"RIGHT" to "R"; anything else (also None, "", "B") to None."""
    if value is None:
        return None
    text = str(value).strip().upper()
    if text in ("L", "LEFT"):
        return "L"
    if text in ("R", "RIGHT"):
        return "R"
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return " ".join(str(v) for v in value)
    return str(value)


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^A-Za-z0-9]+", text.upper()) if t]


def _view_from_token(token: str) -> tuple[str | None, str | None]:
    """'RMLO' -> ('MLO', 'R'); 'CC' -> ('CC', None); 'FOO' -> (None, None)."""
    token = token.upper()
    if token in MAMMOGRAPHY_VIEWS:
        return token, None
    if len(token) > 1 and token[0] in "LR" and token[1:] in MAMMOGRAPHY_VIEWS:
        return token[1:], token[0]
    return None, None


def _view_from_code_sequence(sequence: Sequence[Any] | None) -> str | None:
    for item in sequence or ():
        code = str(item.get("CodeValue", "") or "").strip().upper()
        if code in _VIEW_CODES:
            return _VIEW_CODES[code]
        meaning = re.sub(r"[^a-z]", "", str(item.get("CodeMeaning", "") or "").lower())
        for phrase, view in _VIEW_MEANINGS:
            if meaning.startswith(phrase):
                return view
    return None


def _view_from_tags(ds: Any) -> str | None:
    position = str(ds.get("ViewPosition", "") or "").strip().upper()
    if position:
        view, _ = _view_from_token(position)
        return view or position  # a non-mammography code such as PA / AP / LATERAL stays as written
    view = _view_from_code_sequence(ds.get("ViewCodeSequence"))
    if view:
        return view
    orientation = ds.get("PatientOrientation")
    if orientation is not None:  # CBIS-DDSM writes the view ('CC', 'MLO') where direction codes belong
        values = [str(v) for v in orientation] if not isinstance(orientation, str) else [orientation]
        if len(values) == 1:
            view, _ = _view_from_token(values[0].strip())
            if view:
                return view
    for token in _tokens(_text(ds.get("SeriesDescription"))):
        view, _ = _view_from_token(token)
        if view:
            return view
    return None


def _laterality_from_tags(ds: Any) -> str | None:
    for keyword in ("ImageLaterality", "Laterality"):
        side = normalize_laterality(ds.get(keyword))
        if side:
            return side
    for token in _tokens(_text(ds.get("SeriesDescription"))):
        side = normalize_laterality(token)
        if side:
            return side
        _, side = _view_from_token(token)
        if side:
            return side
    return None


def _image_type_from_tags(ds: Any, modality: str | None) -> str | None:
    texts = [_text(ds.get(keyword)) for keyword in ("SeriesDescription", "ImageType", "ProtocolName")]
    joined = re.sub(r"[^a-z0-9]", "", " ".join(texts).lower())
    tokens = {t.lower() for text in texts for t in _tokens(text)}
    if any(phrase in joined for phrase in _S2D_PHRASES) or tokens & _S2D_TOKENS:
        return "s2d"
    sop_class = str(ds.get("SOPClassUID", "") or "")
    digital = sop_class in _DIGITAL_2D_SOP_CLASSES or (not sop_class and "ConversionType" not in ds)
    is_breast = modality == "MG" or "BREAST" in _text(ds.get("BodyPartExamined")).upper()
    if digital and is_breast and modality in ("MG", "DX"):
        return "ffdm"
    return None  # digitised film (secondary capture), CR, unknown


def _patient_orientation(ds: Any) -> list[str] | None:
    value = ds.get("PatientOrientation")
    if value is None or isinstance(value, str):
        return None
    values = [str(v).strip().upper() for v in value]
    return values if len(values) == 2 and all(values) else None


def dicom_meta(ds: Any) -> dict[str, Any]:
    """Whitelisted, PHI-free metadata of a pydicom dataset (modality, view, laterality, image type, photometric
    interpretation, bit depth, ...). Only the tags named here are read; patient tags never are."""
    modality = str(ds.get("Modality", "") or "").strip().upper() or None
    bits = ds.get("BitsStored")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper() or None
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    return {
        "modality": modality,
        "is_mammogram": modality == "MG" and (not sop_class or sop_class in MAMMOGRAPHY_SOP_CLASSES),
        "sop_class": sop_class or None,
        "view": _view_from_tags(ds),
        "laterality": _laterality_from_tags(ds),
        "image_type": _image_type_from_tags(ds, modality),
        "photometric": photometric,
        "bits_stored": int(bits) if bits is not None else None,
        "patient_orientation": _patient_orientation(ds),
    }
