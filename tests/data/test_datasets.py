"""make_dataset: no cache, RAM cache, disk cache keyed on the deterministic transform chain."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import Dataset, PersistentDataset
from monai.transforms import Compose, MapTransform, RandScaleIntensityd

from medmoe.data import CacheDataset, make_dataset, transform_fingerprint

REPO = Path(__file__).resolve().parents[2]


class LoadCountd(MapTransform):
    """Reads ``x`` (a .npy path) and multiplies it by ``factor``; counts its calls (the expensive decode)."""

    calls = 0

    def __init__(self, keys, factor: float = 1.0):
        super().__init__(keys)
        self.factor = factor

    def __call__(self, data):
        LoadCountd.calls += 1
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.as_tensor(np.load(d[key]) * self.factor, dtype=torch.float32)
        return d


def _records(tmp_path: Path, n: int = 3) -> list[dict]:
    records = []
    for i in range(n):
        path = tmp_path / f"img{i}.npy"
        np.save(path, np.full((1, 4, 4), i + 1.0, dtype=np.float32))
        records.append({"x": str(path), "label": i})
    return records


def _read_all(ds) -> list[torch.Tensor]:
    return [ds[i]["x"] for i in range(len(ds))]


def test_disk_cache_writes_files_and_a_later_run_reads_them_without_decoding(tmp_path):
    records, cache = _records(tmp_path), tmp_path / "cache" / "nested"
    LoadCountd.calls = 0
    first = make_dataset(records, Compose([LoadCountd("x", factor=2.0)]), cache="disk", cache_dir=cache)
    assert isinstance(first, PersistentDataset) and cache.is_dir()  # created
    values = _read_all(first)
    assert LoadCountd.calls == 3 and len(list(cache.glob("*.pt"))) == 3
    for path in tmp_path.glob("img*.npy"):
        path.unlink()  # the sources are gone: only the cache can answer now
    again = make_dataset(records, Compose([LoadCountd("x", factor=2.0)]), cache="disk", cache_dir=cache)
    for a, b in zip(values, _read_all(again)):
        torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b))
    assert LoadCountd.calls == 3  # a fresh dataset (a later run) reused the files
    assert torch.as_tensor(values[1]).max().item() == 4.0  # (1 + 1) * factor 2


def test_changed_transform_chain_misses_the_disk_cache(tmp_path):
    records, cache = _records(tmp_path), tmp_path / "cache"
    LoadCountd.calls = 0
    _read_all(make_dataset(records, Compose([LoadCountd("x", factor=2.0)]), cache="disk", cache_dir=cache))
    changed = make_dataset(records, Compose([LoadCountd("x", factor=3.0)]), cache="disk", cache_dir=cache)
    values = _read_all(changed)
    assert LoadCountd.calls == 6 and len(list(cache.glob("*.pt"))) == 6  # new files, not the stale ones
    assert torch.as_tensor(values[0]).max().item() == 3.0


def test_random_augmentation_still_varies_between_reads_with_the_disk_cache(tmp_path):
    records = _records(tmp_path, n=1)
    chain = Compose([LoadCountd("x"), RandScaleIntensityd("x", factors=0.5, prob=1.0)]).set_random_state(0)
    LoadCountd.calls = 0
    ds = make_dataset(records, chain, cache="disk", cache_dir=tmp_path / "cache")
    reads = [torch.as_tensor(ds[0]["x"]).max().item() for _ in range(4)]
    assert LoadCountd.calls == 1  # the deterministic part ran once ...
    assert len(set(reads)) == 4 and all(0.5 <= r <= 1.5 for r in reads)  # ... the random part on every read


def test_none_and_ram_modes(tmp_path):
    records = _records(tmp_path)
    LoadCountd.calls = 0
    plain = make_dataset(records, Compose([LoadCountd("x")]), cache="none")
    assert type(plain) is Dataset
    _read_all(plain), _read_all(plain)
    assert LoadCountd.calls == 6  # transformed on every read
    LoadCountd.calls = 0
    ram = make_dataset(records, Compose([LoadCountd("x")]), cache="ram", num_workers=1, progress=False)
    assert isinstance(ram, CacheDataset) and LoadCountd.calls == 3  # filled up front
    _read_all(ram)
    assert LoadCountd.calls == 3


def test_bad_options_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"cache must be one of none, ram, disk .*--cache.*'memory'"):
        make_dataset([], Compose([]), cache="memory")
    with pytest.raises(ValueError, match="--cache_dir"):
        make_dataset([], Compose([]), cache="disk", cache_dir=None)


def _bundle_fingerprints(size: list[int]) -> list[str]:
    from monai.bundle import ConfigParser

    prints = []
    for bundle in ("embed_m4oe", "gamma_m4oe", "fastmri_i2m2"):
        parser = ConfigParser()
        parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
        parser["image_size"] = size
        chain = parser.get_parsed_content("validate#preprocessing")
        prints.append(transform_fingerprint(chain.flatten().transforms).decode())
    return prints


def test_fingerprint_of_bundle_chains_is_stable_across_processes_and_follows_the_options():
    """A later run (another process, another hash seed) finds the cache; another image size does not."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_datasets as t; "
    code += "print(' '.join(t._bundle_fingerprints([32, 32])))"
    env = {**os.environ, "PYTHONHASHSEED": "123", "OMP_NUM_THREADS": "1"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert other.returncode == 0, other.stderr[-2000:]
    here = _bundle_fingerprints([32, 32])
    assert other.stdout.split() == here
    assert all(a != b for a, b in zip(here, _bundle_fingerprints([40, 40])))


def test_fingerprint_sees_functions_and_arrays():
    from monai.transforms import Lambdad

    def f(x):
        return x + 1

    def g(x):
        return x + 2

    assert transform_fingerprint([Lambdad("x", f)]) != transform_fingerprint([Lambdad("x", g)])
    a, b = LoadCountd("x"), LoadCountd("x")
    b.table = np.arange(3)
    a.table = np.arange(3)
    assert transform_fingerprint([a]) == transform_fingerprint([b])
    b.table = np.arange(3) * 2
    assert transform_fingerprint([a]) != transform_fingerprint([b])
