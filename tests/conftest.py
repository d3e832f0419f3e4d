"""Test-session settings: the suite runs as 2 xdist workers on 2 cores, so each worker uses one thread and
OpenMP threads sleep instead of spinning while they wait (spinning workers stall each other)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)
