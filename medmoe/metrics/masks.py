"""Reading segmentation masks (NIfTI, PNG) and pairing predictions with ground truth by id."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .tables import format_ids

__all__ = ["load_mask", "load_pair", "pairs_from_csv", "pairs_from_folders"]

_EXTS = (".nii.gz", ".nii", ".png")


def _strip_ext(name: str) -> str | None:
    for ext in _EXTS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return None


def load_mask(path: str | Path, spacing: Sequence[float] | None = None) -> tuple[np.ndarray, tuple[float, ...]]:
    """Read an integer label mask from NIfTI (``.nii``/``.nii.gz``) or PNG.

    Args:
        path: mask file.
        spacing: override the spacing (PNG has none: default 1 per axis; NIfTI: the header's pixdim).

    Returns:
        ``(mask, spacing)``: an int64 array (2D or 3D) and one spacing value per axis.

    Raises:
        ValueError: unknown extension, non-integer values (probabilities), negative labels, or colour PNGs.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        while data.ndim > 3 and data.shape[-1] == 1:
            data = data[..., 0]
        file_spacing = tuple(float(s) for s in img.header.get_zooms()[: data.ndim])
    elif name.endswith(".png"):
        from PIL import Image

        with Image.open(path) as im:
            data = np.asarray(im)  # palette PNGs give their indices
        if data.ndim == 3:
            if not all(np.array_equal(data[..., 0], data[..., c]) for c in range(1, min(data.shape[-1], 3))):
                raise ValueError(f"{path}: colour PNG; a mask must be single-channel (grey or palette indices)")
            data = data[..., 0]
        file_spacing = (1.0,) * data.ndim
    else:
        raise ValueError(f"{path}: unsupported mask format (use .nii, .nii.gz or .png)")
    if data.ndim not in (2, 3):
        raise ValueError(f"{path}: expected a 2D or 3D mask, got shape {data.shape}")
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.mod(data, 1) == 0):
        raise ValueError(f"{path}: non-integer mask values (probabilities?); threshold / argmax the prediction first")
    data = data.astype(np.int64)
    if data.min(initial=0) < 0:
        raise ValueError(f"{path}: negative label values")
    sp = tuple(float(s) for s in spacing) if spacing is not None else file_spacing
    if len(sp) != data.ndim:
        raise ValueError(f"{path}: spacing {sp} does not match the mask dimensions {data.shape}")
    return data, sp


def pairs_from_folders(pred_dir: str | Path, truth_dir: str | Path) -> pd.DataFrame:
    """Match masks of two folders by file name (without ``.nii.gz``/``.nii``/``.png``).

    Returns:
        A table with columns ``id, prediction, truth``.

    Raises:
        ValueError: a folder is missing or empty, or ids are present on one side only (listed).
    """
    found = []
    for d in (pred_dir, truth_dir):
        d = Path(d)
        if not d.is_dir():
            raise ValueError(f"not a folder: {d}")
        files = {_strip_ext(f.name): f for f in sorted(d.iterdir()) if f.is_file() and _strip_ext(f.name)}
        if not files:
            raise ValueError(f"no .nii, .nii.gz or .png masks in {d}")
        found.append(files)
    pred, truth = found
    only_p, only_t = sorted(set(pred) - set(truth)), sorted(set(truth) - set(pred))
    if only_p or only_t:
        raise ValueError(
            "masks do not match; "
            + "; ".join(
                s
                for s in (
                    f"{len(only_p)} only in {pred_dir}: {format_ids(only_p)}" if only_p else "",
                    f"{len(only_t)} only in {truth_dir}: {format_ids(only_t)}" if only_t else "",
                )
                if s
            )
        )
    ids = sorted(pred)
    return pd.DataFrame({"id": ids, "prediction": [str(pred[i]) for i in ids], "truth": [str(truth[i]) for i in ids]})


def pairs_from_csv(
    path: str | Path, id_column: str = "id", pred_column: str = "prediction", truth_column: str = "truth"
) -> pd.DataFrame:
    """Read a pairs CSV (id, prediction path, truth path, optional subgroup columns).

    Relative paths are resolved against the CSV's folder. Returns the table with columns renamed to
    ``id, prediction, truth`` (other columns kept).

    Raises:
        ValueError: missing columns, duplicate ids, empty paths or missing files (listed).
    """
    path = Path(path)
    df = pd.read_csv(path, dtype={id_column: str})
    miss = [c for c in (id_column, pred_column, truth_column) if c not in df.columns]
    if miss:
        raise ValueError(f"{path}: missing column(s) {miss} (columns: {list(df.columns)})")
    df = df.rename(columns={id_column: "id", pred_column: "prediction", truth_column: "truth"})
    dup = df["id"][df["id"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{path}: duplicate ids {format_ids(dup)}")
    for col in ("prediction", "truth"):
        df[col] = [str(p if Path(str(p)).is_absolute() else path.parent / str(p)) for p in df[col]]
        absent = df.loc[df[col].isna() | ~df[col].map(lambda p: Path(p).is_file()), "id"].tolist()
        if absent:
            raise ValueError(f"{path}: {col} file missing for ids {format_ids(absent)}")
    return df


def load_pair(
    case_id: str,
    pred_path: str | Path,
    truth_path: str | Path,
    spacing: Sequence[float] | None = None,
    tolerance: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read a prediction / truth mask pair and check that shape and spacing agree.

    Returns:
        ``(pred, truth, spacing)``.

    Raises:
        ValueError: naming the case, if the shapes or spacings (relative ``tolerance``) differ.
    """
    pred, sp_p = load_mask(pred_path, spacing)
    truth, sp_t = load_mask(truth_path, spacing)
    if pred.shape != truth.shape:
        raise ValueError(f"case {case_id!r}: prediction shape {pred.shape} != truth shape {truth.shape}")
    if not np.allclose(sp_p, sp_t, rtol=tolerance, atol=0):
        raise ValueError(f"case {case_id!r}: prediction spacing {sp_p} != truth spacing {sp_t}")
    return pred, truth, sp_t
