"""VolumeEncoder and FeatureTokenizer: token shapes for several sizes, gradients, errors, and I2MoE plug-in."""

from __future__ import annotations

import pytest
import torch

from medmoe.encoders import FeatureTokenizer, VectorEncoder, VolumeEncoder
from medmoe.nets import create_model


@pytest.mark.parametrize(
    ("spatial", "num_tokens", "grid"),
    [((16, 16, 16), 1, None), ((24, 20, 28), 4, None), ((17, 23, 19), 8, (2, 2, 2)), ((32, 32, 16), 2, (2, 1, 1))],
)
def test_volume_encoder_token_shapes(spatial, num_tokens, grid) -> None:
    encoder = VolumeEncoder(
        3, 1, hidden_size=16, num_tokens=num_tokens, channels=(4, 8), strides=(2, 2), token_grid=grid
    )
    out = encoder(torch.randn(3, 1, *spatial))
    assert out.shape == (3, num_tokens, 16) and torch.isfinite(out).all()


def test_volume_encoder_2d_and_multichannel() -> None:
    encoder = VolumeEncoder(2, 3, hidden_size=8, num_tokens=4, channels=(4,), strides=(2,), token_grid=(2, 2))
    assert encoder(torch.randn(2, 3, 20, 12)).shape == (2, 4, 8)


def test_volume_encoder_grid_tokens_follow_position() -> None:
    """With a (2, 1, 1) grid, changing only the first half of the volume along x changes only token 0."""
    torch.manual_seed(0)
    encoder = VolumeEncoder(3, 1, hidden_size=8, num_tokens=2, channels=(4,), strides=(1,), token_grid=(2, 1, 1))
    encoder.eval()
    x = torch.randn(1, 1, 8, 6, 6)
    y = x.clone()
    y[:, :, :2] += 3.0  # far from the boundary: the 3x3 convolutions of one unit do not reach the second half
    a, b = encoder(x), encoder(y)
    # instance norm couples the halves through the statistics, so compare how much each token moved
    assert (a[0, 0] - b[0, 0]).abs().sum() > 5 * (a[0, 1] - b[0, 1]).abs().sum()


def test_volume_encoder_every_parameter_gets_a_gradient() -> None:
    encoder = VolumeEncoder(3, 1, hidden_size=8, num_tokens=2, channels=(4, 8), strides=(2, 2), num_res_units=2)
    encoder(torch.randn(2, 1, 12, 12, 12)).square().sum().backward()
    missing = [n for n, p in encoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_volume_encoder_errors() -> None:
    with pytest.raises(ValueError, match="product is num_tokens"):
        VolumeEncoder(3, 1, 8, num_tokens=4, token_grid=(2, 2, 2))
    with pytest.raises(ValueError, match="equal length"):
        VolumeEncoder(3, 1, 8, channels=(4, 8), strides=(2,))
    with pytest.raises(ValueError, match="spatial_dims"):
        VolumeEncoder(4, 1, 8)
    encoder = VolumeEncoder(3, 1, 8, channels=(4, 8), strides=(2, 2))
    with pytest.raises(ValueError, match=r"expected \(b, 1, \*, \*, \*\)"):
        encoder(torch.randn(2, 2, 16, 16, 16))
    with pytest.raises(ValueError, match=r"expected \(b, 1"):
        encoder(torch.randn(2, 16, 16, 16))
    with pytest.raises(ValueError, match="smaller than the encoder's total stride 4"):
        encoder(torch.randn(2, 1, 16, 3, 16))


@pytest.mark.parametrize(("features", "num_tokens", "group"), [(7, 1, 7), (7, 3, 3), (6, 6, 1), (3, 2, 2)])
def test_feature_tokenizer_shapes_and_groups(features, num_tokens, group) -> None:
    tokenizer = FeatureTokenizer(features, 8, num_tokens=num_tokens)
    assert tokenizer.group_size == group
    assert tokenizer(torch.randn(5, features)).shape == (5, num_tokens, 8)


def test_feature_tokenizer_tokens_see_only_their_group() -> None:
    """Each token is computed from its own features: changing feature 0 changes token 0 only."""
    tokenizer = FeatureTokenizer(6, 8, num_tokens=3)
    x = torch.randn(2, 6)
    y = x.clone()
    y[:, 0] += 1.0
    moved = (tokenizer(x) - tokenizer(y)).abs().sum((0, 2))
    assert moved[0] > 0 and moved[1:].abs().max() == 0


def test_feature_tokenizer_gradients_and_errors() -> None:
    tokenizer = FeatureTokenizer(5, 8, num_tokens=2)
    tokenizer(torch.randn(4, 5)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tokenizer.parameters())
    with pytest.raises(ValueError, match="num_tokens must be in"):
        FeatureTokenizer(3, 8, num_tokens=4)
    with pytest.raises(ValueError, match="expected 5 values"):
        tokenizer(torch.randn(4, 6))


def test_encoders_plug_into_i2moe_with_missing_modalities() -> None:
    torch.manual_seed(0)
    hidden, tokens = 16, 2
    model = create_model(
        "i2moe",
        modalities=["mri", "clinical", "biospecimen"],
        tasks={"dx": 3},
        hidden_size=hidden,
        num_tokens=tokens,
        encoders={
            "mri": VolumeEncoder(3, 1, hidden, tokens, channels=(4, 8), strides=(2, 2)),
            "clinical": VectorEncoder(8, hidden, tokens),
            "biospecimen": FeatureTokenizer(3, hidden, tokens),
        },
        backbone_kwargs={"num_layers": 1, "num_heads": 2},
    )
    mri = torch.randn(4, 1, 16, 16, 16)
    mri[1] = float("nan")  # the data layer's placeholder for a missing MRI
    bio = torch.randn(4, 3)
    bio[2] = float("nan")
    mask = torch.tensor([[1, 1, 1], [0, 1, 1], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    batch = {"mri": mri, "clinical": torch.randn(4, 8), "biospecimen": bio, "modality_mask": mask}
    output = model(batch)
    out = output["dx"]
    assert out.shape == (4, 3) and torch.isfinite(out).all()
    (out.sum() + output.aux_losses["interaction"]).backward()
    assert output.interpret["expert_weights"].shape == (4, 5)
    for name in ("mri", "clinical", "biospecimen"):
        grads = [p.grad for p in model.encoders.encoders[name].parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
