"""scripts/run.sh as a user runs it, in a copy of the checkout whose setup step is a stub
(the real one installs packages), so what it decides is seen without a network."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

STUB_SETUP = """#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")/.."
echo setup >>setup-runs
mkdir -p .venv/bin
printf '#!/usr/bin/env bash\\necho "bridge $*"\\n' >.venv/bin/bridge
chmod +x .venv/bin/bridge
"""


def checkout(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "run.sh", tmp_path / "scripts" / "run.sh")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    setup = tmp_path / "scripts" / "setup.sh"
    setup.write_text(STUB_SETUP)
    setup.chmod(0o755)
    return tmp_path


def run(root: Path, *args: str, **env: str) -> str:
    result = subprocess.run([str(root / "scripts" / "run.sh"), *args], capture_output=True, text=True, timeout=60,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


def setups(root: Path) -> int:
    runs = root / "setup-runs"
    return len(runs.read_text().split()) if runs.exists() else 0


def test_run_sh_installs_only_when_the_venv_is_out_of_date(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:  # run.sh would (rightly) set up again for it
        pytest.skip("redis-server is not installed")
    root = checkout(tmp_path)
    assert run(root, "--port", "9000") == "bridge run --port 9000\n"
    assert setups(root) == 1  # a fresh checkout: set up
    assert run(root) == "bridge run\n"
    assert setups(root) == 1  # up to date: straight to `bridge run`
    run(root, EXTRAS="test")
    assert setups(root) == 2  # other extras
    with (root / "pyproject.toml").open("a") as f:
        f.write("\n# a new dependency\n")
    run(root, EXTRAS="test")
    assert setups(root) == 3  # pyproject.toml changed
    run(root, EXTRAS="test", FORCE_SETUP="1")
    assert setups(root) == 4
    (root / ".venv" / "bin" / "bridge").unlink()
    run(root, EXTRAS="test")
    assert setups(root) == 5  # the venv lost its bridge
