"""How long tests wait for what they expect: one setting for a slow or busy machine.

Every deadline a test waits on (a condition, a port, a process, a mail) is multiplied by
``BRIDGE_TEST_TIME_SCALE`` (default 1; CI raises it). Waits return as soon as the
condition holds, so a larger scale only lengthens a failing run, never a passing one.
"""

from __future__ import annotations

import os


def _scale() -> float:
    raw = os.environ.get("BRIDGE_TEST_TIME_SCALE", "1")
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"BRIDGE_TEST_TIME_SCALE must be a number, got {raw!r}") from None
    return max(1.0, value)


TIME_SCALE = _scale()


def scaled(seconds: float) -> float:
    """``seconds`` stretched for this machine (never shortened)."""
    return seconds * TIME_SCALE
