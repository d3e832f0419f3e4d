"""benchmarks/scale.py: the targets it reads from the parts' JSON (worst case against each target)."""

from __future__ import annotations


def test_data_targets_take_the_worst_ratio_at_the_same_process_count(load_benchmark):
    targets = load_benchmark("scale").data_targets
    ratios = {
        "first pass a 1w / decode in 1 process": 0.95,
        "first pass a 2w / decode in 2 processes": 0.78,
        "first pass b 2w / decode in 2 processes": 0.9,
        "first pass a 2w per worker / decode": 0.5,
        "first pass a 2w per worker / decode, steady": 0.6,
        "cached pass 2w / first pass a 2w": 40.0,
        "medmoe decode a / decode": 2.1,
        "medmoe decode b / decode": 1.2,
        "first pass a 1w / medmoe decode": 0.7,
    }
    out = targets({"ratios": ratios, "peak_rss": {"ratio": {"pass_peak_rss_mib": 1.02}}})
    same = out["first pass / decode in as many processes (worst syntax and worker count)"]
    assert same == {"value": 0.78, "target": ">= 0.8", "met": False}
    per_worker = out["first pass per worker / decode, 2w, steady (worst syntax)"]  # beside the target, not one
    assert per_worker == {"value": 0.6, "target": "(reported)", "met": None}
    assert out["cached / first pass (worst)"]["met"] and out["peak RSS at 4N / N (pass)"]["met"]
    assert out["medmoe decode / pydicom decode (worst syntax)"] == {"value": 1.2, "target": "(reported)", "met": None}
    assert out["first pass 1w / medmoe decode (worst syntax)"]["value"] == 0.7


def test_model_targets_read_checkpointing_at_the_training_batch(load_benchmark):
    targets = load_benchmark("scale").model_targets
    full = {"m4oe_over_dense_step": 0.4, "m4oe_ckpt_over_none_peak_rss": 0.83, "dense_vit_ckpt_over_none_peak_rss": 0.6}
    result = {"cpu_ratios": {"full": full}, "memory_batch": 8, "memory_ratios": {"m4oe": {"peak_rss": 0.45}}}
    out = targets({**result, "gpu": "no GPU at hand"})
    assert out["m4oe peak RSS, checkpointing / none (full size, batch 8, live memory)"]["met"] is True
    batch1 = out["M4oE peak RSS, checkpointing / none (full size, batch 1)"]  # reported beside it
    assert batch1 == {"value": 0.83, "target": "(reported)", "met": None}
    without = targets({"cpu_ratios": {"full": full}, "gpu": []})  # no training-batch rows: batch 1 is the target
    assert without["M4oE peak RSS, checkpointing / none (full size, batch 1)"]["met"] is False
    assert out["MFU (bf16, GPU)"]["met"] is None and out["MFU (bf16, GPU)"]["note"] == "no GPU at hand"
