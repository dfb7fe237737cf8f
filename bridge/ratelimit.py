"""Send pacing: an overall rate per channel and a rate per address (chat, recipient)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class Pacer:
    """Spaces calls at least ``1/rate`` seconds apart, per key. ``None`` rate: no limit."""

    def __init__(self, rate_per_s: float | None, max_keys: int = 100_000) -> None:
        self.interval_s = 1.0 / rate_per_s if rate_per_s else 0.0
        self.max_keys = max_keys
        self._next: dict[str, float] = {}

    async def wait(self, key: str = "") -> None:
        if not self.interval_s:
            return
        now = time.monotonic()
        due = self._next.get(key, now)
        self._next[key] = max(due, now) + self.interval_s
        if len(self._next) > self.max_keys:
            self._prune(now)
        if due > now:
            await asyncio.sleep(due - now)

    def take(self, key: str = "") -> float:
        """Go now if ``key``'s interval has passed (0.0, and the next call is spaced from
        now); else the seconds until it has, with nothing taken (for a caller that comes
        back then instead of sleeping)."""
        if not self.interval_s:
            return 0.0
        now = time.monotonic()
        due = self._next.get(key, now)
        if due > now:
            return due - now
        self._next[key] = now + self.interval_s
        if len(self._next) > self.max_keys:
            self._prune(now)
        return 0.0

    def _prune(self, now: float) -> None:
        for key in [k for k, t in self._next.items() if t < now]:
            del self._next[key]


class Budget:
    """At most ``per_minute`` calls in any 60 seconds (an optional service's spending cap)."""

    def __init__(self, per_minute: int, clock_s: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock_s = clock_s
        self.calls: deque[float] = deque()

    def take(self) -> bool:
        now = self.clock_s()
        while self.calls and now - self.calls[0] >= 60:
            self.calls.popleft()
        if len(self.calls) >= self.per_minute:
            return False
        self.calls.append(now)
        return True
