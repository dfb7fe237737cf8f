"""Quotas that hold across every bridge process: counters in Redis (``ctx.state``) that
expire with their window. A process-local bucket (`limits.Buckets`) paces one socket;
these bound what one address, or everyone together, may store in a window."""

from __future__ import annotations

import math
import time

from bridge.adapter import StateStore

_PREFIX = "quota:"


class Quota:
    """At most ``limit`` per ``window_s`` for each key, in fixed windows (a burst across a
    window's edge may reach twice the limit over ``window_s``)."""

    def __init__(self, state: StateStore, name: str, limit: int, window_s: float) -> None:
        self.state = state
        self.name = name
        self.limit = limit
        self.window_s = window_s

    def _key(self, key: str, now_s: float) -> str:
        return f"{_PREFIX}{self.name}:{int(now_s // self.window_s)}:{key}"

    def _wait_s(self, now_s: float) -> float:
        return self.window_s - now_s % self.window_s

    async def take(self, key: str = "", amount: int = 1) -> float:
        """0.0 when ``amount`` fitted (and was counted), else the seconds until the window ends."""
        now_s = time.time()
        used = await self.state.incr(self._key(key, now_s), amount, ttl_s=math.ceil(self.window_s) + 60)
        return 0.0 if used <= self.limit else self._wait_s(now_s)

    async def over(self, key: str = "") -> float:
        """Like `take` without counting: 0.0 while under the limit."""
        now_s = time.time()
        (used,) = await self.state.counts([self._key(key, now_s)])
        return 0.0 if used < self.limit else self._wait_s(now_s)

    async def add(self, key: str = "", amount: int = 1) -> None:
        now_s = time.time()
        await self.state.incr(self._key(key, now_s), amount, ttl_s=math.ceil(self.window_s) + 60)


class StoredBytes:
    """Bytes stored for ``keep_s`` (uploads), at most ``limit`` at any time.

    Files expire on their own, so the bytes still stored are those written in the last
    ``keep_s``: counted in ``buckets`` slices of that span, the sum of the last
    ``buckets + 1`` slices is an upper bound of what is stored now.
    """

    def __init__(self, state: StateStore, name: str, limit: int, keep_s: float, buckets: int = 30) -> None:
        self.state = state
        self.name = name
        self.limit = limit
        self.slice_s = keep_s / buckets
        self.buckets = buckets
        self.ttl_s = math.ceil(keep_s + 2 * self.slice_s)

    def _key(self, index: int) -> str:
        return f"{_PREFIX}{self.name}:{index}"

    async def take(self, amount: int) -> bool:
        """Count ``amount`` more bytes; False (and nothing counted) when they do not fit."""
        now = int(time.time() // self.slice_s)
        used = await self.state.incr(self._key(now), amount, ttl_s=self.ttl_s)
        earlier = await self.state.counts([self._key(now - i) for i in range(1, self.buckets + 1)])
        if used + sum(earlier) <= self.limit:
            return True
        await self.state.incr(self._key(now), -amount, ttl_s=self.ttl_s)
        return False
