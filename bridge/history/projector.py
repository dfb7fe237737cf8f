"""The projector: reads the outbox streams (one per partition) into the SQL record.

Leased like the engine's partitions (one projector per outbox at a time; several
processes share them). It reads with a consumer group under one consumer name, so the
holder of a lease reads what a dead holder had read and not acknowledged as its own
pending entries; it acknowledges only after the SQL transaction committed, and the writer
applies a record once by its id, so a crash anywhere loses and doubles nothing.

While the database is away it waits (backoff up to ``history.retry_cap_s``) and tries
again; the engine goes on answering, the outbox grows, and the backlog shows in
`bridge status` and in /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

import msgspec
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge import failpoints, keys
from bridge.bus import Bus, Entry, LeaseLost
from bridge.errors import StoreUnavailable
from bridge.history import db, retention
from bridge.history.record import RefsRecord, TurnRecord, contacts_named, decode_records
from bridge.history.writer import Writer
from bridge.metrics import HISTORY_ERRORS, HISTORY_LAG, HISTORY_OLDEST_AGE, HISTORY_PROJECTED
from bridge.model import now_ms
from bridge.ops import Ops
from bridge.retry import backoff_s
from bridge.store import Store

log = logging.getLogger("bridge.history")

BACKLOG_EVERY_S = 2.0


class Projector:
    def __init__(self, *, bus: Bus, engine: AsyncEngine, worker_id: str, partitions: int, lease_ttl_s: float,
                 store: Store, batch_size: int = 500, block_ms: int = 500, retry_cap_s: float = 30.0,
                 keep_in_redis_days: float | None = None, retention_interval_s: float = 300.0,
                 queues: Sequence[str] = (), clock_ms: Callable[[], int] = now_ms) -> None:
        self.bus = bus
        self.engine = engine
        self.writer = Writer(engine)
        self.worker_id = worker_id
        self.streams = [keys.outbox(p, partitions) for p in range(partitions)]
        self.leases = bus.leases(worker_id, self.streams, ttl_s=lease_ttl_s, role="projector")
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.retry_cap_s = retry_cap_s
        self.store = store
        self.keep_in_redis_days = keep_in_redis_days
        self.retention_interval_s = retention_interval_s
        self.queues = list(queues)  # email queue streams: cases older than the retention go too
        self.clock_ms = clock_ms
        self.projected = 0
        self._own_pending: set[str] = set()  # streams whose pending entries are read first
        self._stopping = asyncio.Event()
        self._failures = 0

    def stop(self) -> None:
        self._stopping.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def run(self) -> None:
        await self._until_ready()
        self.leases.start("projector-leases")
        next_backlog = 0.0
        next_sweep = time.monotonic() + self.retention_interval_s
        try:
            while not self._stopping.is_set():
                gained, lost = self.leases.changes()
                self._own_pending |= gained
                self._own_pending -= lost
                try:
                    if time.monotonic() >= next_backlog:
                        await self._report_backlog()
                        next_backlog = time.monotonic() + BACKLOG_EVERY_S
                    if not self.leases.held:
                        await self._sleep(0.05)
                        continue
                    if time.monotonic() >= next_sweep:
                        next_sweep = time.monotonic() + self.retention_interval_s
                        await self._sweep()
                    await self._step()
                    self._failures = 0
                except LeaseLost as exc:
                    stream = self.leases.drop(exc.lease_key)
                    log.warning("projector lease lost", extra={"stream": stream})
                except StoreUnavailable as exc:
                    log.warning("redis unavailable, retrying", extra={"error": str(exc)})
                    self._own_pending |= self.leases.held  # a batch written, not acknowledged: read again
                    await self._sleep(0.5)
                except db.UNAVAILABLE as exc:
                    await self._database_down(exc)
        finally:
            await self.leases.stop()

    async def _until_ready(self) -> None:
        """The consumer groups, and the schema at its newest (retried while the database is away)."""
        for stream in self.streams:
            await self.bus.ensure_group(stream, keys.PROJECTOR_GROUP)
        while not self._stopping.is_set():
            try:
                await db.upgrade(self.engine)
                self._failures = 0
                return
            except db.UNAVAILABLE as exc:
                await self._database_down(exc)

    async def _database_down(self, exc: BaseException) -> None:
        self._failures += 1
        HISTORY_ERRORS.inc()
        wait_s = backoff_s(self._failures, base_s=0.2, cap_s=self.retry_cap_s)
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.warning("history database unavailable (%s); retrying in %.1f s", error, wait_s,
                    extra={"error": error, "retry_in_s": round(wait_s, 2)})
        self._own_pending |= self.leases.held  # what was read is read again
        with contextlib.suppress(StoreUnavailable):
            await self._report_backlog()
        await self._sleep(wait_s)

    async def _step(self) -> None:
        held = sorted(self.leases.held)
        own = [s for s in held if s in self._own_pending]
        entries: list[Entry] = []
        if own:
            entries = await self.bus.read(own, keys.PROJECTOR_GROUP, keys.PROJECTOR_CONSUMER,
                                          count=self.batch_size, block_ms=None, pending=True)
            self._own_pending -= set(own) - {e.stream for e in entries}  # those drained
        if not entries:
            entries = await self.bus.read(held, keys.PROJECTOR_GROUP, keys.PROJECTOR_CONSUMER,
                                          count=self.batch_size, block_ms=self.block_ms)
        if entries:
            await self.project(entries)

    async def project(self, entries: list[Entry]) -> None:
        """Write the entries' records to SQL, then acknowledge them (fenced by each stream's
        lease): about ``batch_size`` records per transaction (an entry holds a commit's turns)."""
        records: list[TurnRecord | RefsRecord] = []
        ops: Ops = []
        taken: list[Entry] = []
        for entry in entries:
            taken.append(entry)
            if entry.erased:  # deleted while pending (an erasure): acked with the rest
                continue
            try:
                if entry.payload is None:
                    raise ValueError("no payload field")
                records.extend(decode_records(entry.payload))
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                log.error("unreadable outbox entry dead-lettered",
                          extra={"stream": entry.stream, "entry": entry.id, "error": str(exc)})
                ops.extend(self.bus.dead_letter_ops(entry.stream, keys.PROJECTOR_GROUP, entry,
                                                    f"unreadable outbox record: {exc}"))
            if len(records) >= self.batch_size:
                await self._apply(taken, records, ops)
                records, ops, taken = [], [], []
        if taken:
            await self._apply(taken, records, ops)

    async def _apply(self, entries: list[Entry], records: list[TurnRecord | RefsRecord], ops: Ops) -> None:
        applied = await self.writer.apply(records)
        await self._take_back_erased(records)
        failpoints.hit("projector.after_sql")
        by_stream: dict[str, list[Entry]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry)
        for stream, taken in by_stream.items():
            ops.extend(self.bus.ack_ops(stream, keys.PROJECTOR_GROUP, taken))
        await self.bus.commit_by_slot(ops, leases=[keys.lease(s) for s in by_stream], owner=self.worker_id)
        self.projected += applied
        HISTORY_PROJECTED.inc(applied)

    async def _take_back_erased(self, records: Sequence[TurnRecord | RefsRecord]) -> None:
        """Delete again what the batch wrote of a contact erased meanwhile. An erasure that
        ran between the batch's read and its SQL write has deleted the rows before the
        write put them back; it marks the contact in Redis before it deletes from SQL, so
        the mark, read after the write, tells. One MGET per batch."""
        named = contacts_named(records)
        erased = await self.store.erased(sorted(named)) if named else set()
        if not erased:
            return
        conversation_ids = [i for c in erased for i in named[c].conversations]
        await self.writer.forget(conversation_ids, list(erased), [a for c in erased for a in named[c].addresses])
        log.warning("records of an erased contact deleted from SQL again",
                    extra={"contacts": len(erased), "conversations": len(conversation_ids)})

    async def _sweep(self) -> None:
        """Retention, by the holder of the first outbox's lease only (one sweeper at a time)."""
        if self.keep_in_redis_days is None or self.streams[0] not in self.leases.held:
            return
        while await retention.sweep(self.store, self.engine, now_ms=self.clock_ms(),
                                    keep_days=self.keep_in_redis_days) and not self._stopping.is_set():
            pass
        await self.store.trim_queues(self.queues, self.clock_ms() - int(self.keep_in_redis_days * retention.DAY_MS))

    async def _report_backlog(self) -> None:
        waiting, oldest = await backlog(self.bus, len(self.streams), now_ms())  # entry ids carry Redis' clock
        HISTORY_LAG.set(waiting)
        HISTORY_OLDEST_AGE.set(oldest)


async def backlog(bus: Bus, partitions: int, now: int) -> tuple[int, float]:
    """Outbox entries not yet projected, and the age (s) of the oldest of them."""
    waiting, oldest_ms = 0, None
    for p in range(partitions):
        count, first = await bus.backlog(keys.outbox(p, partitions), keys.PROJECTOR_GROUP)
        waiting += count
        if first is not None and (oldest_ms is None or first < oldest_ms):
            oldest_ms = first
    return waiting, max(0.0, (now - oldest_ms) / 1000) if oldest_ms is not None else 0.0
