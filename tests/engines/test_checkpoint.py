import argparse
import logging
import re

import pytest
import torch
from ignite.engine import Engine, Events

from medmoe.engines import CheckpointHandler, load_weights
from medmoe.engines.checkpoint import as_flag
from medmoe.utils import atomic_torch_save, is_temp_name


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), ("false", False), ("True", True), ("0", False), (1, True)]
)
def test_as_flag_accepts_command_line_strings(value, expected):
    assert as_flag(value, "resume") is expected


def test_as_flag_rejects_other_strings():
    with pytest.raises(ValueError, match="resume: expected true or false, got 'maybe'"):
        as_flag("maybe", "resume")


def run(tmp_path, epochs, scores, resume=False):
    """Train a linear layer for ``epochs``; the evaluator reports ``scores[epoch - 1]`` as its metric."""
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def step(engine, _):
        opt.zero_grad()
        net(torch.ones(1, 2)).sum().backward()
        opt.step()

    trainer, evaluator = Engine(step), Engine(lambda e, b: None)

    @evaluator.on(Events.COMPLETED)
    def score(engine):
        engine.state.metrics["auc"] = scores[trainer.state.epoch - 1]

    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run([0]))
    handler = CheckpointHandler(tmp_path, net, opt, metric_name="auc", resume=resume)
    handler.attach(trainer, evaluator)
    trainer.run([0, 1], max_epochs=epochs)
    return net, handler


def test_best_is_kept_and_last_resumes(tmp_path):
    net, handler = run(tmp_path, 3, [0.5, 0.9, 0.7])
    assert handler.best == 0.9
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["trainer"] == {"epoch": 3, "iteration": 6} and last["best"] == 0.9
    best = torch.load(tmp_path / "model.pt", weights_only=True)
    assert not torch.equal(best["weight"], net.state_dict()["weight"])  # not the last ones
    best_epoch, _ = run(tmp_path / "two", 2, [0.5, 0.9])
    torch.testing.assert_close(best, best_epoch.state_dict())  # exactly epoch 2's weights, the best epoch

    resumed, handler = run(tmp_path, 4, [0.5, 0.9, 0.7, 0.8], resume=True)
    assert handler.best == 0.9  # 0.8 at epoch 4 does not beat the restored best
    assert torch.load(tmp_path / "last.pt", weights_only=True)["trainer"]["epoch"] == 4
    straight, _ = run(tmp_path / "fresh", 4, [0.5, 0.9, 0.7, 0.8])
    torch.testing.assert_close(resumed.state_dict(), straight.state_dict())  # 3 + 1 epochs == 4 epochs


def test_amp_loss_scale_is_saved_and_resumed(tmp_path):
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def trainer_with_scaler(scale):
        trainer = Engine(lambda e, b: None)
        trainer.scaler_ = torch.amp.GradScaler("cpu", init_scale=scale)  # as MONAI's SupervisedTrainer(amp=True)
        trainer.scaler_.scale(torch.ones(()))  # the scale tensor is created lazily
        return trainer

    first = trainer_with_scaler(1024.0)
    CheckpointHandler(tmp_path, net, opt).attach(first)
    first.run([0], max_epochs=1)
    second = trainer_with_scaler(2.0**16)
    CheckpointHandler(tmp_path, net, opt, resume=True).attach(second)
    second.run([0], max_epochs=2)
    assert second.scaler_.get_scale() == 1024.0


def test_a_metric_that_is_never_finite_is_reported(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        run(tmp_path, 2, [float("nan"), float("nan")])
    assert not (tmp_path / "model.pt").exists() and (tmp_path / "last.pt").exists()
    assert "'auc' was never finite" in caplog.text and "last.pt" in caplog.text


def test_temp_files_of_a_save_killed_mid_write_are_removed_at_the_next_start(tmp_path, caplog):
    import signal
    import subprocess
    import sys

    atomic_torch_save(tmp_path / "last.pt", {"kept": torch.ones(1)})
    kill_mid_save = (
        "import os, signal, sys\n"
        "from medmoe.utils import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half a checkpoint')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", kill_mid_save, str(tmp_path / "last.pt")], timeout=120)
    assert done.returncode == -signal.SIGKILL
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".last.pt.")]
    assert len(stale) == 1 and is_temp_name(stale[0].name)
    (tmp_path / ".last.pt.swp").write_text("an editor's file")  # hidden, but not ours: left alone
    (tmp_path / ".notes.abcdefgh.tmp").write_text("no extension of notes: not ours either")

    with caplog.at_level(logging.WARNING):
        run(tmp_path, 1, [0.5])
    assert not stale[0].exists() and f"removed {stale[0]} (17 bytes)" in caplog.text
    assert {p.name for p in tmp_path.iterdir()} == {"last.pt", "model.pt", ".last.pt.swp", ".notes.abcdefgh.tmp"}


@pytest.mark.parametrize("cut", [0, 10, 0.5])
def test_a_truncated_checkpoint_is_named(tmp_path, cut):
    full = atomic_torch_save(tmp_path / "full.pt", torch.nn.Linear(30, 30).state_dict()).read_bytes()
    path = tmp_path / "model.pt"
    path.write_bytes(
        full[: int(len(full) * cut)] if isinstance(cut, float) else full[: len(full) - cut] if cut else b""
    )
    with pytest.raises(ValueError, match=f"checkpoint {path} is truncated or not a PyTorch file"):
        load_weights(torch.nn.Linear(30, 30), path)


def test_a_pickle_payload_is_refused_with_the_file_named(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model": argparse.Namespace(a=1)}, path)  # an arbitrary object: weights_only refuses to unpickle it
    with pytest.raises(ValueError, match=f"checkpoint {path} holds objects other than tensors"):
        load_weights(torch.nn.Linear(2, 1), path)


def test_a_checkpoint_of_another_width_names_the_file_the_tensors_and_hidden_size(tmp_path, make_m4oe):
    path = atomic_torch_save(tmp_path / "model.pt", make_m4oe(hidden_size=32).state_dict())
    with pytest.raises(ValueError) as err:
        load_weights(make_m4oe(hidden_size=64), path)
    message = str(err.value)
    assert message.startswith(f"checkpoint {path} does not fit this M4oE:")
    assert "size mismatch for embedder.proj.bias: (64,) in the checkpoint, (128,) here" in message
    assert "hidden_size (a width of 32 in the checkpoint, 64 here" in message


@pytest.mark.parametrize(("trained", "here"), [("retriever", "learned"), ("learned", "zero"), ("zero", "retriever")])
def test_a_checkpoint_of_another_missing_view_fill_names_missing_modality(tmp_path, make_m4oe, trained, here):
    path = atomic_torch_save(tmp_path / "last.pt", {"model": make_m4oe(missing_modality=trained).state_dict()})
    with pytest.raises(ValueError, match=f"missing_modality \\('{trained}' in the checkpoint, '{here}' here\\)"):
        load_weights(make_m4oe(missing_modality=here), path)


def test_a_checkpoint_with_other_classes_names_tasks_and_resume_names_last_pt(tmp_path, make_m4oe):
    path = atomic_torch_save(tmp_path / "model.pt", make_m4oe(tasks={"t": 3}).state_dict())
    with pytest.raises(ValueError, match=r"head.heads.t.2.bias: \(3,\) in the checkpoint, \(2,\) here(.|\n)*tasks"):
        load_weights(make_m4oe(), path)
    net = torch.nn.Linear(2, 1)
    atomic_torch_save(
        tmp_path / "last.pt", {"model": torch.nn.Linear(3, 1).state_dict(), "optimizer": {}, "trainer": {}}
    )
    handler = CheckpointHandler(tmp_path, net, torch.optim.SGD(net.parameters(), lr=0.1), resume=True)
    trainer = Engine(lambda e, b: None)
    handler.attach(trainer)
    with pytest.raises(ValueError, match=f"checkpoint {tmp_path / 'last.pt'} does not fit this Linear"):
        trainer.run([0], max_epochs=1)


@pytest.mark.parametrize(
    ("trained", "hint"),
    [
        ({"msoe_experts": 4}, "the number of experts (msoe_experts)"),
        ({"mlp_dim": 128}, "mlp_dim (the experts' hidden width: 128 in the checkpoint, 64 here)"),
        ({"tasks": {"t": 2, "u": 3}}, "tasks (the tasks or their numbers of classes)"),
    ],
)
def test_other_options_are_named(tmp_path, make_m4oe, trained, hint):
    path = atomic_torch_save(tmp_path / "model.pt", make_m4oe(**trained).state_dict())
    with pytest.raises(ValueError, match="probably: " + re.escape(hint) + "\n"):
        load_weights(make_m4oe(), path)


def test_a_checkpoint_of_another_model_says_so(tmp_path, make_m4oe):
    path = atomic_torch_save(tmp_path / "model.pt", torch.nn.Linear(2, 1).state_dict())
    with pytest.raises(ValueError, match=r"only in the checkpoint: bias, weight(.|\n)*network_def \(another model"):
        load_weights(make_m4oe(), path)


def test_companion_files_come_with_the_first_checkpoint_and_not_before(tmp_path):
    written = []

    def companion(path):
        written.append(path)
        atomic_torch_save(path, {"prep": torch.zeros(1)})

    def train(save_dir, fail_at=None, epochs=1):
        net = torch.nn.Linear(2, 1)

        def step(engine, _):
            if engine.state.iteration == fail_at:
                raise ValueError("a bad file found while caching")

        trainer = Engine(step)
        handler = CheckpointHandler(
            save_dir,
            net,
            torch.optim.SGD(net.parameters(), lr=0.1),
            companion_files={"prep.pt": companion, tmp_path / "abs.pt": companion},
        )
        handler.attach(trainer)
        trainer.run([0, 1], max_epochs=epochs)

    with pytest.raises(ValueError, match="bad file"):
        train(tmp_path / "failed", fail_at=2)  # the last iteration of epoch 1
    assert not (tmp_path / "failed").exists() and written == []
    train(tmp_path / "ok", epochs=2)
    assert written == [tmp_path / "ok" / "prep.pt", tmp_path / "abs.pt"]  # once, at the end of epoch 1
    assert {p.name for p in (tmp_path / "ok").iterdir()} == {"prep.pt", "last.pt", "model.pt"}


def _noisy_run(save_dir, max_epochs, resume=False, fail_at=None):
    """Dropout, a shuffling DataLoader, a MONAI random transform and NumPy / Python draws in every step."""
    import random

    import numpy as np
    from monai.data import DataLoader, Dataset
    from monai.transforms import RandGaussianNoised
    from monai.utils import set_determinism

    set_determinism(seed=0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    data = [{"x": torch.full((4,), i / 12), "y": torch.tensor([i % 2], dtype=torch.float32)} for i in range(12)]
    loader = DataLoader(Dataset(data, RandGaussianNoised("x", prob=1.0, std=0.1)), batch_size=4, shuffle=True)

    def step(engine, batch):
        if engine.state.iteration == fail_at:
            raise KeyboardInterrupt("killed")
        opt.zero_grad()
        scale = 1.0 + random.random() + float(np.random.rand())
        loss = torch.nn.functional.mse_loss(net(batch["x"]), batch["y"]) * scale
        loss.backward()
        opt.step()

    trainer = Engine(step)
    CheckpointHandler(save_dir, net, opt, resume=resume).attach(trainer)
    trainer.run(loader, max_epochs=max_epochs)
    return net.state_dict()


def test_resume_after_a_crash_mid_epoch_is_bit_identical_to_the_uninterrupted_run(tmp_path):
    straight = _noisy_run(tmp_path / "straight", 3)
    with pytest.raises(KeyboardInterrupt):
        _noisy_run(tmp_path / "crashed", 3, fail_at=5)  # epoch 2 of 3 iterations each: last.pt is epoch 1's
    assert torch.load(tmp_path / "crashed" / "last.pt", weights_only=True)["trainer"]["epoch"] == 1
    resumed = _noisy_run(tmp_path / "crashed", 3, resume=True)
    for key in straight:
        assert torch.isfinite(straight[key]).all() and torch.equal(resumed[key], straight[key]), key
    fresh = torch.load(tmp_path / "crashed" / "last.pt", weights_only=True)
    assert fresh["trainer"]["epoch"] == 3 and len(fresh["random"]["transforms"]) >= 1
