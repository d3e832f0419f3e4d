import os
import stat

import pytest

from medmoe.utils import atomic_write, atomic_write_text


def test_atomic_write_text_has_normal_permissions_and_leaves_no_temp_file(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "sub" / "m.json", "{}")
    finally:
        os.umask(old)
    assert path.read_text() == "{}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_a_failed_write_leaves_the_old_file_untouched(tmp_path):
    path = atomic_write_text(tmp_path / "m.json", "old")

    def boom(tmp):
        with open(tmp, "w") as handle:
            handle.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, boom)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["m.json"]
