"""MONAI-style transforms for structural 3D MRI: reading, N4 bias-field correction, brain crop, normalisation.

Volumes are channel-first :class:`~monai.data.MetaTensor` ``(1, X, Y, Z)`` whose ``affine`` maps voxel indices to
RAS millimetres (MONAI's convention), so MONAI's :class:`~monai.transforms.Orientation` / ``Spacing`` /
``ResizeWithPadOrCrop`` (and their ``d`` twins, all invertible) apply directly; :func:`mri_preprocess` composes the
whole chain::

    LoadVolumed -> Orientationd(RAS) -> Spacingd(pixdim) -> N4BiasFieldCorrectiond -> BrainForegroundCropd
    -> NormalizeForegroundd (percentile clip + z-score in the foreground) -> ResizeWithPadOrCropd(spatial_size)
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
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
    Orientationd,
    ResizeWithPadOrCropd,
    Spacingd,
    Transform,
)
from monai.utils import TransformBackends
from skimage.filters import threshold_otsu

from .image_checks import with_meta_of
from .keywise import KeyWise

__all__ = [
    "read_volume",
    "LoadVolume",
    "LoadVolumed",
    "N4BiasFieldCorrection",
    "N4BiasFieldCorrectiond",
    "OtsuForeground",
    "BrainForegroundCrop",
    "BrainForegroundCropd",
    "NormalizeForeground",
    "NormalizeForegroundd",
    "mri_preprocess",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _check_volume(x, what: str) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.ndim != 4:
        raise ValueError(f"{what}: expected a channel-first volume (C, X, Y, Z), got shape {tuple(t.shape)}.")
    if t.numel() == 0:
        raise ValueError(f"{what}: volume is empty, shape {tuple(t.shape)}.")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what}: volume contains NaN or infinite values.")
    return t


def read_volume(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D volume and its voxel-to-RAS affine.

    Args:
        path: a NIfTI file (``.nii`` / ``.nii.gz``, read with nibabel), a folder holding one DICOM series, or a
            single file SimpleITK reads (multi-frame DICOM, ``.nrrd``, ``.mha``); SimpleITK's LPS geometry is
            converted to RAS.

    Returns:
        ``(array (X, Y, Z) float32, affine (4, 4) float64)``.

    Raises:
        ValueError: missing / empty path, a folder without DICOM files, a non-3D or non-finite image.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"MRI file or DICOM folder not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"MRI file is empty: {path}")
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        import nibabel as nib

        try:
            img = nib.load(str(path))
            array, affine = np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)
        except Exception as e:
            raise ValueError(f"{path}: not a readable NIfTI file ({e}).") from e
    else:
        import SimpleITK as sitk

        try:
            if path.is_dir():
                reader = sitk.ImageSeriesReader()
                series = reader.GetGDCMSeriesIDs(str(path))
                if not series:
                    raise ValueError(f"{path}: folder holds no DICOM series.")
                reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), series[0]))
                image = reader.Execute()
            else:
                image = sitk.ReadImage(str(path))
        except RuntimeError as e:
            raise ValueError(f"{path}: SimpleITK cannot read it ({str(e).strip().splitlines()[-1]}).") from e
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(f"{path}: expected a scalar 3D volume, got {image.GetDimension()}D.")
        array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)).astype(np.float32)  # (z,y,x) -> (x,y,z)
        direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
        affine = np.eye(4)
        affine[:3, :3] = direction @ np.diag(image.GetSpacing())
        affine[:3, 3] = image.GetOrigin()
        affine = _LPS_TO_RAS @ affine
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: volume contains NaN or infinite values.")
    return array, affine


class LoadVolume(Transform):
    """Load a NIfTI file or DICOM series as a channel-first MetaTensor ``(1, X, Y, Z)`` with its RAS affine.

    Orientation and spacing are left to MONAI's ``Orientation`` / ``Spacing`` (see :func:`mri_preprocess`).

    Example:
        >>> vol = LoadVolume()("/work/shared/data/mri/ch2.nii.gz")  # doctest: +SKIP
        >>> vol.shape, vol.affine.diag()[:3]
        (torch.Size([1, 181, 217, 181]), tensor([1., 1., 1.], dtype=torch.float64))
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, path: str | Path) -> MetaTensor:
        array, affine = read_volume(path)
        meta = {"filename_or_obj": str(path), "spatial_shape": np.asarray(array.shape), "original_affine": affine}
        return MetaTensor(
            torch.from_numpy(np.ascontiguousarray(array))[None], affine=torch.as_tensor(affine), meta=meta
        )


class LoadVolumed(KeyWise):
    """Dictionary twin of :class:`LoadVolume`; errors name the key and the file."""

    backend = LoadVolume.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = LoadVolume()


class OtsuForeground:
    """Foreground selector ``x > otsu(x)`` (Otsu 1979, scikit-image's ``threshold_otsu`` on a ``bins``-bin
    histogram); picklable, usable as MONAI's ``select_fn``. Returns a bool tensor shaped like ``x``."""

    def __init__(self, bins: int = 256) -> None:
        self.bins = bins

    def threshold(self, x: torch.Tensor) -> float:
        """Otsu's threshold of all values of ``x`` (the value itself for a constant ``x``)."""
        values = torch.as_tensor(x).detach().float().cpu().numpy().ravel()  # 1D: no RGB-shape guess in skimage
        return float(threshold_otsu(values, nbins=self.bins))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x)
        return x > self.threshold(x)


class N4BiasFieldCorrection(Transform):
    """N4 bias-field correction (Tustison et al. 2010) through SimpleITK.

    Args:
        num_iterations: iterations per fitting level (its length is the number of levels).
        shrink_factor: fit on a volume shrunk this many times per axis (faster), apply the field at full size.
        convergence_threshold: N4's stopping threshold.
        use_otsu_mask: fit inside an Otsu foreground mask (recommended for brains).

    Input / output: ``(1, X, Y, Z)`` intensities > 0 (MetaTensor metadata kept), float32.

    Example:
        >>> out = N4BiasFieldCorrection(num_iterations=(10,), shrink_factor=2)(torch.rand(1, 32, 32, 32) + 1)
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        num_iterations: Sequence[int] = (50, 50, 30),
        shrink_factor: int = 2,
        convergence_threshold: float = 1e-6,
        use_otsu_mask: bool = True,
    ) -> None:
        if not num_iterations or min(num_iterations) < 1 or shrink_factor < 1:
            raise ValueError("num_iterations must be positive integers and shrink_factor >= 1.")
        self.num_iterations = [int(i) for i in num_iterations]
        self.shrink_factor = int(shrink_factor)
        self.convergence_threshold = convergence_threshold
        self.use_otsu_mask = use_otsu_mask

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        import SimpleITK as sitk

        x = _check_volume(img, "N4BiasFieldCorrection")
        if x.shape[0] != 1:
            raise ValueError(f"N4BiasFieldCorrection: expected one channel, got {x.shape[0]}.")
        array = x[0].detach().cpu().numpy().astype(np.float32)
        offset = float(min(array.min(), 0.0))  # N4 works on a log scale: shift to non-negative
        image = sitk.GetImageFromArray(np.transpose(array - offset, (2, 1, 0)) + 1e-3)
        if isinstance(x, MetaTensor):
            image.SetSpacing([float(s) for s in x.pixdim[:3]])
        if self.use_otsu_mask:
            mask = OtsuForeground()(torch.from_numpy(array)).numpy().astype(np.uint8)
            mask = mask if mask.any() else np.ones_like(mask)
        else:
            mask = np.ones(array.shape, np.uint8)
        mask_image = sitk.GetImageFromArray(np.transpose(mask, (2, 1, 0)))
        mask_image.CopyInformation(image)
        small, small_mask = image, mask_image
        if self.shrink_factor > 1:
            small = sitk.Shrink(image, [self.shrink_factor] * 3)
            small_mask = sitk.Shrink(mask_image, [self.shrink_factor] * 3)
        n4 = sitk.N4BiasFieldCorrectionImageFilter()
        n4.SetMaximumNumberOfIterations(self.num_iterations)
        n4.SetConvergenceThreshold(self.convergence_threshold)
        n4.Execute(small, small_mask)
        log_field = n4.GetLogBiasFieldAsImage(image)
        field = np.transpose(sitk.GetArrayFromImage(sitk.Exp(log_field)), (2, 1, 0)).astype(np.float32)
        corrected = torch.from_numpy((array - offset) / field + offset)[None]
        return with_meta_of(corrected, x)


class N4BiasFieldCorrectiond(KeyWise):
    """Dictionary twin of :class:`N4BiasFieldCorrection`."""

    backend = N4BiasFieldCorrection.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **n4_kwargs) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = N4BiasFieldCorrection(**n4_kwargs)


class BrainForegroundCrop(CropForeground):
    """Crop to the bounding box of the Otsu foreground (the head / brain) plus ``margin`` voxels; MONAI's
    :class:`~monai.transforms.CropForeground` underneath, so it is invertible (``inverse`` pads back).

    Example:
        >>> vol = torch.zeros(1, 20, 20, 20); vol[:, 5:15, 6:12, 4:18] = 1
        >>> BrainForegroundCrop(margin=0)(vol).shape
        torch.Size([1, 10, 6, 14])
    """

    def __init__(self, margin: Sequence[int] | int = 2, **kwargs) -> None:
        super().__init__(select_fn=OtsuForeground(), margin=margin, allow_smaller=True, **kwargs)

    def __call__(self, img: torch.Tensor, mode=None, lazy=None, **pad_kwargs):  # type: ignore[override]
        _check_volume(img, "BrainForegroundCrop")
        return super().__call__(img, mode=mode, lazy=lazy, **pad_kwargs)


class BrainForegroundCropd(CropForegroundd):
    """Dictionary twin of :class:`BrainForegroundCrop`: the box comes from ``source_key`` and crops all ``keys``
    (image and label alike); invertible."""

    def __init__(self, keys: KeysCollection, source_key: str, margin: Sequence[int] | int = 2, **kwargs) -> None:
        super().__init__(keys, source_key, select_fn=OtsuForeground(), margin=margin, allow_smaller=True, **kwargs)

    def __call__(self, data, lazy=None):  # type: ignore[override]
        if self.source_key not in data:
            raise ValueError(
                f"BrainForegroundCropd: source key '{self.source_key}' missing from {sorted(map(str, data))}."
            )
        _check_volume(data[self.source_key], f"key '{self.source_key}'")
        return super().__call__(data, lazy=lazy)


class NormalizeForeground(Transform):
    """Percentile clipping then z-score, both computed inside the foreground.

    ``lo, hi = percentile(x[fg], lower), percentile(x[fg], upper)``; ``x = clip(x, lo, hi)``;
    ``x = (x - mean(x[fg])) / std(x[fg])``; background set to ``background_value`` unless it is ``None``.
    The foreground is ``mask > 0`` when a mask is passed, else Otsu's threshold with enclosed holes filled.

    Args:
        lower, upper: clipping percentiles in ``[0, 100]``.
        background_value: value written outside the foreground (``None`` keeps the normalised background).

    Example:
        >>> out = NormalizeForeground()(torch.rand(1, 8, 8, 8) + 1)
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, lower: float = 0.5, upper: float = 99.5, background_value: float | None = 0.0) -> None:
        if not 0 <= lower < upper <= 100:
            raise ValueError(f"need 0 <= lower < upper <= 100, got {lower}, {upper}.")
        self.lower, self.upper, self.background_value = lower, upper, background_value

    @staticmethod
    def _otsu_filled(x: torch.Tensor) -> torch.Tensor:
        """Otsu foreground with enclosed holes (ventricles, CSF) filled, per channel."""
        from scipy.ndimage import binary_fill_holes

        fg = OtsuForeground()(x).cpu().numpy()
        return torch.from_numpy(np.stack([binary_fill_holes(c) for c in fg])).to(x.device)

    def __call__(self, img: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = _check_volume(img, "NormalizeForeground") if img.ndim == 4 else torch.as_tensor(img)
        if x.ndim < 3 or x.numel() == 0 or not torch.isfinite(x).all():
            raise ValueError(f"NormalizeForeground: expected a finite channel-first image, got {tuple(x.shape)}.")
        fg = self._otsu_filled(x) if mask is None else torch.as_tensor(mask).to(x.device) > 0
        if fg.shape != x.shape:
            fg = fg.expand_as(x) if fg.shape[0] == 1 else fg
        if fg.shape != x.shape:
            raise ValueError(f"NormalizeForeground: mask shape {tuple(fg.shape)} does not match {tuple(x.shape)}.")
        if not bool(fg.any()):
            raise ValueError("NormalizeForeground: empty foreground (constant image or empty mask).")
        values = x[fg].float()
        q = torch.tensor([self.lower, self.upper], dtype=values.dtype, device=values.device) / 100
        lo, hi = torch.quantile(values[:: max(1, values.numel() // 2_000_000)], q)
        out = x.float().clamp(float(lo), float(hi))
        values = out[fg]
        out = (out - values.mean()) / values.std().clamp(min=1e-8)
        if self.background_value is not None:
            out = torch.where(fg, out, torch.as_tensor(self.background_value, dtype=out.dtype, device=out.device))
        return out


class NormalizeForegroundd(MapTransform):
    """Dictionary twin of :class:`NormalizeForeground`; ``mask_key`` names an optional foreground mask."""

    backend = NormalizeForeground.backend

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str | None = None,
        lower: float = 0.5,
        upper: float = 99.5,
        background_value: float | None = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.transform = NormalizeForeground(lower, upper, background_value)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        if self.mask_key is not None and self.mask_key not in d:
            raise ValueError(f"NormalizeForegroundd: mask key '{self.mask_key}' missing.")
        for key in self.key_iterator(d):
            try:
                d[key] = self.transform(d[key], None if self.mask_key is None else d[self.mask_key])
            except ValueError as e:
                raise ValueError(f"key '{key}': {e}") from e
        return d


def mri_preprocess(
    keys: KeysCollection = "image",
    pixdim: Sequence[float] | None = (1.0, 1.0, 1.0),
    spatial_size: Sequence[int] | None = None,
    n4: bool = False,
    n4_kwargs: dict | None = None,
    crop_foreground: bool = True,
    normalize: bool = True,
    load: bool = True,
) -> Compose:
    """The standard structural-MRI chain as one :class:`~monai.transforms.Compose` of dictionary transforms.

    ``LoadVolumed -> Orientationd("RAS") -> Spacingd(pixdim) -> [N4] -> BrainForegroundCropd ->
    NormalizeForegroundd -> ResizeWithPadOrCropd(spatial_size)``; the spatial steps are invertible
    (``Compose.inverse``). The first key is the foreground source.

    Example:
        >>> chain = mri_preprocess("t1", pixdim=(2, 2, 2), spatial_size=(96, 112, 96))
        >>> sample = chain({"t1": "/work/shared/data/mri/ch2.nii.gz"})  # doctest: +SKIP
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    steps: list = [LoadVolumed(keys)] if load else []
    steps.append(Orientationd(keys, axcodes="RAS", labels=None))
    if pixdim is not None:
        steps.append(Spacingd(keys, pixdim=pixdim, mode="bilinear"))
    if n4:
        steps.append(N4BiasFieldCorrectiond(keys, **(n4_kwargs or {})))
    if crop_foreground:
        steps.append(BrainForegroundCropd(keys, source_key=keys[0]))
    if normalize:
        steps.append(NormalizeForegroundd(keys))
    if spatial_size is not None:
        steps.append(ResizeWithPadOrCropd(keys, spatial_size=spatial_size))
    return Compose(steps)
