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
from typing import Any, Protocol

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

_TAKE = """
-- KEYS: a free lease. ARGV: its owner-to-be, its TTL (ms).
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
"""

_RELEASE = """
-- KEYS: a lease (one: a lease is in its stream's slot). ARGV: its owner.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RunScript(Protocol):
    """Runs ``script`` once per (declared keys, args) call, in one round trip (`Bus.run_script`)."""

    async def __call__(self, script: Script, calls: list[tuple[list[str], list[Any]]], *,
                       replicated: bool = True) -> list[Any]: ...


@typed_store_errors
class Leases:
    def __init__(self, redis: Redis, owner: str, streams: Sequence[str], *, ttl_s: float, run_script: RunScript,
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
        self._take = Script(redis, _TAKE)
        self._run_script = run_script
        self._release = Script(redis, _RELEASE)
        self._keeper: asyncio.Task[None] | None = None
        self._stopping = False

    async def _release_all(self, streams: Sequence[str]) -> None:
        if streams:
            await self._run_script(self._release, [([keys.lease(s)], [self.owner]) for s in streams],
                                   replicated=False)

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
        lost = await self._renew_owned()
        self._owned.difference_update(lost)
        if self.leader is not None and self.leader not in self._owned and self._owned:
            followers = sorted(self._owned)  # the channel is another process's now
            await self._release_all(followers)
            self._owned.clear()
            lost += followers
        gained = await self._take_free(await self._share())
        return gained, lost

    async def _renew_owned(self) -> list[str]:
        """Renew every lease held, in one round trip: one at a time, a tick on a busy event
        loop took a scheduling delay per lease, and the last ones lapsed. The streams whose
        lease is no longer ours."""
        owned = sorted(self._owned)
        if not owned:
            return []
        renewed = await self._run_script(self._renew, [([keys.lease(s)], [self.owner, self.ttl_ms]) for s in owned],
                                         replicated=False)
        return [stream for stream, ok in zip(owned, renewed, strict=True) if not ok]

    async def _take_free(self, share: int) -> list[str]:
        """Take free leases, in the streams' order, until ``share`` are held: the ones
        needed in one round trip, again with the next ones for those another worker held.
        A leader's lease is taken alone first; without it nothing else is."""
        gained: list[str] = []
        tried: set[str] = set()
        while len(self._owned) < share:
            if self.leader is not None and self.leader not in self._owned:
                wanted = [] if self.leader in tried else [self.leader]
            else:
                wanted = [s for s in self.streams if s not in self._owned and s not in tried][:share - len(self._owned)]
            if not wanted:
                break
            tried.update(wanted)
            taken = await self._run_script(self._take, [([keys.lease(s)], [self.owner, self.ttl_ms]) for s in wanted],
                                           replicated=False)
            for stream, ok in zip(wanted, taken, strict=True):
                if ok:
                    self._owned.add(stream)
                    gained.append(stream)
        return gained

    async def give_back(self, streams: Sequence[str]) -> None:
        await self._release_all(streams)
        for stream in streams:
            self._owned.discard(stream)
            self.held.discard(stream)
            self._gained.discard(stream)

    async def keep(self) -> None:
        """Renew and take leases every third of the TTL, independent of the work loop
        (a long send or a slow step must not cost the lease), counted from the start of
        each tick so a slow one does not stretch the period. Runs until cancelled."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
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
            await asyncio.sleep(max(0.0, self.ttl_ms / 3000 - (loop.time() - started)))

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
