"""Crash points for tests: ``BRIDGE_FAILPOINTS=engine.before_commit`` makes the process
kill itself (SIGKILL, no cleanup) when it reaches that point, as a power cut would;
``dispatch.after_send@50`` at the 50th time it gets there.

Names: engine.before_commit, dispatch.after_send (or dispatch.after_send:<channel>, that
channel's sends only), dispatch.after_record, ingest.after_fetch,
projector.after_sql (the SQL transaction committed, the outbox entries not yet acknowledged).
Only read at import; costs nothing when none is set.
"""

from __future__ import annotations

import os
import signal

_ACTIVE: dict[str, int] = {}  # name -> hits left before the kill
for _spec in filter(None, os.environ.get("BRIDGE_FAILPOINTS", "").split(",")):
    _name, _, _count = _spec.partition("@")
    _ACTIVE[_name] = int(_count or 1)


def hit(name: str, scope: str = "") -> None:
    """At ``name``; with ``scope`` (a channel), ``name:scope`` is that point too."""
    if not _ACTIVE:
        return
    for point in (name, f"{name}:{scope}") if scope else (name,):
        if point in _ACTIVE:
            _ACTIVE[point] -= 1
            if _ACTIVE[point] <= 0:
                os.kill(os.getpid(), signal.SIGKILL)
