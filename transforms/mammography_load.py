"""Loading mammograms as MONAI MetaTensors: :class:`LoadMammogram` and its dictionary twin.

Pixels and tags come from :func:`~medmoe.transforms.io.read_mammogram`; cohort columns may override the view,
laterality and image type per sample. See ``docs/transforms.md`` (Mammography).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import ImageMetaKey, TransformBackends
from monai.utils.enums import MetaKeys

from .io import MammogramReadError, collate_safe_meta, read_mammogram, validate_overrides

__all__ = ["LoadMammogram", "LoadMammogramd", "NotAMammogramError"]


class NotAMammogramError(MammogramReadError):
    """A DICOM file whose Modality is not MG was loaded with ``require_mammogram=True``."""


class LoadMammogram(Transform):
    """Load a DICOM / JPEG / PNG mammogram as a ``(1, H, W)`` MetaTensor in ``[0, 1]``, dense tissue bright.

    Pixels and tags come from :func:`~medmoe.transforms.io.read_mammogram`; ``.meta`` holds its keys in the
    collatable form of :func:`~medmoe.transforms.io.collate_safe_meta` (unknown -> ``""``, ``is_mammogram``
    1 / 0 / -1) plus MONAI's ``filename_or_obj``, ``spatial_shape`` and ``original_channel_dim``.

    Cohort overrides (constructor arguments, or per call) win over the file's tags.

    Args:
        require_mammogram: raise :class:`NotAMammogramError` for a DICOM that is not a mammogram: Modality other
            than MG, or a SOP class outside :data:`~medmoe.transforms.dicom_tags.MAMMOGRAPHY_SOP_CLASSES` (JPEG / PNG
            carry no modality and are accepted).
        view: view code for every image loaded by this instance, e.g. "CC", "MLO".
        laterality: "L" / "R" (also "left" / "right").
        image_type: "ffdm" or "s2d".

    Returns:
        MetaTensor float32 of shape ``(1, H, W)``.

    Raises:
        MammogramReadError: unreadable file (see ``read_mammogram``); NotAMammogramError; ValueError for an
            invalid override value.

    Example:
        >>> image = LoadMammogram(require_mammogram=True)("P_00820_LEFT_CC.dcm")  # doctest: +SKIP
        >>> image.shape, image.meta["view"], image.meta["laterality"]  # doctest: +SKIP
        (torch.Size([1, 4736, 2624]), 'CC', 'L')
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        require_mammogram: bool = False,
        view: str | None = None,
        laterality: str | None = None,
        image_type: str | None = None,
    ) -> None:
        self.require_mammogram = require_mammogram
        self.view, self.laterality, self.image_type = validate_overrides(view, laterality, image_type)

    def __call__(
        self,
        filename: str | os.PathLike,
        view: str | None = None,
        laterality: str | None = None,
        image_type: str | None = None,
    ) -> MetaTensor:
        """Load ``filename``; per-call ``view`` / ``laterality`` / ``image_type`` win over the constructor's."""
        image, meta = read_mammogram(filename)
        if self.require_mammogram and meta["format"] == "dicom" and not meta["is_mammogram"]:
            raise NotAMammogramError(
                f"{meta['filename']}: not a mammogram (Modality {meta['modality']!r}, SOP class "
                f"{meta['sop_class'] or '(none)'}): a mammogram has Modality 'MG' and a mammography, digital X-ray or "
                "secondary-capture SOP class. Remove the file from the cohort, or allow it with "
                "--require_mammogram False (LoadMammogram(require_mammogram=False))."
            )
        call = validate_overrides(view, laterality, image_type)
        instance = (self.view, self.laterality, self.image_type)
        for key, per_call, per_instance in zip(("view", "laterality", "image_type"), call, instance, strict=True):
            meta[key] = per_call or per_instance or meta[key]
        meta = collate_safe_meta(meta)
        meta[ImageMetaKey.FILENAME_OR_OBJ] = meta["filename"]
        meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(image.shape[1:])
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = "no_channel"
        return MetaTensor(torch.from_numpy(image), meta=meta)


class LoadMammogramd(MapTransform):
    """Dictionary twin of :class:`LoadMammogram`; per-sample overrides come from the data dict.

    For each ``key``, a non-empty string in ``data[f"{key}_view"]``, ``data[f"{key}_laterality"]`` or
    ``data[f"{key}_image_type"]`` wins over the file's tags (e.g. columns of the cohort CSV). An invalid value
    raises a ``ValueError`` naming the file and the override key (e.g. ``ffdm_cc_laterality``).

    Args:
        keys: keys holding file paths.
        require_mammogram: see :class:`LoadMammogram`.
        allow_missing_keys: skip keys absent from the data dict instead of raising KeyError.

    Example:
        >>> load = LoadMammogramd(["ffdm_cc"])
        >>> sample = load({"ffdm_cc": "sample_A1.jpg", "ffdm_cc_laterality": "R"})  # doctest: +SKIP
        >>> sample["ffdm_cc"].meta["laterality"]  # doctest: +SKIP
        'R'
    """

    backend = LoadMammogram.backend

    def __init__(self, keys: KeysCollection, require_mammogram: bool = False, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadMammogram(require_mammogram=require_mammogram)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            overrides = {what: d.get(f"{key}_{what}") for what in ("view", "laterality", "image_type")}
            for what, value in overrides.items():
                try:
                    validate_overrides(**{what: value})
                except ValueError as e:
                    raise ValueError(f"{d[key]}: bad per-sample override '{key}_{what}': {e}") from e
            d[key] = self.loader(d[key], **overrides)
        return d
