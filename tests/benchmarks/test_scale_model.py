"""benchmarks/scale_model.py: the FLOP count behind MFU, the GPU peak table, the configuration it measures."""

import pytest
import torch

from medmoe.nets import DenseViT


def test_step_flops_match_the_vit_formula(load_benchmark):
    bench = load_benchmark("scale_model")
    b, d, h, p, depth, classes = 2, 32, 64, 4, 2, 3
    torch.manual_seed(0)
    model = DenseViT(["mlo"], {"a": classes}, image_size=16, patch_size=p, hidden_size=d, mlp_dim=h, depth=depth)
    inputs, labels = bench.make_batch(model, b, (16, 16))
    n = 16 // p * 16 // p  # patches
    t = n + 1  # tokens with the class token
    linear = 2 * b * t * d * (3 * d + d + h + h)  # qkv, proj, fc1, fc2 of one block
    attention = 2 * (2 * b * t * t * d)  # q k^T and p v
    patch, head = 2 * b * n * p * p * d, 2 * b * d * classes
    # backward: two matmuls per matmul (input and weight gradients), except the patch projection (the images need no
    # gradient) and attention (FlopCounterMode counts five: scores recomputed, dv, dp, dq, dk)
    expected = 2 * patch + depth * (3 * linear + attention + 2.5 * attention) + 3 * head
    assert bench.step_flops(model, inputs, labels) == expected
    assert all(p.grad is not None for p in model.parameters())  # a real training step was counted


def test_bf16_peaks_by_device_name(load_benchmark):
    peak = load_benchmark("scale_model").bf16_peak
    assert peak("NVIDIA H100 80GB HBM3") == peak("NVIDIA H200") == pytest.approx(989.4e12)
    assert peak("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert peak("NVIDIA A100-SXM4-80GB") == pytest.approx(312e12)
    assert peak("Tesla T4") is None


def test_it_measures_the_full_resolution_config(load_benchmark):
    net = load_benchmark("scale_model").network_kwargs((1024, 832))
    assert net["name"] == "m4oe" and net["image_size"] == [1024, 832] and net["pretrained_weights"] is None
    assert (net["patch_size"], net["hidden_size"], net["num_heads"], net["mlp_dim"]) == (16, 384, 6, 1536)


def test_saved_for_backward_counts_activations_not_parameters(load_benchmark):
    bench = load_benchmark("scale_model")
    saved = {}
    for flag in (False, True):
        torch.manual_seed(0)
        model = DenseViT(["cc", "mlo"], {"a": 2}, image_size=16, patch_size=4, hidden_size=32, mlp_dim=64, depth=3)
        model.activation_checkpointing = flag
        saved[flag] = bench.saved_for_backward_mb(model.train(), bench.make_batch(model, 2, (16, 16))[0])
    tokens_mb = 2 * (2 * 16 + 1) * 32 * 4 / 2**20  # one (b, tokens, d) fp32 tensor
    assert saved[False] > 3 * 10 * tokens_mb  # ~10 token-sized tensors per block, 3 blocks (weights not included)
    assert saved[True] < 0.2 * saved[False]  # the blocks keep nothing but their inputs


def test_memory_ratios_pair_each_models_rows(load_benchmark):
    bench = load_benchmark("scale_model")
    row = {"peak_rss_mb": 10.0, "step_peak_above_model_mb": 8.0, "saved_for_backward_mb": 6.0}
    rows = [
        {"model": "m4oe", "activation_checkpointing": False, **row},
        {"model": "m4oe", "activation_checkpointing": True, **{k: v / 2 for k, v in row.items()}},
        {"model": "dense_vit", "activation_checkpointing": True, **row},  # no partner: no ratio
    ]
    assert bench.memory_ratios(rows) == {"m4oe": {"peak_rss": 0.5, "step_peak": 0.5, "saved_for_backward": 0.5}}
    assert bench.FIXED_MMAP_THRESHOLD == {"MALLOC_MMAP_THRESHOLD_": "65536"}  # glibc's variable, a byte count
