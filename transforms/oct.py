"""MONAI-style transforms for OCT volumes: readers, intensity normalisation, speckle denoising, B-scan access.

A volume is a channel-first float32 MetaTensor ``(1, N, H, W)``: ``N`` B-scans, each ``H`` (depth, A-scan axis)
x ``W`` (lateral). Resampling to a fixed number of B-scans and size is MONAI's invertible
``Resize(spatial_size=(N, H, W))``; :func:`oct_preprocess` composes the chain.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose, Resized, Transform
from monai.utils import TransformBackends

from .image_checks import finite_tensor, with_meta_of
from .io import high_bit_depth_grey
from .keywise import KeyWise

__all__ = [
    "read_oct",
    "LoadOCT",
    "LoadOCTd",
    "OCTNormalizeIntensity",
    "OCTNormalizeIntensityd",
    "OCTDenoise",
    "OCTDenoised",
    "SelectBScan",
    "SelectBScand",
    "oct_preprocess",
]

BSCAN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _natural_key(path: Path) -> tuple:
    """Sort '2.png' before '10.png' (GAMMA names B-scans by number)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def _volume(x, what: str) -> torch.Tensor:
    return finite_tensor(x, what, 4, "an OCT volume (1, N, H, W)", noun="volume")


def _read_folder(path: Path) -> np.ndarray:
    from PIL import Image

    files = sorted((p for p in path.iterdir() if p.suffix.lower() in BSCAN_SUFFIXES), key=_natural_key)
    if not files:
        raise ValueError(f"{path}: folder holds no B-scan images ({', '.join(BSCAN_SUFFIXES)}).")
    scans, depths = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                numeric = high_bit_depth_grey(im)  # 16-bit / float B-scans: their values, not clipped at 255
                depth = 8 if numeric is None else numeric[1]
                scan = np.asarray(im.convert("L"), dtype=np.float32) if numeric is None else numeric[0]
        except OSError as e:
            raise ValueError(f"{f}: not a readable B-scan image ({e}).") from e
        scans.append(scan.astype(np.float32, copy=False))
        depths.append(depth)
        if scans[-1].shape != scans[0].shape:
            raise ValueError(f"{f}: B-scan shape {scans[-1].shape} differs from {files[0].name} {scans[0].shape}.")
        if depths[-1] != depths[0]:
            raise ValueError(
                f"{f}: {depths[-1]}-bit B-scan in a folder of {depths[0]}-bit ones ({files[0].name}); "
                "their intensity scales differ, so convert the folder to one bit depth."
            )
    return np.stack(scans)


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        array = ds.pixel_array.astype(np.float32)
    except Exception as e:
        raise ValueError(f"{path}: not a readable DICOM image ({e}).") from e
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    # pydicom gives (H, W), (frames, H, W), (H, W, samples) or (frames, H, W, samples): the tags say which
    expected = (frames,) * (frames > 1) + (int(ds.Rows), int(ds.Columns)) + (samples,) * (samples > 1)
    if array.shape != expected:
        raise ValueError(
            f"{path}: pixel data of shape {array.shape} does not match NumberOfFrames={frames}, Rows={ds.Rows}, "
            f"Columns={ds.Columns}, SamplesPerPixel={samples}."
        )
    if samples > 1:  # colour (RGB after pydicom's YBR conversion): keep the luminance, the mean of the samples
        array = array.mean(-1)
    return array if frames > 1 else array[None]


def _read_vol(path: Path) -> np.ndarray:
    try:
        import eyepy
    except ImportError as e:  # pragma: no cover - optional dependency
        raise ImportError("reading Heidelberg .vol files needs `pip install eyepy`.") from e
    import logging

    logging.getLogger("eyepy").setLevel(logging.ERROR)
    try:
        ev = eyepy.import_heyex_vol(str(path))
    except Exception as e:
        raise ValueError(f"{path}: not a readable Heidelberg .vol export ({type(e).__name__}: {e}).") from e
    return np.asarray(ev.data, dtype=np.float32)  # (N, H, W), eyepy's display scaling to 0-255


def read_oct(path: str | Path) -> np.ndarray:
    """Read an OCT volume as float32 ``(N, H, W)``.

    Args:
        path: a folder of B-scan images (sorted numerically, as GAMMA ships them; 8-bit images give 0-255,
            16-bit greyscale ones keep their 0-65535 values, and all must share one bit depth; colour images are
            converted to luminance), a multi-frame greyscale DICOM (``.dcm``; a colour one is converted to
            luminance), a Heidelberg Spectralis ``.vol`` export (via ``eyepy``; intensities on its 0-255 display
            scale), a NIfTI (``.nii`` / ``.nii.gz``, axes ``(N, H, W)``) or a ``.npy`` array ``(N, H, W)`` / ``(H, W)``.

    Raises:
        ValueError: missing / empty path, unreadable file, wrong rank, non-finite values, or a B-scan folder
            mixing bit depths.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"OCT file or folder not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"OCT file is empty: {path}")
    name = path.name.lower()
    if path.is_dir():
        array = _read_folder(path)
    elif name.endswith(".vol"):
        array = _read_vol(path)
    elif name.endswith((".dcm", ".dicom")):
        array = _read_dicom(path)
    elif name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            array = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
        except Exception as e:
            raise ValueError(f"{path}: not a readable NIfTI file ({e}).") from e
    elif name.endswith(".npy"):
        try:
            array = np.load(path, allow_pickle=False).astype(np.float32)
        except Exception as e:
            raise ValueError(f"{path}: not a readable .npy file ({e}).") from e
    else:
        raise ValueError(f"{path}: unknown OCT format; expected a B-scan folder, .vol, .dcm, .nii(.gz) or .npy.")
    array = array[None] if array.ndim == 2 else array
    if array.ndim != 3:
        raise ValueError(f"{path}: expected an OCT volume (N, H, W), got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise ValueError(f"{path}: volume contains NaN or infinite values.")
    return array


class LoadOCT(Transform):
    """Load an OCT volume (see :func:`read_oct`) as a float32 MetaTensor ``(1, N, H, W)``.

    Example:
        >>> LoadOCT()("/work/shared/data/oct/Willis_B_716_0.vol").shape  # doctest: +SKIP
        torch.Size([1, 1, 496, 768])
    """

    backend = [TransformBackends.TORCH]

    def __call__(self, path: str | Path) -> MetaTensor:
        return MetaTensor(torch.from_numpy(read_oct(path))[None], meta={"filename_or_obj": str(path)})


class OCTNormalizeIntensity(Transform):
    """Robust intensity normalisation to ``[0, 1]``: ``(clip(x, p_lo, p_hi) - p_lo) / (p_hi - p_lo)`` with
    percentiles over the whole volume (speckle outliers do not set the range).

    Args:
        lower, upper: percentiles in ``[0, 100]``.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, lower: float = 1.0, upper: float = 99.5) -> None:
        if not 0 <= lower < upper <= 100:
            raise ValueError(f"need 0 <= lower < upper <= 100, got {lower}, {upper}.")
        self.lower, self.upper = lower, upper

    def __call__(self, volume: torch.Tensor) -> torch.Tensor:
        x = _volume(volume, "OCTNormalizeIntensity").float()
        sample = x.flatten()[:: max(1, x.numel() // 1_000_000)]
        q = torch.tensor([self.lower, self.upper], dtype=sample.dtype, device=sample.device) / 100
        lo, hi = (float(v) for v in torch.quantile(sample, q))
        return ((x.clamp(lo, hi) - lo) / max(hi - lo, 1e-8)).float()


class OCTDenoise(Transform):
    """Speckle-robust denoising of each B-scan: a median filter (``method="median"``, ``size`` x ``size``) or
    non-local means on the log intensity (``method="nl_means"``, Buades et al. 2005; speckle is multiplicative,
    so additive in the log domain). Shape preserved ``(1, N, H, W)``.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, method: str = "median", size: int = 3, h: float = 0.08) -> None:
        if method not in ("median", "nl_means"):
            raise ValueError(f"method must be 'median' or 'nl_means', got '{method}'.")
        self.method, self.size, self.h = method, size, h

    def __call__(self, volume: torch.Tensor) -> torch.Tensor:
        x = _volume(volume, "OCTDenoise")
        arr = x.detach().cpu().numpy().astype(np.float32)
        if self.method == "median":
            from scipy.ndimage import median_filter

            out = median_filter(arr, size=(1, 1, self.size, self.size))
        else:
            from skimage.restoration import denoise_nl_means

            lo = float(arr.min())
            log = np.log1p(arr - lo)
            scale = max(float(log.max()), 1e-8)
            out = np.stack(
                [
                    [denoise_nl_means(b / scale, h=self.h, patch_size=5, patch_distance=5) * scale for b in c]
                    for c in log
                ]
            )
            out = np.expm1(out).astype(np.float32) + lo
        t = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(x.device)
        return with_meta_of(t, x)  # keeps applied_operations: an earlier Resize can still be inverted


class SelectBScan(Transform):
    """One B-scan of a volume as a 2D image ``(1, H, W)``; ``index=None`` takes the central (foveal) one."""

    backend = [TransformBackends.TORCH]

    def __init__(self, index: int | None = None) -> None:
        self.index = index

    def __call__(self, volume: torch.Tensor) -> torch.Tensor:
        x = _volume(volume, "SelectBScan")
        n = x.shape[1]
        index = n // 2 if self.index is None else self.index
        if not -n <= index < n:
            raise ValueError(f"SelectBScan: index {index} out of range for {n} B-scans.")
        return x[:, index]


class LoadOCTd(KeyWise):
    """Dictionary twin of :class:`LoadOCT`."""

    backend = LoadOCT.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = LoadOCT()


class OCTNormalizeIntensityd(KeyWise):
    """Dictionary twin of :class:`OCTNormalizeIntensity`."""

    backend = OCTNormalizeIntensity.backend

    def __init__(self, keys: KeysCollection, lower=1.0, upper=99.5, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = OCTNormalizeIntensity(lower, upper)


class OCTDenoised(KeyWise):
    """Dictionary twin of :class:`OCTDenoise`."""

    backend = OCTDenoise.backend

    def __init__(self, keys: KeysCollection, method="median", size=3, h=0.08, allow_missing_keys=False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = OCTDenoise(method, size, h)


class SelectBScand(KeyWise):
    """Dictionary twin of :class:`SelectBScan`."""

    backend = SelectBScan.backend

    def __init__(self, keys: KeysCollection, index: int | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SelectBScan(index)


def oct_preprocess(key: str = "oct", num_bscans: int = 32, size=(256, 256), denoise: bool = True, load=True):
    """OCT chain: load -> [median denoise] -> percentile normalise to [0, 1] -> resample to
    ``(num_bscans, *size)`` (MONAI ``Resized``, trilinear, invertible)."""
    steps: list = [LoadOCTd(key)] if load else []
    if denoise:
        steps.append(OCTDenoised(key))
    steps += [OCTNormalizeIntensityd(key), Resized(key, spatial_size=(num_bscans, *size), mode="trilinear")]
    return Compose(steps)
