"""`python -m bench.floor`: the bridge's stream mechanics alone beside the raw loop (a real
run on a private redis-server, kept small)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_skeleton_delivers_every_message_and_prints_its_ratio_last() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.floor", "--n", "2000", "--repeat", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    row = re.fullmatch(r"run 1\s+([\d,]+)\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", lines[-2])
    assert row is not None, done.stdout
    raw, skeleton, python_us, redis_us, ratio = (float(v.replace(",", "")) for v in row.groups())
    assert raw > 0 and skeleton > 0 and python_us > 0 and redis_us > 0
    assert abs(ratio - skeleton / raw) < 0.01
    assert re.fullmatch(r"skeleton/raw throughput ratio: \d+\.\d\d", lines[-1])
