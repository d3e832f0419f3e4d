"""The traced inference wrapper: plain PyTorch operators only, and a trace made on one pattern of missing views
gives the eager outputs on other patterns (the MoE-Retriever fills every pair under tracing)."""

from __future__ import annotations

import pytest
import torch

from medmoe.export import InferenceWrapper
from medmoe.export.exporter import export_network
from medmoe.layers.native import fused
from medmoe.nets import create_model

MODALITIES = ["cc", "mlo", "s2d_cc"]
TINY = dict(
    modalities=MODALITIES,
    tasks={"density": 4, "risk": 2},
    image_size=16,
    patch_size=8,
    hidden_size=16,
    mlp_dim=16,
    num_heads=2,
    msoe_experts=2,
    mtoe_experts=2,
    fusion_experts=2,
    missing_modality="retriever",
    retriever_kwargs={"num_supports": 2, "num_candidates": 2, "num_shared": 1, "top_k": 2, "capacity": 8},
)


def batch(mask: list[list[bool]], seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {k: torch.rand(len(mask), 1, 16, 16, generator=g) for k in MODALITIES}
    out["modality_mask"] = torch.tensor(mask)
    out["id"] = [f"{seed}-{i}" for i in range(len(mask))]
    return out


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    net = create_model("m4oe", **TINY)
    net.train()
    with torch.no_grad():  # fill the support bank with training samples
        net(batch([[True, True, True], [True, False, True], [True, True, False], [True, True, True]], seed=1))
    return net.eval()


def inputs(b: dict) -> tuple[torch.Tensor, ...]:
    return (*(b[m] for m in MODALITIES), b["modality_mask"])


def test_a_trace_on_one_missing_pattern_holds_for_others(network, monkeypatch) -> None:
    fused_calls = []
    apply = fused.FusedSoftMoE.apply
    monkeypatch.setattr(fused.FusedSoftMoE, "apply", lambda *args: fused_calls.append(1) or apply(*args))
    with torch.no_grad():
        network(batch([[True, True, True]], seed=6))
    assert fused_calls  # eager runs the fused Soft MoE here, tracing must not
    traced_on = batch([[True, True, False], [True, True, True], [False, True, True]], seed=2)
    other = batch([[True, False, False], [True, True, True], [True, True, True], [False, True, False]], seed=3)
    with torch.no_grad():
        names = list(network(traced_on))
        wrapper = InferenceWrapper(network, names)
        fused_calls.clear()
        traced = torch.jit.trace(wrapper, inputs(traced_on), check_trace=False)
        assert not fused_calls  # plain PyTorch Soft MoE in the graph: no custom autograd function, no native kernel
        for b in (traced_on, other, batch([[True] * 3] * 2, seed=4)):
            eager = network(b)
            got = traced(*inputs(b))
            for name, value in zip(names, got, strict=True):
                assert torch.allclose(value, eager[name], atol=1e-5)


def test_the_wrapper_names_its_inputs_when_given_too_few(network) -> None:
    wrapper = InferenceWrapper(network, ["density", "risk"])
    with pytest.raises(ValueError, match="3 modality tensors \\(cc, mlo, s2d_cc\\) and modality_mask, got 2"):
        wrapper(torch.zeros(1, 1, 16, 16), torch.ones(1, 3, dtype=torch.bool))


def test_an_export_that_differs_from_eager_is_refused_and_nothing_written(network, tmp_path) -> None:
    class Sampled(torch.nn.Module):  # random supports per call: a trace cannot reproduce them
        def __init__(self, inner):
            super().__init__()
            self.inner, self.modalities = inner, inner.modalities

        def forward(self, b):
            out = self.inner(b)
            return type(out)({k: v + torch.rand_like(v) for k, v in out.items()})

    with pytest.raises(ValueError, match="differs from the eager model"):
        export_network(Sampled(network), [batch([[True, True, False]], seed=5)], tmp_path, formats=("ts",))
    assert not list(tmp_path.iterdir())
