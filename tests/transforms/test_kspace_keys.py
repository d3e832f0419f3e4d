"""LoadKspaceSliced (per-sample slice index) and SplitMagnitudePhased (complex image -> two modality keys)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from medmoe.transforms import LoadKspaceSliced, SplitMagnitudePhased, fft2c


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    data = np.stack([np.full((8, 8), s + 1, np.complex64) for s in range(3)])
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=data)
    return path


@pytest.mark.parametrize("index", [2, "2", "2.0", np.int64(2)])
def test_load_slice_from_key(volume: Path, index) -> None:
    out = LoadKspaceSliced("kspace")({"kspace": str(volume), "slice": index})
    assert out["kspace"].shape == (1, 8, 8) and torch.allclose(out["kspace"].real, torch.full((1, 8, 8), 3.0))


@pytest.mark.parametrize("index, match", [("x", "not an integer"), ("1.5", "not an integer"), ("9", "out of range")])
def test_load_bad_slice(volume: Path, index: str, match: str) -> None:
    with pytest.raises(ValueError, match=f"key 'kspace'.*{match}"):
        LoadKspaceSliced("kspace")({"kspace": str(volume), "slice": index})
    with pytest.raises(ValueError, match="no slice index"):
        LoadKspaceSliced("kspace", slice_key="idx")({"kspace": str(volume), "slice": 0})


def test_split_magnitude_phase() -> None:
    image = torch.polar(torch.rand(1, 6, 6) + 0.5, torch.full((1, 6, 6), -1.0))
    out = SplitMagnitudePhased("image", mask_key="modality_mask")({"image": image, "modality_mask": np.ones(1, bool)})
    assert "image" not in out and out["modality_mask"].tolist() == [True, True]
    assert torch.allclose(out["magnitude"], image.abs()) and torch.allclose(out["phase"], torch.full((1, 6, 6), -1.0))
    kept = SplitMagnitudePhased("image", "m", "p", mask_key=None, keep_source=True)({"image": image})
    assert set(kept) == {"image", "m", "p"}
    absent = SplitMagnitudePhased("image", allow_missing_keys=True)({})
    assert absent["modality_mask"].tolist() == [False, False] and "magnitude" not in absent


def test_split_rejects_real_and_many_keys() -> None:
    with pytest.raises(ValueError, match="key 'image'.*complex"):
        SplitMagnitudePhased("image")({"image": torch.ones(1, 4, 4)})
    with pytest.raises(ValueError, match="one source key"):
        SplitMagnitudePhased(["a", "b"])
    assert torch.is_complex(fft2c(torch.ones(1, 4, 4)))
