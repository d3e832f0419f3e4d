"""medmoe.data.CacheDataset: a bad item found while caching raises with no caching thread left running."""

import threading
import time

import pytest
from monai.data import CacheDataset as MonaiCacheDataset
from monai.transforms import Transform

from medmoe.data import CacheDataset


class Load(Transform):
    """A deterministic transform (so it is cached) that fails on item 0 and is slow on the others."""

    def __call__(self, item):
        if item["i"] == 0:
            raise ValueError(f"{item['path']}: not a readable NIfTI file")
        time.sleep(0.2)  # the other workers are busy with their items when item 0 fails
        return item


def _caching_threads():
    return [t for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive()]


def _records(n=8):
    return [{"i": i, "path": f"/data/mri/S{i:04d}.nii.gz"} for i in range(n)]


def test_a_failing_item_leaves_no_caching_thread_running():
    before = _caching_threads()
    with pytest.raises(RuntimeError) as err:
        CacheDataset(_records(), Load(), cache_rate=1.0, num_workers=4, progress=False)
    assert "S0000.nii.gz: not a readable NIfTI file" in repr(err.value.__cause__)
    assert _caching_threads() == before  # joined: nothing runs on when the error ends the program


def test_monai_s_cache_dataset_leaves_them_running_which_is_what_aborts_at_exit():
    before = _caching_threads()
    with pytest.raises(RuntimeError):
        MonaiCacheDataset(_records(), Load(), cache_rate=1.0, num_workers=4, progress=False)
    assert len(_caching_threads()) > len(before)  # daemon workers still transforming their items
    time.sleep(0.5)


def test_caching_works_as_before():
    records = _records()[1:]
    ds = CacheDataset(records, Load(), cache_rate=1.0, num_workers=2, progress=True)
    assert [ds[i]["i"] for i in range(len(ds))] == [r["i"] for r in records]
