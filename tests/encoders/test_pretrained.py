"""load_pretrained / read_state_dict: weights files, key maps, RGB stems, one clear error."""

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from medmoe.encoders import LoadReport, load_pretrained, read_state_dict


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


def _rgb_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    source = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    return {k: v.detach().clone() for k, v in source.state_dict().items()}


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".safetensors"])
def test_read_state_dict_formats(tmp_path, suffix):
    state = _rgb_state()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:  # a training checkpoint around a DDP model: unwrapped, "module." dropped
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    read = read_state_dict(path)
    assert read.keys() == state.keys()
    assert all(torch.equal(read[k], state[k]) for k in state)


def test_read_state_dict_bad_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pt")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"w\.npz.*unknown suffix"):
        read_state_dict(tmp_path / "w.npz")
    torch.save({"epoch": 1}, tmp_path / "meta.pt")
    with pytest.raises(ValueError, match="no state dict"):
        read_state_dict(tmp_path / "meta.pt")


def test_rgb_stem_adapted_as_timm_does(tmp_path):
    state = _rgb_state()
    path = tmp_path / "rgb.pt"
    torch.save(state, path)
    net = _net()
    net(torch.zeros(1, 1, 8, 8))  # materialise the lazy layer
    report = load_pretrained(net, path)
    assert isinstance(report, LoadReport) and report.adapted == ["0.weight"]
    assert set(report.loaded) == set(net.state_dict())
    # one channel = the RGB weights summed: a grey image gives the RGB network's output on (x, x, x)
    rgb = nn.Conv2d(3, 4, 3)
    rgb.load_state_dict({"weight": state["0.weight"], "bias": state["0.bias"]})
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(net[0](x), rgb(x.expand(-1, 3, -1, -1)))
    assert torch.equal(net[1].running_mean, state["1.running_mean"])


def test_one_error_names_file_and_lists_every_problem(tmp_path):
    state = _rgb_state()
    state["extra.weight"] = torch.zeros(3)
    state["3.weight"] = torch.zeros(2, 7)  # wrong shape
    del state["1.bias"]
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    net = _net()
    net(torch.zeros(1, 1, 8, 8))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError) as info:
        load_pretrained(net, path)
    message = str(info.value)
    assert str(path) in message
    assert "missing in the file (1): 1.bias" in message
    assert "unexpected (no place in the model) (1): extra.weight" in message
    assert "3.weight (2, 7) -> (2, 144)" in message
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), "strict failure must load nothing"
    with pytest.warns(UserWarning, match="loaded the rest"):
        report = load_pretrained(net, path, strict=False)
    assert "1.bias" not in report.loaded and "3.weight" not in report.loaded
    assert torch.equal(net[1].weight, state["1.weight"])


def test_key_map_and_allow_lists():
    state = {f"encoder.{k}": v for k, v in _rgb_state().items() if not k.endswith("num_batches_tracked")}
    state["fc_head.weight"] = torch.zeros(5, 5)
    net = _net()
    net(torch.zeros(1, 1, 8, 8))
    with pytest.warns(UserWarning, match=r"(?s)num_batches_tracked.*fc_head\.weight"):
        report = load_pretrained(net, state, key_map={"encoder.": ""}, ignore_unexpected=["fc_head.*"])
    assert report.ignored_missing == ["1.num_batches_tracked"] and report.ignored_unexpected == ["fc_head.weight"]
    assert torch.equal(net[3].weight, state["encoder.3.weight"])


def test_timm_name_when_timm_cannot_provide(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("offline and not in the cache")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ValueError, match=r"timm could not provide pretrained weights for 'resnet18'.*local weights"):
        load_pretrained(_net(), "timm:resnet18")


def test_timm_name_uses_timm_pretrained(monkeypatch):
    """``timm:<name>`` asks timm for ``pretrained=True`` (here answered from a local state, no download)."""
    calls = []
    real = timm.create_model
    torch.manual_seed(3)
    donor = real("test_resnet", pretrained=False)

    def fake(name, pretrained=False, **kwargs):
        calls.append((name, pretrained))
        return donor

    monkeypatch.setattr(timm, "create_model", fake)
    target = real("test_resnet", pretrained=False)
    load_pretrained(target, "timm:test_resnet")
    assert calls == [("test_resnet", True)]
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), donor.state_dict().values()))


def test_monai_encoder_from_a_whole_model_checkpoint(tmp_path):
    """VolumeEncoder(pretrained_weights=..., pretrained_prefix=...): the MRI encoder of a saved I2MoE (adni bundle)."""
    from medmoe.encoders import VectorEncoder, VolumeEncoder
    from medmoe.nets import create_model

    def volume(**kwargs):
        return VolumeEncoder(3, 1, hidden_size=8, num_tokens=2, channels=(4, 8), strides=(2, 2), **kwargs)

    torch.manual_seed(0)
    encoders = {"mri": volume(), "clinical": VectorEncoder(in_features=5, hidden_size=8, num_tokens=2)}
    model = create_model(
        "i2moe", modalities=["mri", "clinical"], tasks={"dx": 3}, hidden_size=8, num_tokens=2, encoders=encoders
    )
    torch.save({"network": model.state_dict()}, tmp_path / "i2moe.pt")
    torch.manual_seed(1)
    loaded = volume(pretrained_weights=tmp_path / "i2moe.pt", pretrained_prefix="encoders.encoders.mri.").eval()
    x = torch.randn(1, 1, 8, 8, 8)
    torch.testing.assert_close(loaded(x), encoders["mri"].eval()(x))
    with pytest.raises(ValueError, match=r"(?s)i2moe\.pt.*missing in the file"):
        volume(pretrained_weights=tmp_path / "i2moe.pt", pretrained_prefix="encoders.mri.")
