"""MONAI-style mammography transforms: put the chest wall on the left, crop the breast, resize; the whole chain.

Loading (:class:`~medmoe.transforms.mammography_load.LoadMammogramd`) lives in ``mammography_load.py``;
:func:`mammogram_preprocessing` chains it with the transforms here.

Each array transform has a dictionary twin that holds an instance of it. The spatial ones
(:class:`CanonicalSide`, :class:`CropBreast`, :class:`ResizeKeepAspect`) record themselves in the
``applied_operations`` of the :class:`~monai.data.MetaTensor` and are inverted by MONAI's machinery
(``Compose.inverse``, ``Invertd``). All transforms work on one 2D image of shape ``(C, H, W)``.

See ``docs/transforms.md`` (Mammography) for the chain on a real sample.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import Crop, InvertibleTransform, MapTransform, Resize, SpatialCrop
from monai.transforms.croppad.functional import pad_func
from monai.transforms.spatial.functional import flip, resize
from monai.utils import ImageMetaKey, TraceKeys, TransformBackends, convert_to_tensor
from scipy import ndimage
from skimage.filters import threshold_otsu, threshold_triangle
from skimage.measure import regionprops

from .io import normalize_laterality
from .mammography_load import LoadMammogramd

__all__ = [
    "CanonicalSide",
    "CanonicalSided",
    "CropBreast",
    "CropBreastd",
    "EmptyMammogramError",
    "ResizeKeepAspect",
    "ResizeKeepAspectd",
    "mammogram_preprocessing",
]


class EmptyMammogramError(ValueError):
    """The image has no foreground to crop to (blank or constant image)."""


def _file_of(img: Any) -> str:
    meta = getattr(img, "meta", None)
    if not isinstance(meta, Mapping):
        return "<image without file name>"
    name = meta.get("filename") or meta.get(ImageMetaKey.FILENAME_OR_OBJ)
    return str(name) if name else "<image without file name>"


def _check_2d(img: Any, transform: str) -> None:
    if img.ndim != 3:
        raise ValueError(
            f"{_file_of(img)}: {transform} expects one channel-first 2D image (C, H, W), got shape {tuple(img.shape)}."
        )


class _SpatialTwin(MapTransform, InvertibleTransform):
    """Applies the held array transform ``self.transform`` to each key; ``inverse`` undoes it per key."""

    transform: Any

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform.inverse(d[key])
        return d


# ---------------------------------------------------------------------------------------------------- orientation


def _chest_wall_from_orientation(value: Any) -> str | None:
    """PatientOrientation row direction: 'A' (towards the nipple) -> chest wall on the left, 'P' -> right."""
    if isinstance(value, str):
        value = value.split("\\")
    if not isinstance(value, Sequence) or len(value) != 2 or not str(value[0]):
        return None
    return {"A": "left", "P": "right"}.get(str(value[0]).strip().upper()[:1])


class CanonicalSide(InvertibleTransform):
    """Flip horizontally so that the chest wall is on the LEFT of the image (the nipple points right).

    The chest-wall side is taken, in order, from ``meta["patient_orientation"]`` (row direction 'A' ->
    left, 'P' -> right: it describes the stored pixels), from ``meta["laterality"]`` (images in the
    standard display orientation have a left breast's chest wall on the left and a right breast's on the
    right), and otherwise from the pixels: the half of the image holding more intensity (the breast is
    thickest at the chest wall). Adds ``meta["flipped"]`` (bool) and ``meta["chest_wall_source"]``
    ("orientation" | "laterality" | "intensity").

    Args (call):
        img: ``(C, H, W)`` image; a MetaTensor carries the tags, a plain tensor / array uses intensity.

    Returns:
        MetaTensor ``(C, H, W)``, flipped along W when needed. ``inverse`` undoes the flip.

    Example:
        >>> image = LoadMammogram(laterality="R")("sample_A1.jpg")  # doctest: +SKIP
        >>> CanonicalSide()(image).meta["flipped"]  # doctest: +SKIP
        True
    """

    backend = [TransformBackends.TORCH]

    def chest_wall_side(self, img: torch.Tensor) -> tuple[str, str]:
        """Return (``"left"`` | ``"right"``, source) for a ``(C, H, W)`` image."""
        meta = img.meta if isinstance(img, MetaTensor) else {}
        side = _chest_wall_from_orientation(meta.get("patient_orientation"))
        if side:
            return side, "orientation"
        laterality = normalize_laterality(meta.get("laterality"))
        if laterality:
            return ("left" if laterality == "L" else "right"), "laterality"
        width = img.shape[-1]
        profile = torch.as_tensor(img).detach().float().sum(dim=(0, 1))
        left, right = profile[: width // 2].sum(), profile[width - width // 2 :].sum()
        return ("right" if right > left else "left"), "intensity"

    def __call__(self, img: Any) -> torch.Tensor:
        img = convert_to_tensor(img, track_meta=get_track_meta())
        _check_2d(img, "CanonicalSide")
        side, source = self.chest_wall_side(img)
        if side == "right":
            out = flip(img, [1], lazy=False, transform_info=self.get_transform_info())
        else:
            # a view: no copy of the pixels; the view has its own meta dict and applied_operations list
            out = img.view(img.shape) if isinstance(img, MetaTensor) else img
            out = self.push_transform(out, extra_info={"axes": TraceKeys.NONE})
        if isinstance(out, MetaTensor):
            out.meta["flipped"] = side == "right"
            out.meta["chest_wall_source"] = source
        return out

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        transform = self.pop_transform(data)
        axes = transform[TraceKeys.EXTRA_INFO].get("axes", TraceKeys.NONE)
        if axes == TraceKeys.NONE:
            return data
        out = flip(data, axes, lazy=False, transform_info=self.get_transform_info() | {TraceKeys.TRACING: False})
        if isinstance(out, MetaTensor):
            out.meta["flipped"] = False
        return out


class CanonicalSided(_SpatialTwin):
    """Dictionary twin of :class:`CanonicalSide` (each key decides from its own tags / pixels).

    Example:
        >>> sample = CanonicalSided(["ffdm_cc"])(LoadMammogramd(["ffdm_cc"])({"ffdm_cc": "a.dcm"}))  # doctest: +SKIP
    """

    backend = CanonicalSide.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = CanonicalSide()


# ---------------------------------------------------------------------------------------------------- cropping


def _box(mask: np.ndarray, grow: int) -> tuple[slice, slice]:
    """The bounding box of a non-empty 2D ``mask``, grown by ``grow`` pixels and clipped to the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (
        slice(max(rows[0] - grow, 0), min(rows[-1] + 1 + grow, mask.shape[0])),
        slice(max(cols[0] - grow, 0), min(cols[-1] + 1 + grow, mask.shape[1])),
    )


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation by a disk of ``radius`` pixels (Euclidean distance transform of the complement).

    The transform runs on the mask's bounding box grown by more than ``radius``: every foreground pixel is inside,
    so distances there are exact, and pixels farther out are beyond reach (the same result at a fraction of the
    cost on a breast that fills half the image).
    """
    if not mask.any():  # the transform of an all-foreground complement is undefined
        return mask.copy()
    box = _box(mask, math.floor(radius) + 1)
    out = np.zeros_like(mask)
    out[box] = ndimage.distance_transform_edt(~mask[box]) <= radius
    return out


def _erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary erosion by a disk of ``radius`` pixels; outside the image counts as background.

    The distance transform runs on the mask's bounding box with a one-pixel background ring: the nearest background
    pixel outside the box is never closer than the ring, so distances inside are exact.
    """
    if not mask.any():
        return mask.copy()
    box = _box(mask, 0)
    out = np.zeros_like(mask)
    out[box] = ndimage.distance_transform_edt(np.pad(mask[box], 1))[1:-1, 1:-1] > radius
    return out


class CropBreast(Crop):
    """Crop to the breast: the largest foreground component touching the chest wall, plus a margin.

    Foreground is ``image > level`` on the channel maximum, on a copy subsampled so its longer side is at most
    ``working_size``. The level separates the breast from the background (near 0 after the loader's
    normalisation), not fatty from dense tissue:

    - ``"log_otsu"`` (default): Otsu's threshold (scikit-image's ``threshold_otsu``) on
      ``log(image - min + (max - min) / 1000)``, mapped back. The log spreads the dark end of the histogram, so
      the split falls between background and breast skin; plain Otsu falls between fatty and dense tissue.
    - ``"triangle"``: scikit-image's ``threshold_triangle`` (the background peak to the far end of the histogram).
    - ``"otsu"``: Otsu on the intensities (the old default; splits dense from fatty tissue on many images).
    - a float in (0, 1): ``min + threshold * (max - min)``, a fraction of the min-max range (``threshold=0.5``
      on values in ``[10, 11]`` gives ``level = 10.5``).

    The mask is opened with a disk (radius ``opening`` times the working image's longer side; outside the image
    counts as background) to cut film borders, rulers and bridges narrower than its diameter, and labelled
    (``scipy.ndimage.label``, ``skimage.measure.regionprops``); of the components that reach the chest-wall edge
    (their bounding box starts within ``chest_wall_band`` of the image width from it), the largest is the breast,
    and the mask pixels connected to it within two radii (the rim the opening ate) are given back.
    Burned-in labels, view markers and rulers are separate components, small or away from the chest wall, and
    fall outside the box unless they lie inside the breast's bounding box. ``inverse`` pads back with zeros.

    Args:
        threshold: "log_otsu", "triangle", "otsu" or a fraction in (0, 1) of the min-max range (see above).
        margin: pixels kept around the bounding box (full resolution), clipped to the image.
        working_size: longer side of the subsampled mask used to find the component. 512 (default) finds the box
            of a 3000 x 2500 mammogram to within a few pixels of 1024's at a quarter of the cost (the distance
            transforms of the opening dominate; benchmarks/scale_data.py).
        opening: radius of the binary opening as a fraction of the working image's longer side (at least one
            pixel); 0 disables it. When the opening removes everything (tiny images), the unopened mask is used.
        chest_wall: "left" (the canonical side after :class:`CanonicalSide`), "right", or None to take the largest
            component anywhere.
        chest_wall_band: fraction of the width next to the chest-wall edge that the breast must reach.

    Returns:
        MetaTensor ``(C, h, w)``.

    Raises:
        EmptyMammogramError: the image is constant, has no foreground, or no foreground component reaches the
            chest wall (the message names the file and the fix).

    Example:
        >>> image = torch.zeros(1, 64, 64); image[:, 10:50, :30] = 1.0
        >>> CropBreast(margin=2)(image).shape
        torch.Size([1, 44, 32])
    """

    thresholds = ("log_otsu", "triangle", "otsu")

    def __init__(
        self,
        threshold: str | float = "log_otsu",
        margin: int = 16,
        working_size: int = 512,
        opening: float = 0.015,
        chest_wall: str | None = "left",
        chest_wall_band: float = 0.05,
    ) -> None:
        super().__init__()
        if threshold not in self.thresholds and not (
            isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0 < threshold < 1
        ):
            raise ValueError(f"threshold must be one of {self.thresholds} or a fraction in (0, 1), got {threshold!r}.")
        if margin < 0 or working_size < 8 or not 0 <= opening < 0.25:
            raise ValueError(
                f"need margin >= 0, working_size >= 8, 0 <= opening < 0.25 (a fraction of the working image's "
                f"longer side); got {margin}, {working_size}, {opening}."
            )
        if chest_wall not in ("left", "right", None) or not 0 < chest_wall_band <= 1:
            raise ValueError(
                f"chest_wall must be 'left', 'right' or None and chest_wall_band in (0, 1]; got {chest_wall!r}, "
                f"{chest_wall_band!r}."
            )
        self.threshold, self.margin, self.working_size, self.opening = threshold, margin, working_size, opening
        self.chest_wall, self.chest_wall_band = chest_wall, chest_wall_band

    def level(self, small: np.ndarray) -> float:
        """The foreground level of a 2D working image (see the class docstring)."""
        low, high = float(small.min()), float(small.max())
        if self.threshold == "otsu":
            return float(threshold_otsu(small))
        if self.threshold == "triangle":
            return float(threshold_triangle(small, nbins=256))
        if self.threshold == "log_otsu":
            offset = (high - low) / 1000
            return float(np.exp(threshold_otsu(np.log(small - low + offset)))) + low - offset
        return low + float(self.threshold) * (high - low)

    def breast_region(self, small: np.ndarray, name: str = "<image>") -> np.ndarray:
        """Boolean mask of the breast component in a 2D working image (see the class docstring)."""
        low, high = float(small.min()), float(small.max())
        if not high > low:
            raise EmptyMammogramError(f"{name}: the image is constant ({low:.3g}); nothing to crop to.")
        level = self.level(small)
        mask = small > level
        radius = max(1.0, self.opening * max(small.shape)) if self.opening else 0.0
        # opening by a disk through distance transforms; outside the image is background, so that strips along the
        # image edges (film borders, rulers) narrower than the disk go too
        eroded = _erode(mask, radius)
        opened = _dilate(eroded, radius) if radius else mask
        labels, count = ndimage.label(opened if opened.any() else mask)
        if count == 0:
            raise EmptyMammogramError(f"{name}: no foreground above the threshold {level:.3g}.")
        props = regionprops(labels)
        if self.chest_wall is not None:
            width = small.shape[1]
            band = max(1.0, self.chest_wall_band * width)
            props = [p for p in props if (p.bbox[1] if self.chest_wall == "left" else width - p.bbox[3]) < band]
            if not props:
                raise EmptyMammogramError(
                    f"{name}: no foreground component reaches the chest wall ({self.chest_wall} edge) at the "
                    f"threshold {level:.3g}. Put the chest wall on the left first (CanonicalSide) or pass "
                    "chest_wall=None to crop to the largest component anywhere."
                )
        region = labels == max(props, key=lambda p: p.area).label
        if radius:  # give back the rim the opening ate (connected, within 2 radii), not the bridges it cut
            rim, _ = ndimage.label(_dilate(region, 2 * radius) & mask)
            region = np.isin(rim, np.unique(rim[region]))
        return region

    def compute_box(self, img: torch.Tensor) -> tuple[int, int, int, int]:
        """Return ``(y0, y1, x0, x1)`` (end exclusive) of the breast in a ``(C, H, W)`` image."""
        _check_2d(img, "CropBreast")
        height, width = img.shape[-2:]
        step = max(1, math.ceil(max(height, width) / self.working_size))
        small = torch.as_tensor(img).detach()[:, ::step, ::step].amax(dim=0).float().cpu().numpy()
        region = self.breast_region(small, _file_of(img))
        rows, cols = ndimage.find_objects(region.astype(np.int32))[0]
        # small[i] is full[i * step]: widen to the full-resolution pixels between the samples
        m = self.margin
        return (
            max((rows.start - 1) * step + 1 - m, 0),
            min(rows.stop * step + m, height),
            max((cols.start - 1) * step + 1 - m, 0),
            min(cols.stop * step + m, width),
        )

    def __call__(self, img: Any, lazy: bool | None = None) -> torch.Tensor:  # type: ignore[override]
        img = convert_to_tensor(img, track_meta=get_track_meta())
        y0, y1, x0, x1 = self.compute_box(img)
        return super().__call__(img=img, slices=(slice(y0, y1), slice(x0, x1)), lazy=False)


class CropBreastd(_SpatialTwin):
    """Dictionary twin of :class:`CropBreast` (each key gets its own box); keyword arguments as :class:`CropBreast`.

    Example:
        >>> d = {"img": torch.zeros(1, 64, 64)}; d["img"][:, 10:50, :30] = 1.0
        >>> CropBreastd(["img"], margin=0)(d)["img"].shape
        torch.Size([1, 40, 30])
    """

    backend = CropBreast.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **kwargs: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = CropBreast(**kwargs)


# ---------------------------------------------------------------------------------------------------- resizing


class ResizeKeepAspect(InvertibleTransform):
    """Scale to fit inside ``spatial_size`` keeping the aspect ratio, then zero-pad at the bottom / right.

    With the chest wall on the left (:class:`CanonicalSide`) the padding goes away from the chest wall.

    Args:
        spatial_size: ``(H, W)`` of the output.
        mode: "auto" ("area" when shrinking, "bilinear" when enlarging) or a ``torch.nn.functional.interpolate``
            mode.
        anti_aliasing: Gaussian smoothing before shrinking (useful with "bilinear").

    Returns:
        MetaTensor ``(C, *spatial_size)``. ``inverse`` crops the padding and resizes back to the input size.

    Example:
        >>> ResizeKeepAspect((64, 48))(torch.rand(1, 200, 100)).shape
        torch.Size([1, 64, 48])
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, spatial_size: Sequence[int], mode: str = "auto", anti_aliasing: bool = False) -> None:
        size = tuple(int(s) for s in spatial_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"spatial_size must be two positive ints (H, W), got {spatial_size!r}.")
        self.spatial_size, self.mode, self.anti_aliasing = size, mode, anti_aliasing

    def fitted_size(self, height: int, width: int) -> tuple[int, int]:
        """Largest ``(h, w)`` with the aspect ratio of ``(height, width)`` that fits in ``spatial_size``."""
        scale = min(self.spatial_size[0] / height, self.spatial_size[1] / width)
        return (
            min(max(1, round(height * scale)), self.spatial_size[0]),
            min(max(1, round(width * scale)), self.spatial_size[1]),
        )

    def _mode(self, shrinking: bool) -> str:
        if self.mode != "auto":
            return self.mode
        return "area" if shrinking else "bilinear"

    def __call__(self, img: Any) -> torch.Tensor:
        img = convert_to_tensor(img, track_meta=get_track_meta())
        _check_2d(img, "ResizeKeepAspect")
        height, width = (int(s) for s in img.shape[-2:])
        fitted = self.fitted_size(height, width)
        mode = self._mode(fitted[0] * fitted[1] < height * width)
        align = False if mode in ("linear", "bilinear", "bicubic") else None
        out = resize(
            img, fitted, mode, align, torch.float32, 2, self.anti_aliasing, None, False, self.get_transform_info()
        )
        to_pad = [(0, 0), (0, self.spatial_size[0] - fitted[0]), (0, self.spatial_size[1] - fitted[1])]
        return pad_func(out, to_pad, self.get_transform_info(), mode="constant", lazy=False)

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        padding = self.pop_transform(data)[TraceKeys.EXTRA_INFO]["padded"]
        roi_end = [size - after for size, (_, after) in zip(data.shape[1:], padding[1:], strict=True)]
        cropper = SpatialCrop(roi_start=[before for before, _ in padding[1:]], roi_end=roi_end)
        with cropper.trace_transform(False):
            data = cropper(data)
        original = [int(s) for s in self.pop_transform(data)[TraceKeys.ORIG_SIZE]]
        mode = self._mode(original[0] * original[1] < data.shape[-2] * data.shape[-1])
        resizer = Resize(spatial_size=original, mode=mode, anti_aliasing=self.anti_aliasing)
        with resizer.trace_transform(False):
            return resizer(data)


class ResizeKeepAspectd(_SpatialTwin):
    """Dictionary twin of :class:`ResizeKeepAspect`. Args as :class:`ResizeKeepAspect`.

    Example:
        >>> ResizeKeepAspectd(["img"], spatial_size=(64, 48))({"img": torch.rand(1, 200, 100)})["img"].shape
        torch.Size([1, 64, 48])
    """

    backend = ResizeKeepAspect.backend

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        mode: str = "auto",
        anti_aliasing: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ResizeKeepAspect(spatial_size=spatial_size, mode=mode, anti_aliasing=anti_aliasing)


# ---------------------------------------------------------------------------------------------------- chain


def mammogram_preprocessing(
    keys: KeysCollection,
    spatial_size: Sequence[int],
    require_mammogram: bool = False,
    allow_missing_keys: bool = False,
) -> list[MapTransform]:
    """The standard chain for bundle configs: load -> chest wall left -> crop breast -> resize keeping aspect.

    Args:
        keys: image keys (one per view, e.g. ``["ffdm_cc", "ffdm_mlo"]``).
        spatial_size: ``(H, W)`` of every output image.
        require_mammogram: reject DICOMs whose Modality is not MG.
        allow_missing_keys: skip keys absent from a sample (missing views).

    Returns:
        ``[LoadMammogramd, CanonicalSided, CropBreastd, ResizeKeepAspectd]``, ready for ``Compose``.

    Example:
        >>> [type(t).__name__ for t in mammogram_preprocessing(["cc"], (512, 384))]
        ['LoadMammogramd', 'CanonicalSided', 'CropBreastd', 'ResizeKeepAspectd']
    """
    return [
        LoadMammogramd(keys, require_mammogram=require_mammogram, allow_missing_keys=allow_missing_keys),
        CanonicalSided(keys, allow_missing_keys=allow_missing_keys),
        CropBreastd(keys, allow_missing_keys=allow_missing_keys),
        ResizeKeepAspectd(keys, spatial_size=spatial_size, allow_missing_keys=allow_missing_keys),
    ]
