"""SegmentationHead: shapes for several grids / patch sizes, skips, gradients, bad input."""

import pytest
import torch

from medmoe.heads import SegmentationHead


@pytest.mark.parametrize(
    "grid, patch",
    [((4, 4), 8), ((2, 3), 16), ((4, 6), 4), ((3, 5), (8, 4)), ((2, 2), 2), ((2, 4), 1)],
)
def test_output_at_input_resolution(grid, patch):
    head = SegmentationHead(2, hidden_size=32, out_channels=3, patch_size=patch, feature_size=8)
    tokens = torch.randn(2, grid[0] * grid[1], 32)
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    out = head(tokens, grid)
    assert out.shape == (2, 3, grid[0] * ph, grid[1] * pw)
    assert torch.isfinite(out).all()


def test_same_head_serves_several_input_sizes():
    head = SegmentationHead(2, hidden_size=32, out_channels=2, patch_size=8, feature_size=8)
    for grid in [(2, 2), (4, 8), (5, 3)]:
        assert head(torch.randn(1, grid[0] * grid[1], 32), grid).shape == (1, 2, grid[0] * 8, grid[1] * 8)


def test_3d():
    head = SegmentationHead(3, hidden_size=16, out_channels=2, patch_size=4, feature_size=4)
    assert head(torch.randn(2, 2 * 3 * 2, 16), (2, 3, 2)).shape == (2, 2, 8, 12, 8)


def test_skips_fused_where_given_and_gradients_flow():
    torch.manual_seed(0)
    head = SegmentationHead(2, hidden_size=32, out_channels=2, patch_size=8, feature_size=8, skip_channels=[6, 0, 3])
    tokens = torch.randn(2, 2 * 3, 32, requires_grad=True)
    skips = [torch.randn(2, 6, 4, 6, requires_grad=True), None, torch.randn(2, 3, 16, 24, requires_grad=True)]
    out = head(tokens, (2, 3), skips)
    assert out.shape == (2, 2, 16, 24)
    out.square().mean().backward()
    assert tokens.grad.abs().sum() > 0 and all(s.grad.abs().sum() > 0 for s in skips if s is not None)
    dead = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"No gradient for {dead}"
    # skips are optional per call and change the output when given
    plain = head(tokens, (2, 3))
    assert plain.shape == out.shape and not torch.allclose(plain, out)


def test_every_parameter_receives_a_gradient_without_skips():
    head = SegmentationHead(2, hidden_size=32, out_channels=2, patch_size=(4, 8), feature_size=8)
    head(torch.randn(2, 6, 32), (2, 3)).logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def _change_from_one_token(head, grid, row, col, seed=0):
    """``|head(tokens') - head(tokens)|`` summed over batch and classes, ``(H, W)``, with token ``(row, col)`` moved."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(2, grid[0] * grid[1], 32, generator=g)
    moved = tokens.clone()
    moved[:, row * grid[1] + col] += torch.randn(32, generator=g)
    with torch.no_grad():
        return (head(moved, grid) - head(tokens, grid)).abs().sum((0, 1))


def test_a_token_decodes_to_its_own_patch_within_the_receptive_field():
    """With frozen normalisation (batch norm, eval), token (i, j) reaches only its 8 x 8 patch plus the decoder's
    receptive field: each of the 3 stages refines with two 3 x 3 convs (radius 2 at that stage's scale 2, 4, 8 of
    the grid), i.e. 2 * (4 + 2 + 1) = 14 output pixels around the patch; beyond that the change is exactly 0."""
    torch.manual_seed(0)
    head = SegmentationHead(2, hidden_size=32, out_channels=2, patch_size=8, feature_size=8, norm_name="batch").eval()
    grid, (row, col), reach = (4, 6), (0, 1), 14  # a corner-side token: its mirror images lie far away
    delta = _change_from_one_token(head, grid, row, col)
    assert delta.shape == (32, 48)
    window = torch.zeros_like(delta, dtype=torch.bool)
    window[max(0, 8 * row - reach) : 8 * row + 8 + reach, max(0, 8 * col - reach) : 8 * col + 8 + reach] = True
    assert delta[~window].abs().max() == 0 and delta[window].sum() > 0
    cells = delta.reshape(4, 8, 6, 8).mean((1, 3))  # mean change per patch
    assert cells.argmax() == row * grid[1] + col and cells[row, col] > 5 * cells.mean()  # measured 13-24x


def test_a_token_change_is_strongest_in_its_own_patch_with_instance_norm():
    """The default instance norm spreads a little of any change over the whole map (its statistics are global),
    but the perturbed token's patch still changes most: measured 2.5x to 6x the mean over 5 seeds x 24 tokens."""
    torch.manual_seed(0)
    head = SegmentationHead(2, hidden_size=32, out_channels=2, patch_size=8, feature_size=8).eval()
    for row, col in [(0, 1), (3, 5), (2, 0)]:
        cells = _change_from_one_token(head, (4, 6), row, col).reshape(4, 8, 6, 8).mean((1, 3))
        assert cells[row, col] > 1.5 * cells.mean(), (row, col, cells)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="power of two"):
        SegmentationHead(2, 32, 2, patch_size=6)
    with pytest.raises(ValueError, match="out_channels"):
        SegmentationHead(2, 32, 1, patch_size=8)
    with pytest.raises(ValueError, match="skip_channels"):
        SegmentationHead(2, 32, 2, patch_size=8, skip_channels=[1, 2])
    head = SegmentationHead(2, 32, 2, patch_size=4, feature_size=8, skip_channels=[0, 3])
    with pytest.raises(ValueError, match="patch grid"):
        head(torch.randn(1, 5, 32), (2, 3))
    with pytest.raises(ValueError, match="declared without"):
        head(torch.randn(1, 6, 32), (2, 3), [torch.randn(1, 3, 4, 6), None])
    with pytest.raises(ValueError, match="skip 1"):
        head(torch.randn(1, 6, 32), (2, 3), [None, torch.randn(1, 3, 4, 6)])
