"""OCTEmbedding: per-B-scan patch tokens pooled over B-scans."""

import pytest
import torch

from medmoe.encoders import OCTEmbedding


@pytest.mark.parametrize("pooling", ["attention", "mean"])
@pytest.mark.parametrize("size, patch", [((6, 32, 32), 8), ((4, 16, 48), (4, 8))])
def test_shapes_and_gradient(pooling, size, patch):
    torch.manual_seed(0)
    embed = OCTEmbedding(1, size, patch, 32, pooling=pooling)
    volume = torch.randn(2, 1, *size)
    tokens = embed(volume)
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    assert embed.grid_size == (size[1] // ph, size[2] // pw)
    assert tokens.shape == (2, embed.num_tokens, 32) and embed.num_tokens == size[1] * size[2] // (ph * pw)
    tokens.square().sum().backward()
    dead = [n for n, p in embed.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"No gradient for {dead}"


def test_every_bscan_contributes_and_samples_are_independent():
    embed = OCTEmbedding(1, (4, 16, 16), 8, 16).eval()
    volume = torch.randn(2, 1, 4, 16, 16)
    out = embed(volume)
    for s in range(4):
        changed = volume.clone()
        changed[0, :, s] += 1.0
        new = embed(changed)
        assert not torch.allclose(new[0], out[0])
        torch.testing.assert_close(new[1], out[1])


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="divide"):
        OCTEmbedding(1, (4, 30, 32), 8, 16)
    with pytest.raises(ValueError, match="pooling"):
        OCTEmbedding(1, (4, 32, 32), 8, 16, pooling="max")
    with pytest.raises(ValueError, match="volume_size"):
        OCTEmbedding(1, (32, 32), 8, 16)
    with pytest.raises(ValueError, match="expected a volume"):
        OCTEmbedding(1, (4, 32, 32), 8, 16)(torch.randn(2, 1, 5, 32, 32))
