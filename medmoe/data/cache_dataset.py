"""MONAI's ``CacheDataset`` whose caching threads are finished before an error leaves it.

MONAI fills the cache with ``with ThreadPool(num_workers) as pool: list(pool.imap(load, indices))``. When one item
raises (a bad file found while caching), the error leaves the ``with`` block, whose ``terminate()`` stops handing
out items but does not wait for the worker threads: they are daemon threads and go on transforming the item they
hold. If the error then ends the program, the interpreter finalizes while they run; a worker that wants the GIL back
inside a PyTorch call (``pybind11::gil_scoped_release``) is ended with ``pthread_exit``, whose unwinding through that
``noexcept`` C++ frame calls ``std::terminate``: ``terminate called without an active exception`` and exit -6
(SIGABRT) instead of 1, in some runs (a race; issue 22, ``benchmarks/exit_codes.py`` counts it).

:class:`CacheDataset` fills the cache the same way and always ``join()``s the pool, so when it raises no thread of
it is left running.
"""

from __future__ import annotations

from multiprocessing.pool import ThreadPool

from monai.data import CacheDataset as _MonaiCacheDataset
from monai.utils import optional_import

tqdm, has_tqdm = optional_import("tqdm", name="tqdm")

__all__ = ["CacheDataset"]


class CacheDataset(_MonaiCacheDataset):
    """``monai.data.CacheDataset`` (same arguments) that joins its caching threads, also when an item fails.

    Example:
        >>> ds = CacheDataset(records, transform, cache_rate=1.0, num_workers=None)  # doctest: +SKIP
        # in a bundle config: {"_target_": "medmoe.data.CacheDataset", "data": ..., "transform": ...}
    """

    def _fill_cache(self, indices=None) -> list:
        if self.cache_num <= 0:
            return []
        if indices is None:
            indices = list(range(self.cache_num))
        pool = ThreadPool(self.num_workers)
        try:
            items = pool.imap(self._load_cache_item, indices)
            if self.progress and has_tqdm:
                items = tqdm(items, total=len(indices), desc="Loading dataset")
            return list(items)
        finally:
            pool.terminate()  # no further items are handed out ...
            pool.join()  # ... and the items the workers hold are finished before anything else happens
