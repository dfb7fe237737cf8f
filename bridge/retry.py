"""One retry policy for sends and reconnect loops: jittered exponential backoff, capped."""

from __future__ import annotations

import random


def backoff_s(attempt: int, *, base_s: float = 1.0, factor: float = 2.0, cap_s: float = 60.0) -> float:
    """Delay before retry number ``attempt`` (1-based): full jitter below the capped curve."""
    ceiling = min(cap_s, base_s * factor ** max(0, attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


class Backoff:
    """Stateful helper for loops: ``await asyncio.sleep(b.next())`` after each failure,
    ``b.reset()`` after a success."""

    def __init__(self, *, base_s: float = 0.5, cap_s: float = 30.0) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0

    def next(self) -> float:
        self.attempt += 1
        return backoff_s(self.attempt, base_s=self.base_s, cap_s=self.cap_s)

    def reset(self) -> None:
        self.attempt = 0
