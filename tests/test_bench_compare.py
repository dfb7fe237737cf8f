"""`python -m bench.compare`: two versions of the code run alternately, their means side by
side (a real run of `bench.stages` on a private redis-server, kept small)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.compare import figures

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_two_versions_run_alternately_and_their_means_side_by_side() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.compare", "HEAD", "--rounds", "2", "--n", "2000", "--stages"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    order = [line.split()[2] for line in lines if line.startswith("round ")]
    assert order == ["HEAD", ".", "HEAD", "."]  # alternating, the working tree last
    header = next(line for line in lines if line.startswith("mean of 2 rounds"))
    assert header.split()[4:7] == ["HEAD", ".", "change"]
    # "engine python µs   41.50   40.20   -3.1%   (40.1-42.9, 39.8-40.6)"
    means = {line.rsplit(None, 5)[0]: line.rsplit(None, 5)[1:4] for line in lines[lines.index(header) + 1:]}
    assert set(means) == {f"{stage} {cpu} µs" for stage in ("publish", "engine", "dispatch")
                          for cpu in ("python", "redis")}
    assert all(float(before.replace(",", "")) > 0 and float(after.replace(",", "")) > 0
               for before, after, _ in means.values())
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True,
                               check=True).stdout
    assert "bench-compare-" not in worktrees  # the temporary checkout is gone


def test_a_bench_run_s_figures_include_the_bridge_s_cpu_over_the_raw_loop_s() -> None:
    """What a round of `python -m bench` gives the comparison: the bridge's figures, and its
    CPU per message over the raw loop's in the same run (which discounts the machine's
    speed). The output is a real run's (2026-12-05), cut to the rows read."""
    output = """
                                   raw redis-py         bridge
throughput (msg/s)                       46,781         27,214
python CPU per message (us)                23.4           36.2
redis-server CPU per message (us)            6.1           16.8
redis round trips per message              0.03           0.05
bridge/raw throughput ratio: 0.58
"""
    found = figures(output, stages=False)
    assert {k: found[k] for k in ("bridge msg/s", "raw msg/s", "python µs", "redis µs", "ratio")} == {
        "bridge msg/s": 27_214, "raw msg/s": 46_781, "python µs": 36.2, "redis µs": 16.8, "ratio": 0.58}
    assert found["redis ×raw"] == pytest.approx(16.8 / 6.1)
    assert found["python ×raw"] == pytest.approx(36.2 / 23.4)
