"""The single-modality baselines (medmoe.nets.single_modality) beyond the registry-driven contract tests: they read
only their modality, refuse samples without it unless told, and reject bad configurations."""

import pytest
import torch

from medmoe.nets import create_model

MODALITIES = ["fundus", "oct"]
CUP = {"cup": {"modality": "fundus", "classes": 2}}


def classifier(**kwargs):
    torch.manual_seed(0)
    return create_model("timm_classifier", **{"modalities": MODALITIES, "tasks": {"grade": 3},
                                              "backbone": "ghostnet_050", **kwargs})  # fmt: skip


def unet(**kwargs):
    torch.manual_seed(0)
    return create_model("unet", **{"modalities": MODALITIES, "segmentation_tasks": CUP, "tasks": {"grade": 3},
                                   "encoder": "ghostnet_050", "encoder_depth": 4, "decoder_channels": (16, 8, 8, 8),
                                   **kwargs})  # fmt: skip


def batch(b=2):
    g = torch.Generator().manual_seed(0)
    return {"fundus": torch.rand(b, 3, 32, 32, generator=g), "oct": torch.rand(b, 1, 4, 16, 16, generator=g)}


@pytest.mark.parametrize("build", [classifier, unet])
def test_reads_its_modality_only(build):
    model = build().eval()
    x = batch()
    out = model(x)
    other = {**x, "oct": torch.full_like(x["oct"], float("nan"))}  # the other modality plays no part
    torch.testing.assert_close(model(other)["grade"], out["grade"])
    assert not torch.allclose(model({**x, "fundus": x["fundus"].flip(-1)})["grade"], out["grade"])
    assert model({"fundus": x["fundus"]})["grade"].shape == (2, 3)  # the other key need not be in the batch


@pytest.mark.parametrize("build", [classifier, unet])
def test_a_sample_without_the_modality(build):
    x = {**batch(), "modality_mask": torch.tensor([[True, True], [False, True]])}
    x["fundus"][1] = float("nan")  # the data layer's placeholder
    with pytest.raises(ValueError, match="lack 'fundus'.*missing_modality='zero'"):
        build()(x)
    out = build(missing_modality="zero").eval()(x)  # zero image instead: finite
    assert torch.isfinite(out["grade"]).all()
    with pytest.raises(ValueError, match="non-finite"):
        build()({**batch(), "fundus": torch.full((2, 3, 32, 32), float("nan"))})
    with pytest.raises(ValueError, match="modality_mask"):
        build()({**batch(), "modality_mask": torch.ones(2, 3, dtype=torch.bool)})
    with pytest.raises(KeyError, match="fundus"):
        build()({"oct": batch()["oct"]})


def test_unet_outputs_and_bad_configurations():
    out = unet(segmentation_tasks={"cup": {"classes": 2}, "disc": {"classes": 3}})(batch())
    assert out["cup"].shape == (2, 2, 32, 32) and out["disc"].shape == (2, 3, 32, 32) and out["grade"].shape == (2, 3)
    assert set(unet(tasks=None)(batch())) == {"cup"}
    with pytest.raises(ValueError, match="at least one segmentation task"):
        unet(segmentation_tasks={})
    with pytest.raises(ValueError, match="of modality 'oct'"):
        unet(segmentation_tasks={"layer": {"modality": "oct", "classes": 2}})
    with pytest.raises(ValueError, match="classes"):
        unet(segmentation_tasks={"cup": {"classes": 1}})
    with pytest.raises(ValueError, match="used twice"):
        unet(tasks={"cup": 2})
    with pytest.raises(ValueError, match="decoder_channels"):
        unet(decoder_channels=(16, 8))
    with pytest.raises(ValueError, match="multiples of 16"):
        unet()({"fundus": torch.rand(1, 3, 40, 40)})
    with pytest.raises(ValueError, match="modality 'x'"):
        unet(modality="x")
    with pytest.raises(ValueError, match="missing_modality"):
        classifier(missing_modality="mean")
