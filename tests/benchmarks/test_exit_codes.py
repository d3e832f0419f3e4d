"""benchmarks/exit_codes.py: a bad file found while caching ends the run with exit 1 and its message, no abort."""

import pytest

pytestmark = pytest.mark.slow


def test_a_bad_file_found_while_caching_exits_1_with_the_message_and_leaves_no_outputs(load_benchmark, tmp_path):
    bench = load_benchmark("exit_codes")
    csv, bad = bench.bad_cohort(tmp_path / "demo")
    result = bench.count(csv, bad, "medmoe", runs=2, work=tmp_path)
    assert result["exit_codes"] == {"1": 2}  # never -6 (SIGABRT, "terminate called without an active exception")
    assert result["runs_with_message"] == 2 and result["runs_with_terminate_called"] == 0
    assert result["runs_leaving_outputs"] == 0  # nothing in models/ or eval/ (tabular_preprocessing.json included)
