"""Where one consumer of a group reads next, so each stream keeps its order through
crashes, lost replies and takeovers. The engine (many partitions) and each dispatcher
(one outbound stream) read through it.

1. Its own unacked entries first, when told to look (`reread`): a read reply that was
   lost (redis-py retried the XREADGROUP), a commit that failed, a lease lost and won back.
2. Then, for streams just taken over (`gained`), the entries the previous owner read and
   never acked, claimed once idle ``min_idle_ms`` (XAUTOCLAIM), until no other consumer
   holds any.
3. Then new entries, blocking up to ``block_ms``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from bridge.bus import Bus, Entry

# what a claimed batch passes through before it is handled (the engine drops poison pills)
Vet = Callable[[str, list[Entry]], Awaitable[list[Entry]]]


class GroupCursor:
    def __init__(self, bus: Bus, group: str, consumer: str, *, count: int, block_ms: int, min_idle_ms: int,
                 sleep: Callable[[float], Awaitable[Any]], vet: Vet | None = None) -> None:
        self.bus = bus
        self.group = group
        self.consumer = consumer
        self.count = count
        self.block_ms = block_ms
        self.min_idle_ms = min_idle_ms
        self.sleep = sleep
        self.vet = vet
        self.recovering: set[str] = set()  # streams whose previous owner's entries come first
        self.reread_own = False
        self._own_after: dict[str, str] = {}  # paging through our own pending entries
        self.replayed = False  # the last batch may hold entries delivered before (check what was done)

    def gained(self, streams: Iterable[str]) -> None:
        self.recovering.update(streams)

    def lost(self, streams: Iterable[str]) -> None:
        self.recovering.difference_update(streams)

    def reread(self) -> None:
        self.reread_own = True
        self._own_after.clear()

    async def next(self, streams: Iterable[str], *, block_ms: int | None = None) -> list[Entry]:
        """The next entries of ``streams``; a read of new ones blocks up to ``block_ms``
        (default: the cursor's)."""
        held = sorted(streams)
        self.replayed = True
        if self.reread_own:
            entries = await self.bus.read(held, self.group, self.consumer, count=self.count, block_ms=None,
                                          pending=True, after=self._own_after)
            if entries:
                for entry in entries:
                    self._own_after[entry.stream] = entry.source
                return entries
            self.reread_own = False
            self._own_after.clear()
        block_ms = self.block_ms if block_ms is None else block_ms
        if self.recovering & set(held):
            claimed = await self._recover(held)
            if claimed:
                return claimed
            # the previous owner's entries are not idle long enough yet: the other streams
            # go on meanwhile, and the claim is tried again soon
            held = [s for s in held if s not in self.recovering]
            block_ms = min(block_ms, max(10, self.min_idle_ms // 4))
            if not held:
                await self.sleep(block_ms / 1000)
                return []
        self.replayed = False
        return await self.bus.read(held, self.group, self.consumer, count=self.count, block_ms=block_ms)

    async def _recover(self, streams: list[str]) -> list[Entry]:
        for stream in sorted(self.recovering & set(streams)):
            claimed = await self.bus.reclaim(stream, self.group, self.consumer, min_idle_ms=self.min_idle_ms,
                                             count=self.count)
            if claimed:
                return await self.vet(stream, claimed) if self.vet is not None else claimed
            if await self.bus.pending_count(stream, self.group, besides=self.consumer) == 0:
                self.recovering.discard(stream)
        return []
