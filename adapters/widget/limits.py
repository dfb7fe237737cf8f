"""Per-key token buckets (message floods, login guessing) and connection counters."""

from __future__ import annotations

import time
from collections import Counter


class Buckets:
    """Token buckets by key: ``rate_per_s`` refill, ``burst`` capacity.

    Full buckets are forgotten when the map grows, so memory stays bounded by the keys
    that are actually being limited.
    """

    def __init__(self, rate_per_s: float, burst: int, *, max_keys: int = 100_000) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.max_keys = max_keys
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, at monotonic s)

    def _level(self, key: str, now_s: float) -> float:
        tokens, at_s = self._state.get(key, (self.burst, now_s))
        return min(self.burst, tokens + (now_s - at_s) * self.rate_per_s)

    def take(self, key: str) -> float:
        """0.0 when a token was taken, else the seconds until one is available."""
        now_s = time.monotonic()
        tokens = self._level(key, now_s)
        if tokens >= 1.0:
            self._state[key] = (tokens - 1.0, now_s)
            if len(self._state) > self.max_keys:
                self._prune(now_s)
            return 0.0
        self._state[key] = (tokens, now_s)
        return (1.0 - tokens) / self.rate_per_s

    def refund(self, key: str) -> None:
        """Give back a token taken for work that was then refused elsewhere."""
        now_s = time.monotonic()
        self._state[key] = (min(self.burst, self._level(key, now_s) + 1.0), now_s)

    def _prune(self, now_s: float) -> None:
        for key in [k for k in self._state if self._level(k, now_s) >= self.burst]:
            del self._state[key]


class Counts:
    """Open connections by key, with a ceiling."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: Counter[str] = Counter()

    def acquire(self, key: str) -> bool:
        if self._counts[key] >= self.limit:
            return False
        self._counts[key] += 1
        return True

    def release(self, key: str) -> None:
        self._counts[key] -= 1
        if self._counts[key] <= 0:
            del self._counts[key]

    def __getitem__(self, key: str) -> int:
        return self._counts.get(key, 0)
