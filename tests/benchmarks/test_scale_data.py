"""benchmarks/scale_data.py writes what it says (12-bit lossless files in both syntaxes), its cached pass returns the
first pass's images, and a tiny run writes the JSON the issue note reads."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import torch


def test_cohort_is_lossless_12_bit_in_both_syntaxes(load_benchmark, tmp_path):
    bench = load_benchmark("scale_data")
    files, templates = bench.make_cohort(tmp_path, 3, (96, 80))
    assert set(files) == set(bench.SYNTAXES) and all(len(f) == 3 for f in files.values())
    decoded = {}
    for syntax, paths in files.items():
        datasets = [pydicom.dcmread(p) for p in paths]
        assert {str(ds.file_meta.TransferSyntaxUID) for ds in datasets} == {bench.SYNTAXES[syntax]}
        assert {ds.BitsStored for ds in datasets} == {12} and len({ds.SOPInstanceUID for ds in datasets}) == 3
        decoded[syntax] = [ds.pixel_array for ds in datasets]
    for a, b in zip(*decoded.values(), strict=True):  # both lossless: the same stored values
        np.testing.assert_array_equal(a, b)
        assert a.max() < 4096 and a.std() > 50  # 12 bits, not a flat image
    assert not np.array_equal(decoded["jpeg_lossless_sv1"][0], decoded["jpeg_lossless_sv1"][1])  # CC vs MLO
    assert len(templates["jpeg2000_lossless"]) == 3


def test_cached_pass_returns_the_first_pass_images(load_benchmark, tmp_path):
    bench = load_benchmark("scale_data")
    files, _ = bench.make_cohort(tmp_path / "dicom", 2, (96, 80))
    records = [{"image": str(p)} for p in files["jpeg_lossless_sv1"]]
    chain = bench.preprocessing((32, 28))
    cached, _ = bench.disk_dataset(records, chain, tmp_path / "cache")
    assert bench.run_loader(cached, 0) == 2 and len(list((tmp_path / "cache").iterdir())) == 2
    for i, record in enumerate(records):
        expected = chain(dict(record))["image"]
        assert expected.shape == (1, 32, 28)
        torch.testing.assert_close(torch.as_tensor(cached[i]["image"]), expected.as_tensor(), rtol=0, atol=0)


@pytest.mark.slow
def test_tiny_run_writes_the_json(load_benchmark, tmp_path):
    bench = load_benchmark("scale_data")
    out = tmp_path / "scale_data.json"
    args = ["--images", "2", "--size", "96", "80", "--out-size", "32", "28", "--repeat", "2", "--rss-scale", "2"]
    bench.main([*args, "--workers", "1", "--tmp", str(tmp_path), "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["args"]["images"] == 2 and result["peak_rss"]["scaled"]["images"] == 8
    for row in result["timings"].values():
        assert len(row["seconds"]) == 2 and row["min_s"] <= row["median_s"] <= row["max_s"]
    extra = {"first_pass_per_worker_vs_decode, steady", "first_pass_vs_decode_in_as_many_processes"}
    assert set(result["targets_met"]) == {*bench.TARGETS, *extra}
    assert len(result["ratios"]) == 12 and all(v > 0 for v in result["ratios"].values())
    assert {"medmoe decode jpeg_lossless_sv1", "decode jpeg_lossless_sv1"} <= set(result["timings"])
    assert all("steady_images_per_s" in row for name, row in result["timings"].items() if "pass" in name)
    assert [p.name for p in tmp_path.iterdir()] == ["scale_data.json"]  # the temporary folder is gone


def test_decode_in_processes_decodes_every_file(load_benchmark, tmp_path):
    bench = load_benchmark("scale_data")
    files, _ = bench.make_cohort(tmp_path, 3, (96, 80))
    assert bench.decode_in_processes(files["jpeg_lossless_sv1"], 2) == 3
    with pytest.raises(RuntimeError, match="decoding failed"):  # a failing decode in a worker is not swallowed
        bench.decode_in_processes([tmp_path / "nothing.dcm"], 2)
