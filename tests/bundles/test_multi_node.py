"""multi_gpu_train.json across two "nodes": two torchrun launches of one gloo process each, c10d rendezvous."""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from bundle_runner import REPO

from medmoe.data import make_embed_demo

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_one_process_each_train_one_epoch(tmp_path: Path) -> None:
    cohort = make_embed_demo(tmp_path / "demo", num_exams=24, image_size=(48, 40))
    folder = REPO / "bundles" / "embed_m4oe" / "configs"
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    port = _free_port()
    launch = [torchrun, "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
              f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=medmoe-test", "--max_restarts=0"]  # fmt: skip
    bundle = ["-m", "monai.bundle", "run", "--config_file",
              f"['{folder / 'train.json'}','{folder / 'multi_gpu_train.json'}']", "--bundle_root", str(tmp_path / "b"),
              "--cohort_csv", str(cohort), "--image_size", "[32, 32]", "--batch_size", "4", "--device", "cpu",
              "--max_epochs", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONUNBUFFERED": "1"}
    nodes = [
        subprocess.Popen(
            [*launch, *bundle], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-4000:]
    state = torch.load(tmp_path / "b" / "models" / "last.pt", map_location="cpu", weights_only=True)
    train_rows = int((pd.read_csv(cohort)["split"] == "train").sum())
    assert state["trainer"]["epoch"] == 1
    per_rank = math.ceil(train_rows / 2)  # DistributedSampler, even_divisible: each node's rank sees half the exams
    assert state["trainer"]["iteration"] == math.ceil(per_rank / 4)
