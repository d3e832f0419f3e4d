"""Interaction losses with ``centre_logits``: hand-computed values, softmax invariance, bad options."""

import math

import pytest
import torch

from medmoe.losses import interaction_losses


def _example() -> torch.Tensor:
    # experts unique_0, unique_1, synergy, redundancy; passes clean, modality 0 masked, modality 1 masked; 3 classes
    out = torch.zeros(4, 3, 1, 3)
    out[0, :, 0] = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0]])  # anchor, negative, positive
    out[1, :, 0] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 3.0, 0.0]])  # anchor, positive, negative
    out[2, :, 0] = torch.tensor([[2.0, 0.0, 1.0], [0.0, 2.0, 1.0], [4.0, 4.0, 7.0]])  # synergy
    out[3, :, 0] = torch.tensor([[3.0, 0.0, 0.0], [10.0, 7.0, 7.0], [0.0, 3.0, 0.0]])  # redundancy
    return out


def test_centred_losses_by_hand():
    out = _example()
    # centred (y - mean_c y):
    # unique_0: a=(-1,0,1), n=(-1,-1,2), p=(0,0,0): max(sqrt2 - sqrt2 + 1, 0) = 1
    # unique_1: a=0, p=0, n=(-1,2,-1): max(0 - sqrt6 + 1, 0) = 0
    # synergy: a=(1,-1,0); cos with (-1,1,0) = -1, with (-1,-1,2) = 0 -> -0.5
    # redundancy: a=(2,-1,-1); 1 - cos with (2,-1,-1) = 0, with (-1,2,-1) = 1.5 -> 0.75
    expected = torch.tensor([1.0, 0.0, -0.5, 0.75])
    torch.testing.assert_close(interaction_losses(out, centre_logits=True), expected, atol=1e-5, rtol=0)
    # the paper's raw-logit values differ on the same outputs:
    # unique_0: max(||(-4,-3,-2)|| - ||(1,2,0)|| + 1, 0) = sqrt29 - sqrt5 + 1
    # synergy: (cos((2,0,1),(0,2,1)) + cos((2,0,1),(4,4,7))) / 2 = (1/5 + 15/(9 sqrt5)) / 2
    # redundancy: (1 - cos((3,0,0),(10,7,7)) + 1 - 0) / 2
    raw = torch.tensor(
        [
            math.sqrt(29) - math.sqrt(5) + 1,
            0.0,
            (0.2 + 15 / (9 * math.sqrt(5))) / 2,
            (1 - 10 / math.sqrt(198) + 1) / 2,
        ]
    )
    torch.testing.assert_close(interaction_losses(out), raw, atol=1e-5, rtol=0)


def test_centred_losses_ignore_a_common_offset_and_keep_gradients():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(5, 4, 6, 3, generator=g, requires_grad=True)  # n = 3 modalities, batch 6, 3 classes
    offset = 10.0 * torch.randn(5, 4, 6, 1, generator=g)  # per expert, pass and sample: softmax unchanged
    centred = interaction_losses(out, centre_logits=True)
    torch.testing.assert_close(interaction_losses(out + offset, centre_logits=True), centred, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(interaction_losses(out + offset), interaction_losses(out))  # raw logits do see it
    centred.sum().backward()
    assert torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0


def test_centre_logits_is_classification_only():
    with pytest.raises(ValueError, match="classification logits only"):
        interaction_losses(torch.randn(4, 3, 2, 1), kind="regression", centre_logits=True)
