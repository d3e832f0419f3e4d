"""Precision option: autocast at bf16 / fp16 around the network call, fp32 outputs, the right defaults and errors."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer

from medmoe.engines import AutocastInferer, check_precision, default_precision
from medmoe.nets import ModelOutput


class Tiny(torch.nn.Module):
    """Linear classifier on batch["x"]; records the dtype its layer computed in."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 3)
        self.seen: list[torch.dtype] = []

    def forward(self, batch):
        logits = self.linear(batch["x"])
        self.seen.append(logits.dtype)
        return ModelOutput({"y": logits}, aux_losses={"norm": logits.square().mean()}, interpret={"n": 1})


def test_defaults_follow_the_device(monkeypatch):
    assert default_precision("cpu") == "fp32" and default_precision(torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert default_precision("cuda") == "bf16" and default_precision(torch.device("cuda", 1)) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert default_precision("cuda:0") == "fp16"


def test_bad_precision_is_named(monkeypatch):
    with pytest.raises(ValueError, match=r"one of fp32, bf16, fp16 \(bundle option --precision\), got 'amp'"):
        check_precision("amp", "cpu")
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        AutocastInferer("fp16", "cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(ValueError, match="Tesla V100 has no bfloat16 support; use --precision fp16"):
        check_precision("bf16", "cuda")
    assert check_precision("bf16", "cpu") == "bf16" and check_precision("fp32", "cuda") == "fp32"


def test_bf16_autocast_on_cpu_returns_fp32_outputs():
    torch.manual_seed(0)
    net, batch = Tiny(), {"x": torch.randn(4, 8)}
    full = AutocastInferer("fp32", "cpu")(batch, net)
    half = AutocastInferer("bf16", "cpu")(batch, net)
    assert net.seen == [torch.float32, torch.bfloat16]  # the layer ran in bf16 ...
    assert isinstance(half, ModelOutput) and half["y"].dtype == torch.float32  # ... its outputs come back in fp32
    assert half.aux_losses["norm"].dtype == torch.float32 and half.interpret == {"n": 1}
    assert not torch.equal(half["y"], full["y"])  # bf16 rounding (8-bit mantissa) ...
    torch.testing.assert_close(half["y"], full["y"], rtol=0.05, atol=0.05)  # ... of the same result


def test_trainer_trains_a_tiny_epoch_in_bf16_on_cpu_without_a_scaler():
    torch.manual_seed(0)
    net = Tiny()
    data = [{"x": torch.randn(4, 8), "y": torch.randint(0, 3, (4,))} for _ in range(3)]
    before = net.linear.weight.detach().clone()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=lambda out, target: torch.nn.functional.cross_entropy(out["y"], target),
        inferer=AutocastInferer("bf16", "cpu"),
        prepare_batch=lambda batch, device, non_blocking, **kw: (batch, batch["y"]),
        amp=False,  # what the bundles pass for bf16: MONAI's amp flag only brings fp16's GradScaler
        decollate=False,
    )
    trainer.run()
    assert net.seen == [torch.bfloat16] * 3 and trainer.scaler is None
    assert torch.isfinite(trainer.state.output["loss"]) and trainer.state.output["loss"].dtype == torch.float32
    assert not torch.equal(before, net.linear.weight) and net.linear.weight.dtype == torch.float32
