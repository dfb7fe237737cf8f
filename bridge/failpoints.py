"""Crash points for tests: ``BRIDGE_FAILPOINTS=engine.before_commit`` makes the process
kill itself (SIGKILL, no cleanup) when it reaches that point, as a power cut would.

Names: engine.before_commit, dispatch.after_send, dispatch.before_ack, ingest.after_fetch.
Only read at import; costs one set lookup per hit.
"""

from __future__ import annotations

import os
import signal

_ACTIVE = frozenset(filter(None, os.environ.get("BRIDGE_FAILPOINTS", "").split(",")))


def hit(name: str) -> None:
    if name in _ACTIVE:
        os.kill(os.getpid(), signal.SIGKILL)
