"""medmoe.utils.atomic: the content arrives whole, a failure leaves the old file and no temp file behind."""

import os
import stat

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from medmoe.utils import (
    atomic_open,
    atomic_path,
    atomic_save_figure,
    atomic_torch_save,
    atomic_write,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_text,
    is_temp_name,
    remove_stale_temp_files,
)


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_text_has_normal_permissions_and_leaves_no_temp_file(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "sub" / "m.json", "{}\r\n")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"{}\r\n"  # written as given, no newline translation
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert _names(path.parent) == ["m.json"]


def test_a_failed_write_leaves_the_old_file_untouched(tmp_path):
    path = atomic_write_text(tmp_path / "m.json", "old")

    def boom(tmp):
        with open(tmp, "w") as handle:
            handle.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, boom)
    assert path.read_text() == "old" and _names(tmp_path) == ["m.json"]


def test_a_failed_first_write_creates_no_file(tmp_path):
    with pytest.raises(KeyError), atomic_open(tmp_path / "cohort.csv", newline="") as handle:
        handle.write("id,label\n")
        raise KeyError("label")
    assert _names(tmp_path) == []


def test_bytes_csv_torch_and_figure_round_trip(tmp_path):
    assert atomic_write_bytes(tmp_path / "b.bin", b"\x00\xff").read_bytes() == b"\x00\xff"
    frame = pd.DataFrame({"id": ["a", "b"], "p": [0.25, 0.75]})
    pd.testing.assert_frame_equal(pd.read_csv(atomic_write_csv(tmp_path / "t.csv", frame, index=False)), frame)
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    loaded = torch.load(atomic_torch_save(tmp_path / "ckpt.pt", state), weights_only=True)
    assert torch.equal(loaded["w"], state["w"])
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1], [0, 1])
    png = atomic_save_figure(tmp_path / "plot.png", fig, dpi=50).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert _names(tmp_path) == ["b.bin", "ckpt.pt", "plot.png", "t.csv"]


def test_temp_path_keeps_a_double_extension_and_lives_beside_the_target(tmp_path):
    target = tmp_path / "mri" / "s1.nii.gz"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".s1.nii.gz.") and tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"nifti")
    assert target.read_bytes() == b"nifti"


def test_atomic_open_refuses_modes_that_do_not_write_a_new_file(tmp_path):
    for mode in ("r", "a", "w+"):
        with pytest.raises(ValueError, match="mode 'w' or 'wb'"), atomic_open(tmp_path / "x.txt", mode):
            pass
    assert _names(tmp_path) == []


def test_temp_names_are_marked_and_only_they_are_removed_as_stale(tmp_path):
    target = tmp_path / "s1.nii.gz"
    with atomic_path(target) as tmp:
        assert is_temp_name(tmp.name) and ".tmp-medmoe" in tmp.name
        stale = tmp_path / f"copy_of{tmp.name}"
        leftover = tmp_path / tmp.name.replace("s1.nii.gz", "last.pt").replace(".nii.gz", ".pt")
    leftover.write_bytes(b"half")
    others = [".last.pt.swp", ".bashrc", "last.pt", ".last.pt.abcdefgh.tmp-medmoe.csv", stale.name]
    for name in others:
        (tmp_path / name).write_text("not ours")
    assert remove_stale_temp_files(tmp_path) == [leftover]
    assert _names(tmp_path) == sorted([*others, "s1.nii.gz"])
    assert remove_stale_temp_files(tmp_path / "missing") == []
