"""Test-session settings: the suite runs as 2 xdist workers on 2 cores, so each worker uses one thread and
OpenMP threads sleep instead of spinning while they wait (spinning workers stall each other)."""

import os

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def native_kernels():
    """The native CPU kernels (medmoe/layers/native), built or loaded from the cache; the test is skipped with the
    reason where no C compiler is found and nothing is cached (a build that fails with a compiler is an error)."""
    from medmoe.layers import native

    reason = native.unavailable_reason()
    if reason:
        pytest.skip(reason)
    return native.load_library()
