"""MONAI-style transforms for colour fundus photographs and optic cup / disc masks.

Images are channel-first float32 ``(3, H, W)`` (rows, then columns, as torchvision; values 0-255 after loading).
Resizing keeping the aspect ratio is MONAI's ``Resize(spatial_size=S, size_mode="longest")`` (invertible);
:func:`fundus_preprocess` composes the usual chain. OCT volumes are in :mod:`medmoe.transforms.oct`; optic-disc
crops and the cup / disc mask <-> label transforms in :mod:`medmoe.transforms.optic_disc`.

Cup / disc masks follow the GAMMA / REFUGE convention: grey 0 = optic cup, 128 = disc rim, 255 = background.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForeground,
    CropForegroundd,
    MapTransform,
    Resized,
    Transform,
)
from monai.utils import TransformBackends

from .image_checks import channel_first_image, with_meta_of
from .io import high_bit_depth_grey, min_max_scale
from .keywise import KeyWise
from .optic_disc import (  # noqa: F401  (also importable from here, where they lived before)
    CupDiscToLabel,
    CupDiscToLabeld,
    LabelToCupDisc,
    LabelToCupDiscd,
    OpticDiscCrop,
    OpticDiscCropd,
)

__all__ = [
    "read_fundus",
    "fov_mask",
    "LoadFundus",
    "LoadFundusd",
    "FundusFOVMask",
    "FundusFOVMaskd",
    "FundusFOVCrop",
    "FundusFOVCropd",
    "FundusNormalize",
    "FundusNormalized",
    "fundus_preprocess",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def read_fundus(path: str | Path, grey: bool = False) -> np.ndarray:
    """Read a JPEG / PNG / TIFF photograph as float32 ``(3, H, W)`` RGB in ``[0, 255]`` (``(1, H, W)`` with
    ``grey=True``).

    8-bit and colour files keep their values. A 16-bit greyscale file (a PNG or TIFF that Pillow opens as ``I;16``
    / ``I``) is scaled to the same ``[0, 255]`` range with its precision kept (65535 -> 255, as the PNG format
    defines the levels), except when every value is at most 255: such a file holds 8-bit values in a 16-bit
    container (e.g. a GAMMA mask saved from a uint16 array) and they are kept as they are. A float (``F``) or
    32-bit image is min-max scaled to ``[0, 255]``. A greyscale file read with ``grey=False`` is repeated on the
    three channels.

    Raises:
        ValueError: missing, empty or undecodable file.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"fundus image not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"fundus image is empty: {path}")
    try:
        with Image.open(path) as im:
            numeric = high_bit_depth_grey(im)  # convert("L") would clip 16-bit levels at 255
            array = None if numeric is not None else np.asarray(im.convert("L" if grey else "RGB"), np.float32)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not a readable image ({e}).") from e
    if numeric is not None:
        raw, bits = numeric
        if bits == 16:
            levels = raw if raw.max(initial=0) <= 255 else raw * (255 / 65535)
        else:
            levels = min_max_scale(raw) * 255
        array = levels.astype(np.float32)
        array = array if grey else np.repeat(array[..., None], 3, axis=-1)
    return array[None] if grey else np.moveaxis(array, -1, 0)


def fov_mask(image: torch.Tensor, threshold: float = 0.1, circular: bool = True) -> torch.Tensor:
    """Field-of-view mask of a fundus photograph: the bright (roughly circular) region inside black borders.

    Pixels whose brightest channel exceeds ``threshold`` x the 99th percentile are foreground; the largest
    connected component is kept (drops burned-in text) and its holes filled. With ``circular=True`` the circle
    through the component's horizontal and vertical extents (diameter = the larger extent, so a FOV clipped at
    the top / bottom still gets its true radius) replaces it, which makes the mask robust to dark notches and
    dark periphery.

    Args:
        image: ``(3, H, W)`` (or ``(1, H, W)``) any intensity range.

    Returns:
        bool ``(1, H, W)``.
    """
    from scipy import ndimage

    x = channel_first_image(image, "fov_mask").detach().float()
    full = x.amax(dim=0).cpu().numpy()
    step = max(1, int(np.ceil(max(full.shape) / 512)))  # find the FOV on a <= 512 px grid, draw it at full size
    bright = full[::step, ::step]
    ref = float(np.percentile(bright, 99))
    if ref <= 0:
        raise ValueError("fov_mask: image is black; no field of view found.")
    fg = ndimage.binary_opening(bright > threshold * ref, iterations=2)
    labels, count = ndimage.label(fg)
    if count == 0:
        raise ValueError("fov_mask: no field of view found (threshold too high?).")
    sizes = ndimage.sum_labels(fg, labels, index=np.arange(1, count + 1))
    comp = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    if circular:
        rows, cols = np.nonzero(comp)
        cy, cx = (rows.min() + rows.max()) * step / 2, (cols.min() + cols.max()) * step / 2
        radius = (max(rows.max() - rows.min(), cols.max() - cols.min()) * step + step) / 2
        yy, xx = np.ogrid[: full.shape[0], : full.shape[1]]
        comp = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    elif step > 1:
        comp = np.kron(comp, np.ones((step, step), bool))[: full.shape[0], : full.shape[1]]
    return torch.from_numpy(np.ascontiguousarray(comp))[None].to(x.device)


class LoadFundus(Transform):
    """Load a fundus photograph (JPEG / PNG) as a float32 MetaTensor ``(3, H, W)`` in ``[0, 255]``
    (``(1, H, W)`` with ``grey=True``, e.g. for GAMMA cup / disc masks); 16-bit files are scaled to that range
    (see :func:`read_fundus`).

    Example:
        >>> LoadFundus()("/work/shared/data/fundus/retina.jpg").shape  # doctest: +SKIP
        torch.Size([3, 1411, 1411])
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, grey: bool = False) -> None:
        self.grey = grey

    def __call__(self, path: str | Path) -> MetaTensor:
        array = read_fundus(path, self.grey)
        return MetaTensor(torch.from_numpy(array.astype(np.float32)), meta={"filename_or_obj": str(path)})


class LoadFundusd(KeyWise):
    """Dictionary twin of :class:`LoadFundus`."""

    backend = LoadFundus.backend

    def __init__(self, keys: KeysCollection, grey: bool = False, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = LoadFundus(grey)


class FundusFOVMask(Transform):
    """Array transform returning the field-of-view mask ``(1, H, W)`` float {0, 1} of ``(3, H, W)``; see
    :func:`fov_mask`."""

    backend = [TransformBackends.TORCH]

    def __init__(self, threshold: float = 0.1, circular: bool = True) -> None:
        self.threshold, self.circular = threshold, circular

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return fov_mask(image, self.threshold, self.circular).float()


class FundusFOVMaskd(MapTransform):
    """Dictionary twin of :class:`FundusFOVMask`: writes the mask of ``key`` to ``{key}{mask_postfix}``."""

    backend = FundusFOVMask.backend

    def __init__(
        self,
        keys: KeysCollection,
        mask_postfix: str = "_fov",
        threshold: float = 0.1,
        circular: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_postfix = mask_postfix
        self.transform = FundusFOVMask(threshold, circular)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                d[f"{key}{self.mask_postfix}"] = self.transform(d[key])
            except ValueError as e:
                raise ValueError(f"key '{key}': {e}") from e
        return d


class _FOVSelect:
    """Picklable ``select_fn`` for MONAI's CropForeground: the fundus field of view (clipped to the image)."""

    def __init__(self, threshold: float = 0.1) -> None:
        self.threshold = threshold

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return fov_mask(image, self.threshold, circular=True).expand(image.shape[0], -1, -1)


class FundusFOVCrop(CropForeground):
    """Crop a fundus photograph to the bounding box of its field of view (black borders removed) plus
    ``margin``; MONAI's :class:`~monai.transforms.CropForeground` underneath, so ``inverse`` pads back.

    Example:
        >>> img = torch.zeros(3, 64, 80); img[:, 8:56, 16:64] = 100.0
        >>> FundusFOVCrop()(img).shape
        torch.Size([3, 48, 48])
    """

    def __init__(self, margin: int = 0, threshold: float = 0.1, **kwargs) -> None:
        super().__init__(select_fn=_FOVSelect(threshold), margin=margin, allow_smaller=True, **kwargs)

    def __call__(self, img: torch.Tensor, mode=None, lazy=None, **pad_kwargs):  # type: ignore[override]
        channel_first_image(img, "FundusFOVCrop")
        return super().__call__(img, mode=mode, lazy=lazy, **pad_kwargs)


class FundusFOVCropd(CropForegroundd):
    """Dictionary twin of :class:`FundusFOVCrop`: the box comes from ``source_key``, all ``keys`` are cropped
    (image, cup / disc mask, FOV mask); invertible.

    With ``geometry_key``, the sample also gets ``d[geometry_key]``: int64 ``(6,)``
    ``(height, width, row_start, col_start, row_end, col_end)``, the source image's size and the crop box in its
    pixels, so that a prediction on the cropped (and resized) image can be put back on the original photograph
    with :class:`~medmoe.transforms.fundus_geometry.RestoreFundusGeometry` (a fixed-size tensor, so it survives
    caching and collation).

    Raises:
        ValueError: the source key is missing (naming the keys present), it is not a ``(C, H, W)`` image, or
            another key's size differs from the source image's (a mask must match its photograph pixel for pixel).
    """

    def __init__(
        self,
        keys: KeysCollection,
        source_key: str,
        margin: int = 0,
        threshold: float = 0.1,
        geometry_key: str | None = None,
        **kwargs,
    ):
        super().__init__(keys, source_key, select_fn=_FOVSelect(threshold), margin=margin, allow_smaller=True, **kwargs)
        self.geometry_key = geometry_key

    def __call__(self, data, lazy=None):  # type: ignore[override]
        if self.source_key not in data:
            raise ValueError(f"FundusFOVCropd: source key '{self.source_key}' missing from {sorted(map(str, data))}.")
        source = channel_first_image(data[self.source_key], f"key '{self.source_key}'")
        size = tuple(int(s) for s in source.shape[1:])
        for key in self.key_iterator(dict(data)):
            other = tuple(int(s) for s in torch.as_tensor(data[key]).shape[1:])
            if other != size:
                raise ValueError(
                    f"FundusFOVCropd: key '{key}' is {' x '.join(map(str, other))} but '{self.source_key}' is "
                    f"{size[0]} x {size[1]}; a mask must have its photograph's size."
                )
        d = super().__call__(data, lazy=lazy)
        if self.geometry_key is not None:
            if self.start_coord_key is None or self.end_coord_key is None:
                start, end = self.cropper.compute_bounding_box(img=source)
            else:  # the box CropForegroundd has just used
                start, end = d[self.start_coord_key], d[self.end_coord_key]
            d[self.geometry_key] = torch.tensor([*size, *(int(v) for v in start), *(int(v) for v in end)])
        return d


class FundusNormalize(Transform):
    """Colour / contrast normalisation: optional CLAHE (Zuiderveld 1994, ``skimage.exposure.equalize_adapthist``
    on each channel), then per-channel standardisation ``(x - mean_fov) / std_fov`` using statistics inside the
    field of view only; pixels outside the FOV are set to 0.

    Args:
        clahe: apply CLAHE first.
        clip_limit: CLAHE clip limit (0-1).
        kernel_size: CLAHE tile size in pixels (default 1/8 of the image).

    ``__call__(image (3, H, W), mask (1, H, W) | None)``: mask defaults to :func:`fov_mask`. Returns float32.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, clahe: bool = False, clip_limit: float = 0.01, kernel_size: int | None = None) -> None:
        self.clahe, self.clip_limit, self.kernel_size = clahe, clip_limit, kernel_size

    def __call__(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = channel_first_image(image, "FundusNormalize").float()
        fov = fov_mask(x) if mask is None else torch.as_tensor(mask).to(x.device) > 0
        if fov.shape != (1, *x.shape[1:]):
            raise ValueError(f"FundusNormalize: mask shape {tuple(fov.shape)} must be (1, {x.shape[1]}, {x.shape[2]}).")
        if int(fov.sum()) < 2:
            raise ValueError("FundusNormalize: field-of-view mask is empty.")
        if self.clahe:
            from skimage.exposure import equalize_adapthist

            arr = x.detach().cpu().numpy()
            lo, hi = float(arr.min()), float(arr.max())
            scaled = (arr - lo) / max(hi - lo, 1e-8)
            eq = np.stack(
                [equalize_adapthist(c, kernel_size=self.kernel_size, clip_limit=self.clip_limit) for c in scaled]
            )
            x = torch.from_numpy(eq.astype(np.float32)).to(x.device)
        values = x[:, fov[0]]  # (C, N)
        out = (x - values.mean(1)[:, None, None]) / values.std(1).clamp(min=1e-6)[:, None, None]
        out = out * fov
        return with_meta_of(out, image)  # keeps the crop / resize records: Compose.inverse still works


class FundusNormalized(MapTransform):
    """Dictionary twin of :class:`FundusNormalize`; ``mask_key`` names a FOV mask (else computed)."""

    backend = FundusNormalize.backend

    def __init__(self, keys: KeysCollection, mask_key: str | None = None, allow_missing_keys: bool = False, **kwargs):
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.transform = FundusNormalize(**kwargs)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        if self.mask_key is not None and self.mask_key not in d:
            raise ValueError(f"FundusNormalized: mask key '{self.mask_key}' missing.")
        for key in self.key_iterator(d):
            try:
                d[key] = self.transform(d[key], None if self.mask_key is None else d[self.mask_key])
            except ValueError as e:
                raise ValueError(f"key '{key}': {e}") from e
        return d


def fundus_preprocess(
    image_key: str = "fundus",
    mask_key: str | None = None,
    size: int = 512,
    clahe: bool = False,
    load: bool = True,
    geometry_key: str | None = None,
    mask_convention: str = "gamma",
) -> Compose:
    """Fundus chain: load -> FOV crop (mask cropped alike) -> resize longest side to ``size`` keeping aspect
    (MONAI ``Resized``, ``nearest-exact`` for the mask) -> FOV-standardise (+ optional CLAHE) -> cup / disc labels.

    ``geometry_key``: record the original size and crop box there (see :class:`FundusFOVCropd`), to map
    predictions back onto the photograph with :class:`~medmoe.transforms.fundus_geometry.RestoreFundusGeometry`.
    ``mask_convention``: what the mask's values mean (see :class:`CupDiscToLabel`: "gamma", "binary_disc",
    "binary_cup")."""
    keys = [image_key] + ([mask_key] if mask_key else [])
    steps: list = []
    if load:
        steps += [LoadFundusd(image_key)] + ([LoadFundusd(mask_key, grey=True)] if mask_key else [])
    steps += [
        FundusFOVCropd(keys, source_key=image_key, geometry_key=geometry_key),
        Resized(keys, spatial_size=size, size_mode="longest", mode=["area"] + ["nearest-exact"] * (len(keys) - 1)),
        FundusNormalized(image_key, clahe=clahe),
    ]
    if mask_key:
        steps.append(CupDiscToLabeld(mask_key, mask_convention=mask_convention))
    return Compose(steps)
