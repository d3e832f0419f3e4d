"""Importing the library (metrics, engines, plots) and drawing a plot never switches matplotlib's backend."""

import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent(
    """
    import matplotlib
    matplotlib.use("svg")  # what a notebook or GUI session would have chosen
    import numpy as np
    import medmoe.engines, medmoe.interpret, medmoe.metrics
    from medmoe.metrics.plots import plot_overlay
    assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
    truth = np.zeros((8, 8), int); truth[2:6, 2:6] = 1
    plot_overlay(np.roll(truth, 1, 0), truth, (1.0, 1.0), "case", __import__("pathlib").Path(r"{out}"))
    assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
    print("backend", matplotlib.get_backend())
    """
)


def test_importing_and_plotting_keep_the_users_backend(tmp_path):
    out = tmp_path / "overlay.png"
    run = subprocess.run([sys.executable, "-c", _SCRIPT.format(out=out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "backend svg" in run.stdout
    assert out.read_bytes()[:4] == b"\x89PNG"
