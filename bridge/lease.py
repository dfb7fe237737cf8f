"""Stream ownership: one worker at a time consumes a stream, so order is kept.

Each inbound partition (and each outbound channel stream) has a lease key holding the
owner's id with a TTL. Workers renew what they hold, take free leases up to their fair
share (partitions / live workers), and give back what is above it. Commits are fenced
by the lease (bus.commit), so a worker that lost a lease while paused writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence

from redis.asyncio import Redis

from bridge import keys
from bridge.connection import Script
from bridge.model import now_ms
from bridge.storeerrors import typed_store_errors

log = logging.getLogger("bridge.lease")

STOP_WAIT_S = 5.0  # at most this for the keeper to end, and again for the leases to be given back

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
-- KEYS: a lease (one: a lease is in its stream's slot). ARGV: its owner.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@typed_store_errors
class Leases:
    def __init__(self, redis: Redis, owner: str, streams: Sequence[str], *, ttl_s: float,
                 fair_share: bool = True, role: str = "engine", leader: bool = False) -> None:
        """With ``leader``, the first stream's lease leads: the others are taken only by its
        holder and given back when it is lost (a channel's outbound streams: one process
        paces the channel)."""
        self.redis = redis
        self.owner = owner
        self.streams = list(streams)
        self.ttl_ms = int(ttl_s * 1000)
        self.fair_share = fair_share
        self.leader = self.streams[0] if leader else None
        self.role = role
        # what the consumer reads: it changes only through `changes()` (and `drop`), so a
        # stream is never read before the consumer is told it gained it (and must first
        # read again what it had pending there)
        self.held: set[str] = set()
        self._owned: set[str] = set()  # what Redis says is ours: renewed by the keeper
        self._gained: set[str] = set()
        self._lost: set[str] = set()
        self._renew = Script(redis, _RENEW)
        self._release = Script(redis, _RELEASE)
        self._keeper: asyncio.Task[None] | None = None
        self._stopping = False

    async def _release_all(self, streams: Sequence[str]) -> None:
        for stream in streams:  # rare (a lost channel, a stop): one at a time
            await self._release(keys=[keys.lease(stream)], args=[self.owner])

    def keys_held(self) -> list[str]:
        return [keys.lease(s) for s in self.held]

    async def _share(self) -> int:
        if not self.fair_share:
            return len(self.streams)
        now = now_ms()
        workers = f"{keys.WORKERS}:{self.role}"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(workers, {self.owner: now + self.ttl_ms})
            pipe.zremrangebyscore(workers, "-inf", now)
            pipe.zcard(workers)
            _, _, alive = await pipe.execute()
        return math.ceil(len(self.streams) / max(1, int(alive)))

    async def tick(self) -> tuple[list[str], list[str]]:
        """Renew, take and give back leases; returns (streams gained, streams lost)."""
        lost: list[str] = []
        for stream in sorted(self._owned):
            if not await self._renew(keys=[keys.lease(stream)], args=[self.owner, self.ttl_ms]):
                lost.append(stream)
        self._owned.difference_update(lost)
        if self.leader is not None and self.leader not in self._owned and self._owned:
            followers = sorted(self._owned)  # the channel is another process's now
            await self._release_all(followers)
            self._owned.clear()
            lost += followers
        share = await self._share()
        gained: list[str] = []
        for stream in self.streams:
            if len(self._owned) >= share:
                break
            if stream in self._owned:
                continue
            if self.leader is not None and stream != self.leader and self.leader not in self._owned:
                break
            if await self.redis.set(keys.lease(stream), self.owner, nx=True, px=self.ttl_ms):
                self._owned.add(stream)
                gained.append(stream)
        return gained, lost

    async def give_back(self, streams: Sequence[str]) -> None:
        await self._release_all(streams)
        for stream in streams:
            self._owned.discard(stream)
            self.held.discard(stream)
            self._gained.discard(stream)

    async def keep(self) -> None:
        """Renew and take leases every third of the TTL, independent of the work loop
        (a long send or a slow step must not cost the lease). Runs until cancelled."""
        while not self._stopping:
            try:
                gained, lost = await self.tick()
                if lost:  # expired while Redis was away or frozen, or taken by another worker
                    log.warning("leases lost", extra={"role": self.role, "streams": sorted(lost)})
                self._gained.difference_update(lost)
                self._lost.update(lost)
                # lost and taken again in one tick (it lapsed while Redis was frozen): reported
                # as both, so the consumer drops what it held and starts the stream afresh
                self._gained.update(gained)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the leases may lapse; fencing keeps commits safe
                log.warning("lease renewal failed: %r", exc)
            await asyncio.sleep(self.ttl_ms / 3000)

    def drop(self, lease_key: str) -> str | None:
        """A fenced commit found ``lease_key`` owned by another worker: stop consuming its
        stream at once (the keeper would notice only at its next renewal). Returns the
        stream when it was held, None when it was dropped already."""
        stream = next((s for s in self.held | self._owned if keys.lease(s) == lease_key), None)
        if stream is not None:
            self.held.discard(stream)
            self._owned.discard(stream)
            self._gained.discard(stream)
            self._lost.add(stream)
        return stream

    def changes(self) -> tuple[set[str], set[str]]:
        """Streams gained and lost since the last call; ``held`` follows them. A stream in
        both was lost and taken again: the consumer drops what it had and starts afresh."""
        gained, lost = self._gained, self._lost
        self._gained, self._lost = set(), set()
        self.held = (self.held - lost) | gained
        return gained, lost

    async def excess(self) -> list[str]:
        """Streams held beyond the fair share (another worker joined)."""
        share = await self._share()
        return sorted(self.held)[share:] if len(self.held) > share else []

    async def release_all(self) -> None:
        # every stream, not only those we know we own: a lease taken by a command whose reply
        # was lost (cancelled mid-call at shutdown) is ours too
        await self.give_back(self.streams)
        await self.redis.zrem(f"{keys.WORKERS}:{self.role}", self.owner)

    def start(self, name: str) -> None:
        """Keep the leases (`keep`) in a task of its own until `stop`."""
        self._stopping = False
        self._keeper = asyncio.create_task(self.keep(), name=name)

    async def stop(self) -> None:
        """Stop renewing, wait until the keeper is over (it may be mid-command on a pooled
        connection), then give every lease back. Bounded: with Redis away (or a client that
        lost the cancellation) the leases expire by themselves."""
        self._stopping = True  # the keeper ends even should a client library swallow the cancel
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.wait({self._keeper}, timeout=STOP_WAIT_S)
            self._keeper = None
        try:
            async with asyncio.timeout(STOP_WAIT_S):
                await self.release_all()
        except Exception as exc:
            log.info("could not release leases", extra={"role": self.role, "error": repr(exc)})
