"""Synthetic mammograms and their DICOM encoding, for the EMBED-style demo cohort.

The anatomy of one breast (:class:`BreastAnatomy`) is shared by its four views so that labels are consistent:
the dense-tissue fraction sets BI-RADS density, and a mass (none / small round / large spiculated) sets the
BI-RADS class, at the same distance from the chest wall in CC and MLO. :func:`render_view` draws one view as a
float image in [0, 1] (bright = dense), chest wall on the left; :func:`render_kind` turns it into an FFDM or a
synthesized 2D (C-View) image; :func:`mammo_dataset` encodes it as a real "Digital Mammography X-Ray Image
Storage - For Presentation" DICOM dataset with the view, laterality, photometric and VOI tags of real files,
compressed with lossless JPEG 2000 by default (the demo cohort is then a few MB).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid
from scipy import ndimage

__all__ = ["BreastAnatomy", "DicomTags", "mammo_dataset", "render_kind", "render_view", "sample_anatomy"]

MAMMO_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
"""SOP Class UID of Digital Mammography X-Ray Image Storage - For Presentation."""

STORED_SPAN = 0.94 * 4095
"""Stored values the [0, 1] image spans: 12 bits of dynamic range, whatever BitsStored is."""

TRANSFER_SYNTAXES = (JPEG2000Lossless, RLELossless, ExplicitVRLittleEndian)
"""Transfer syntaxes :func:`mammo_dataset` can write (all lossless; JPEG 2000 is the default)."""

DENSE_FRACTIONS = (0.08, 0.28, 0.50, 0.72)
"""Target fibroglandular fraction of BI-RADS density A..D (jittered per breast)."""

VIEW_CODES = {"CC": ("399162004", "cranio-caudal"), "MLO": ("399368009", "medio-lateral oblique")}
"""SNOMED CT view codes (DICOM CID 4014) for ViewCodeSequence."""

PATIENT_ORIENTATION = {
    ("L", "CC"): ["A", "R"],
    ("R", "CC"): ["P", "L"],
    ("L", "MLO"): ["A", "FR"],
    ("R", "MLO"): ["P", "FL"],
}
"""Row / column directions of displayed mammograms (chest wall left for L, right for R)."""


@dataclass(frozen=True)
class BreastAnatomy:
    """Parameters of one breast, shared by its CC/MLO and FFDM/synthesized views.

    Attributes:
        dense_fraction: fraction of the breast covered by fibroglandular (bright) tissue.
        size: breast size scale (1.0 = typical), varies the half-ellipse axes.
        shift: vertical shift of the breast centre as a fraction of the image height.
        pectoral: (height, width) of the MLO pectoral triangle as fractions of the image.
        lesion_class: 0 none, 1 small round well-circumscribed mass, 2 larger irregular spiculated mass.
        lesion_depth: distance of the mass from the chest wall as a fraction of the breast depth.
        lesion_offset: vertical offset of the mass in CC and in MLO, as a fraction of the local half-height.
        lesion_radius: mass radius in pixels for a 96-row image.
        lesion_shape: three harmonic phases then spicule angles (radians) of an irregular mass.
        texture_seed: seed of the per-view texture.
    """

    dense_fraction: float
    size: float
    shift: float
    pectoral: tuple[float, float]
    lesion_class: int
    lesion_depth: float
    lesion_offset: tuple[float, float]
    lesion_radius: float
    lesion_shape: tuple[float, ...]
    texture_seed: tuple[int, ...]


def sample_anatomy(rng: np.random.Generator, density_class: int, lesion_class: int) -> BreastAnatomy:
    """Draw one breast's anatomy for a density class (0..3 = A..D) and a BI-RADS lesion class (0..2).

    Args:
        rng: random generator (consumed in a fixed order, so a seeded generator gives the same anatomy).
        density_class: BI-RADS density 0..3.
        lesion_class: 0 none, 1 benign-looking mass, 2 suspicious mass.

    Returns:
        the anatomy.

    Raises:
        ValueError: if a class is out of range.

    Example:
        >>> anatomy = sample_anatomy(np.random.default_rng(0), density_class=2, lesion_class=1)
    """
    if density_class not in range(4) or lesion_class not in range(3):
        raise ValueError(f"density_class must be 0..3 and lesion_class 0..2, got {density_class}, {lesion_class}")
    radius = rng.uniform(4.2, 5.2) if lesion_class == 1 else rng.uniform(6.5, 8.5)
    return BreastAnatomy(
        dense_fraction=float(np.clip(DENSE_FRACTIONS[density_class] + rng.uniform(-0.06, 0.06), 0.03, 0.9)),
        size=float(rng.uniform(0.78, 1.05)),
        shift=float(rng.uniform(-0.05, 0.05)),
        pectoral=(float(rng.uniform(0.32, 0.5)), float(rng.uniform(0.22, 0.38))),
        lesion_class=int(lesion_class),
        lesion_depth=float(rng.uniform(0.2, 0.7)),
        lesion_offset=(float(rng.uniform(-0.6, 0.6)), float(rng.uniform(-0.6, 0.6))),
        lesion_radius=float(radius),
        lesion_shape=tuple(float(a) for a in rng.uniform(0, 2 * np.pi, size=3 + int(rng.integers(6, 10)))),
        texture_seed=tuple(int(s) for s in rng.integers(0, 2**31, size=2)),
    )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float | tuple[float, float]) -> np.ndarray:
    """Gaussian-smoothed white noise with unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="reflect")
    return field / (field.std() + 1e-8)


def _lesion(
    anatomy: BreastAnatomy, yy: np.ndarray, xx: np.ndarray, centre: tuple[float, float], scale: float, rotation: float
) -> np.ndarray:
    """Intensity of the mass (0 outside): a sharp dense disc, or an irregular dense core with spicules."""
    cy, cx = centre
    dy, dx = yy - cy, xx - cx
    rho = np.hypot(dy, dx)
    radius = anatomy.lesion_radius * scale
    if anatomy.lesion_class == 1:
        return 0.98 * (1 - 0.15 * (rho / radius) ** 2).clip(0) / (1 + np.exp((rho - radius) / 0.35))
    theta = np.arctan2(dy, dx) + rotation
    p1, p2, p3 = anatomy.lesion_shape[:3]
    wobble = 0.28 * np.sin(3 * theta + p1) + 0.16 * np.sin(5 * theta + p2) + 0.1 * np.sin(7 * theta + p3)
    boundary = radius * (1 + wobble)
    core = 0.98 / (1 + np.exp((rho - boundary) / 0.6))
    spicules = np.zeros_like(rho)
    for k, angle in enumerate(anatomy.lesion_shape[3:]):  # a handful of spicules, drawn once per image
        a = angle - rotation
        along = np.cos(a) * dx + np.sin(a) * dy
        across = -np.sin(a) * dx + np.cos(a) * dy
        length = radius * (1.9 + 0.15 * (k % 4))
        spicules = np.maximum(
            spicules,
            np.exp(-((across / (0.55 * scale)) ** 2)) * ((along > 0) & (along < length)) * (1 - along / length).clip(0),
        )
    return np.maximum(core, 0.78 * spicules)


def render_view(anatomy: BreastAnatomy, view: str, image_size: Sequence[int] = (64, 48)) -> np.ndarray:
    """Draw one view of a breast as a float image in [0, 1] (bright = dense), chest wall at column 0.

    The breast is a half-ellipse attached to the chest wall with a skin line and a thickness fall-off at the
    edge; fibroglandular tissue is smooth noise thresholded to ``dense_fraction`` (more central than
    peripheral); MLO views add a pectoral-muscle triangle at the top chest-wall corner. Flip the columns for a
    right breast.

    Args:
        anatomy: the breast, from :func:`sample_anatomy`.
        view: "CC" or "MLO".
        image_size: (rows, cols).

    Returns:
        float32 array of shape ``image_size``.

    Raises:
        ValueError: for an unknown view.

    Example:
        >>> image = render_view(sample_anatomy(np.random.default_rng(0), 1, 2), "MLO", (64, 48))
    """
    if view not in VIEW_CODES:
        raise ValueError(f"view must be 'CC' or 'MLO', got {view!r}")
    rows, cols = int(image_size[0]), int(image_size[1])
    scale = rows / 96.0
    rng = np.random.default_rng([*anatomy.texture_seed, 0 if view == "CC" else 1])
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    if view == "CC":
        cy, ry, rx = rows * (0.5 + anatomy.shift), rows * 0.40 * anatomy.size, cols * 0.84 * anatomy.size
    else:
        cy, ry, rx = rows * (0.57 + anatomy.shift), rows * 0.42 * anatomy.size, cols * 0.78 * anatomy.size
    rx = min(rx, cols - 2.0)
    r = np.sqrt(((yy - cy) / ry) ** 2 + (xx / rx) ** 2)
    inside = ((1 - r) * min(rx, ry) + 0.5).clip(0, 1)  # ~1 pixel anti-aliased edge

    central = np.exp(-(((xx - 0.3 * rx) / (0.55 * rx)) ** 2 + ((yy - cy) / (0.65 * ry)) ** 2))
    field = _smooth_noise(rng, (rows, cols), (1.6 * scale, 3.6 * scale)) + 1.6 * central  # streaks to the nipple
    threshold = np.quantile(field[r < 1], 1 - anatomy.dense_fraction)
    dense = 1 / (1 + np.exp(-(field - threshold) / 0.18))
    tissue = 0.26 + 0.44 * dense + 0.035 * _smooth_noise(rng, (rows, cols), 0.8 * scale)
    thickness = 0.62 + 0.38 * np.sqrt((1 - r**2).clip(0, 1))
    skin = 0.1 * np.exp(-((((1 - r) * min(rx, ry)) / (1.1 * scale)) ** 2))
    breast = tissue * thickness + skin

    if view == "MLO":
        ph, pw = anatomy.pectoral[0] * rows, anatomy.pectoral[1] * cols
        pect = (1 - (xx / pw + yy / ph)) * min(ph, pw)
        pect = (pect + 0.5).clip(0, 1)
        muscle = 0.6 + 0.04 * _smooth_noise(rng, (rows, cols), 3 * scale) - 0.08 * yy / rows
        breast = breast * (1 - pect) + muscle * pect
        inside = np.maximum(inside, pect)

    if anatomy.lesion_class > 0:
        offset = anatomy.lesion_offset[0 if view == "CC" else 1]
        lx = anatomy.lesion_depth * rx
        half_height = ry * np.sqrt(1 - anatomy.lesion_depth**2)
        ly = cy + 0.75 * offset * half_height
        mass = _lesion(anatomy, yy, xx, (ly, lx), scale, 0.0 if view == "CC" else 0.6) * (r < 1)
        breast = np.maximum(breast, mass * thickness)  # masses are denser than fibroglandular tissue

    background = 0.03 + 0.008 * _smooth_noise(rng, (rows, cols), 6 * scale)
    return (background * (1 - inside) + breast * inside).clip(0, 1).astype(np.float32)


def render_kind(view_image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Turn a rendered view into an FFDM ("ffdm") or a synthesized 2D / C-View ("s2d") image in [0, 1].

    FFDM adds soft quantum noise; synthesized 2D is sharper (unsharp mask), has a different gamma and less noise.

    Args:
        view_image: output of :func:`render_view`.
        kind: "ffdm" or "s2d".
        rng: random generator for the noise.

    Returns:
        float32 array, same shape.

    Raises:
        ValueError: for an unknown kind.

    Example:
        >>> s2d = render_kind(np.full((8, 8), 0.5, np.float32), "s2d", np.random.default_rng(0))
    """
    if kind == "ffdm":
        image = view_image + 0.022 * ndimage.gaussian_filter(rng.standard_normal(view_image.shape), 0.6)
    elif kind == "s2d":
        sharp = view_image + 0.9 * (view_image - ndimage.gaussian_filter(view_image, 1.2))
        image = 0.04 + 0.96 * sharp.clip(0, 1) ** 0.8 + 0.012 * rng.standard_normal(view_image.shape)
    else:
        raise ValueError(f"kind must be 'ffdm' or 's2d', got {kind!r}")
    return image.clip(0, 1).astype(np.float32)


@dataclass(frozen=True)
class DicomTags:
    """Header values of one synthetic mammogram (all fake; ``patient_index`` gives DEMO^0001-style names).

    Attributes:
        patient_index: index of the fake patient (PatientID "DEMO-0001", PatientName "DEMO^0001").
        laterality: "L" or "R".
        view: "CC" or "MLO".
        kind: "ffdm" or "s2d".
        bits_stored: 12, 14 or 16.
        photometric: "MONOCHROME1" (stored inverted) or "MONOCHROME2".
        rescale: (RescaleSlope, RescaleIntercept).
        study_date: StudyDate "YYYYMMDD".
        patient_age: PatientAge in years.
        uid_entropy: strings that make the Study/Series/SOP Instance UIDs deterministic.
    """

    patient_index: int
    laterality: str
    view: str
    kind: str
    bits_stored: int
    photometric: str
    rescale: tuple[float, float]
    study_date: str
    patient_age: int
    uid_entropy: tuple[str, ...]


def _view_code(view: str) -> DicomSequence:
    item = Dataset()
    item.CodeValue, item.CodeMeaning = VIEW_CODES[view]
    item.CodingSchemeDesignator = "SCT"
    return DicomSequence([item])


def mammo_dataset(image: np.ndarray, tags: DicomTags, transfer_syntax: str = JPEG2000Lossless) -> Dataset:
    """Encode a [0, 1] image as a For-Presentation digital mammogram (uint16, lossless).

    The image spans :data:`STORED_SPAN` stored values (12 bits of dynamic range) ending at ~95% of
    ``2**bits_stored``: a 16-bit file holds values above 2**15, so a reader that assumes 12 bits or a signed
    type fails on it. MONOCHROME1 images are stored inverted (after inversion dense tissue is bright again).
    WindowCenter/Width cover the 1st..99.5th percentile in rescaled units.

    Args:
        image: float array in [0, 1], shape (rows, cols), bright = dense, already in display orientation.
        tags: header values.
        transfer_syntax: one of :data:`TRANSFER_SYNTAXES`: lossless JPEG 2000 (default; about a third of the
            uncompressed size), RLE lossless or explicit VR little endian (uncompressed).

    Returns:
        a pydicom Dataset with file meta, ready for ``save_as(path, enforce_file_format=True)``.

    Raises:
        ValueError: for bits_stored outside 12..16, an unknown photometric interpretation or transfer syntax, or
            an image smaller than 32 x 32 for JPEG 2000.

    Example:
        >>> tags = DicomTags(1, "L", "CC", "ffdm", 12, "MONOCHROME2", (1.0, 0.0), "20200101", 55, ("x",))
        >>> ds = mammo_dataset(np.zeros((8, 6), np.float32), tags)
    """
    if not 12 <= tags.bits_stored <= 16 or tags.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"bad bits_stored {tags.bits_stored} or photometric {tags.photometric!r}")
    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise ValueError(f"transfer_syntax must be one of {[str(t) for t in TRANSFER_SYNTAXES]}, got {transfer_syntax}")
    if transfer_syntax == JPEG2000Lossless and min(image.shape) < 32:
        raise ValueError(f"JPEG 2000 needs images of at least 32 x 32 (6 wavelet resolutions), got {image.shape}")
    top = 2**tags.bits_stored - 1
    stored = np.rint(np.clip(image, 0, 1) * STORED_SPAN + (0.95 * top - STORED_SPAN)).astype(np.uint16)
    if tags.photometric == "MONOCHROME1":
        stored = (top - stored).astype(np.uint16)
    slope, intercept = tags.rescale
    lo, hi = np.percentile(stored.astype(np.float64) * slope + intercept, [1.0, 99.5])
    uid = [*tags.uid_entropy]
    sop_uid = generate_uid(entropy_srcs=[*uid, tags.kind, tags.laterality, tags.view, "sop"])
    name = f"{tags.patient_index:04d}"
    desc = f"{tags.laterality} {tags.view}"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MAMMO_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["medmoe-demo-implementation"])
    ds = Dataset()
    ds.file_meta = meta
    ds.ImageType = (
        ["ORIGINAL", "PRIMARY"] if tags.kind == "ffdm" else ["DERIVED", "PRIMARY", "TOMOSYNTHESIS", "GENERATED_2D"]
    )
    ds.SOPClassUID = MAMMO_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = tags.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "090000"
    ds.AccessionNumber = f"DEMOACC{name}"
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "medmoe synthetic"
    ds.ManufacturerModelName = "demo"
    ds.SeriesDescription = desc if tags.kind == "ffdm" else f"C-View {desc}"
    ds.PatientName = f"DEMO^{name}"
    ds.PatientID = f"DEMO-{name}"
    ds.PatientSex = "F"
    ds.PatientAge = f"{tags.patient_age:03d}Y"
    ds.BodyPartExamined = "BREAST"
    ds.ViewPosition = tags.view
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[*uid, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[*uid, tags.kind, tags.laterality, tags.view, "series"])
    ds.StudyID = "1"
    ds.SeriesNumber = 1 + ("CC", "MLO").index(tags.view) + 2 * ("L", "R").index(tags.laterality)
    ds.SeriesNumber += 0 if tags.kind == "ffdm" else 10
    ds.InstanceNumber = 1
    ds.PatientOrientation = PATIENT_ORIENTATION[(tags.laterality, tags.view)]
    ds.ImageLaterality = tags.laterality
    ds.ViewCodeSequence = _view_code(tags.view)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = tags.photometric
    ds.Rows, ds.Columns = int(image.shape[0]), int(image.shape[1])
    ds.PixelSpacing = ds.ImagerPixelSpacing = ["2.5", "2.5"]
    ds.BitsAllocated = 16
    ds.BitsStored = tags.bits_stored
    ds.HighBit = tags.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    ds.WindowCenter = f"{(lo + hi) / 2:.1f}"
    ds.WindowWidth = f"{max(hi - lo, 1.0) * 1.05:.1f}"
    ds.VOILUTFunction = "LINEAR"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleType = "US"
    ds.LossyImageCompression = "00"
    ds.PixelData = stored.tobytes()
    if transfer_syntax != ExplicitVRLittleEndian:
        plugin = "pylibjpeg" if transfer_syntax == JPEG2000Lossless else ""  # pylibjpeg-openjpeg encodes JPEG 2000
        ds.compress(transfer_syntax, stored, encoding_plugin=plugin, generate_instance_uid=False)
    return ds


def write_mammo(path: str, image: np.ndarray, tags: DicomTags, transfer_syntax: str = JPEG2000Lossless) -> None:
    """Write :func:`mammo_dataset` output as a DICOM Part 10 file (with preamble and file meta)."""
    pydicom.dcmwrite(path, mammo_dataset(image, tags, transfer_syntax), enforce_file_format=True)
