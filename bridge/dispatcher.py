"""The dispatcher: reads each channel's outbound streams and delivers through its adapter.

A channel has one outbound stream per engine partition (each written by its partition's
commit, in its slot: a commit's messages to it are one entry, each sent on its own; the
entry is acked once all are recorded, `Bus.ack_ops`) and one of its own (what
older bridges wrote; dead letters' release marks). The holder of the channel's own
stream's lease takes the others, so one process paces a channel.

Sends are ordered per *lane* (a customer's address; a conversation, for agent-side
events) and independent across lanes. Lanes with a message to send queue for up to
``max_in_flight`` workers per channel; a worker sends the head of the lane it takes, then
puts the lane back at the queue's end (lanes take turns). A lane whose head must wait (a
429's Retry-After, backoff after an error, the address's pace) is scheduled for that time
and holds no worker meanwhile; a send that hangs (up to the adapter's timeout) holds only
its worker. Every other lane goes on, within the channel's rate.

The adapter's answer decides: `Delivered` (recorded, acked), a `TransientError` (the
next attempt is scheduled: its due time is kept in Redis, the lane waits until then;
after ``max_attempts`` dead-letter), a `PermanentError` (dead-letter at once). A lane
whose message was dead-lettered is *parked*: its later messages go to the dead letters
behind it, in order, instead of overtaking it, until an operator replays the lane
(`bridge dlq replay`, which puts them back in their original order) or drops the letters
(`bridge dlq drop`).

What was sent is recorded as sends complete, a few at a time (a group commit: whatever
completed while the previous record was written), so a crash re-sends at most the sends
in flight and the few not yet recorded; the HTTP webhook carries the message id so
receivers can drop the rare double. The record of a partition's stream is its ack: the
commit that acks an entry is the one that would say it was sent, so a redelivered entry
was never recorded. Only the channel's own stream keeps a sent record (message id ->
platform id, by day), whose key is in another slot than the stream on a Redis Cluster,
where the two are committed apart; a redelivered entry whose send it holds is acked
without sending again (bridges before 2026-12-05 recorded every stream's sends there,
which a replay still finds for `SENT_RECORD_DAYS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from bridge import failpoints, keys
from bridge.adapter import Adapter, Delivered, HealthState
from bridge.bus import RELEASE_LANE, Bus, Entry, LeaseLost, decode_entries
from bridge.cursor import GroupCursor
from bridge.errors import IntegrationBroken, PermanentError, StoreUnavailable, TransientError
from bridge.metrics import DEAD_LETTERS, SEND_FAILURES, SEND_SECONDS, SENT
from bridge.model import Message, now_ms
from bridge.ops import Ops
from bridge.ratelimit import Pacer
from bridge.retry import backoff_s
from bridge.store import Store

log = logging.getLogger("bridge.dispatcher")

SENT_RECORD_DAYS = 2  # how long a delivered outbound id is remembered (day buckets)
OWN_PENDING_CHECK_S = 30.0


def lane_key(message: Message) -> str:
    """What a message keeps its order within: its address for the customer's side; its
    conversation for agent-side events (a case's ticket goes before its follow-ups)."""
    if message.kind == "event" and message.conversation_id:
        return message.conversation_id
    return message.address or message.conversation_id


def _today() -> int:
    return now_ms() // 86_400_000


class _Item(msgspec.Struct, eq=False):
    entry: Entry
    message: Message
    attempts: int = 0  # failed attempts so far (kept in Redis across restarts)
    due_s: float = 0.0  # monotonic time of the next attempt
    unparks: str = ""  # the lane this entry lets go on (a replay or a release): recorded with its outcome


class _Done(msgspec.Struct, eq=False):
    """A finished entry waiting to be recorded: delivered, dead-lettered, or only acked."""

    item: _Item
    delivered: Delivered | None = None
    recorded_before: bool = False  # a redelivery of a send already recorded: ack only
    dead: str = ""  # dead-letter reason
    lane: str = ""  # the lane of a dead letter (replayed together)
    parks: str = ""  # this failure parks its lane: what the lane waits behind
    error: PermanentError | None = None
    holds_slot: bool = False  # a send's slot is given back once its outcome is recorded
    retry_due_ms: int = 0  # not finished: a failed attempt, tried again at this time


class _Slots:
    """At most ``size`` holders at once, served in turn. (asyncio.Semaphore of Python 3.11
    walks its waiters on every acquire and release: with hundreds of workers waiting, a
    record that gives back a hundred slots cost more than the sends.)"""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take(self) -> bool:
        """A slot at once, when one is free and nobody waits (no coroutine to await)."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self.take():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # `release` hands its slot over
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed over as it was cancelled: pass it on
                self.release()
            raise  # (a cancelled waiter left in the queue is skipped)

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class _Stopping(Exception):
    """The dispatcher stops: a send not yet started is left unacked for the next run."""


class _Lane(msgspec.Struct, eq=False):
    """An address's (or conversation's) messages in order. A lane is in the dispatcher's
    map exactly while it has messages; it is then queued, served by a worker or due again
    at a time (``timer``), never two of these at once."""

    key: str
    items: deque[_Item] = msgspec.field(default_factory=deque)
    timer: asyncio.TimerHandle | None = None


class ChannelDispatcher:
    """Delivery for one channel: owns the channel's outbound streams while holding their leases."""

    def __init__(self, *, bus: Bus, adapter: Adapter, worker_id: str, lease_ttl_s: float, block_ms: int,
                 batch_size: int, claim_min_idle_s: float,
                 report_health: Callable[[HealthState, str], Awaitable[None]], history: bool = False) -> None:
        self.bus = bus
        self.history = history  # refs a send returns also go to the outbox, for the SQL record
        self.adapter = adapter
        self.channel = adapter.name
        self.streams = keys.outbound_streams(self.channel, bus.partitions)
        self.own_stream = keys.channel_stream(self.channel)  # the one whose sends are recorded (see above)
        self.group = keys.DISPATCH_GROUP
        self.worker_id = worker_id
        self.report_health = report_health
        config = adapter.config
        self.max_attempts = config.max_attempts
        self.max_in_flight = adapter.max_in_flight
        self.max_in_hand = max(batch_size, config.max_in_hand)
        self.pacer = Pacer(adapter.rate_per_s)
        self.address_pacer = Pacer(config.rate_per_address_per_s or adapter.default_rate_per_address_per_s)
        self.leases = bus.leases(worker_id, self.streams, ttl_s=lease_ttl_s, fair_share=False, leader=True,
                                 role=f"dispatch:{self.channel}")
        self._stopping = asyncio.Event()
        # a read takes about batch_size entries over the channel's streams: read at once,
        # the lanes and workers of nine batches cost more per message than the reads saved
        self.cursor = GroupCursor(bus, self.group, worker_id, count=-(-batch_size // len(self.streams)),
                                  block_ms=block_ms,
                                  min_idle_ms=int(claim_min_idle_s * 1000), sleep=self._sleep)
        self.delivered = 0
        self._sent = SENT.labels(self.channel)
        self._send_seconds = SEND_SECONDS.labels(self.channel)
        self._slots = _Slots(self.max_in_flight)
        self._lanes: dict[str, _Lane] = {}  # lanes with messages to send
        self._ready: deque[_Lane] = deque()  # lanes whose head can be tried now, in turn
        self._workers: set[asyncio.Task[None]] = set()
        self._idle: deque[asyncio.Future[bool]] = deque()  # workers waiting for a ready lane
        self._waking = 0  # workers woken or started that have not run yet
        self._in_hand: set[tuple[str, str]] = set()  # (stream, entry id) read and not yet recorded
        # (stream, batch entry id) -> its messages recorded while others of it are not (`Bus.ack_ops`)
        self._noted: dict[tuple[str, str], set[int]] = {}
        # lane -> the dead-lettered entry it waits behind ("r:" + id when that entry was a replay)
        self._parked: dict[str, str] = {}
        self._parked_stale = False  # dropped with what was in hand: read again from Redis
        self._parks_unread: set[str] = set()  # streams taken whose parked lanes are not read yet
        self._done: list[_Done] = []
        self._record_wanted = asyncio.Event()
        self._room = asyncio.Event()  # set when fewer than max_in_hand entries are in hand
        self._closing = False  # stopping: the recorder writes what is left, then ends

    def stop(self) -> None:
        self._stopping.set()
        for waiter in self._idle:  # idle workers end
            if not waiter.done():
                waiter.set_result(False)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True when woken by stop."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
            return True
        except TimeoutError:
            return False

    # -- the read loop ---------------------------------------------------------------

    async def run(self) -> None:
        for stream in self.streams:
            await self.bus.ensure_group(stream, self.group)
        self.leases.start(f"dispatch-lease:{self.channel}")
        recorder = asyncio.create_task(self._recorder(), name=f"dispatch-record:{self.channel}")
        next_own_check = time.monotonic() + OWN_PENDING_CHECK_S
        try:
            while not self._stopping.is_set():
                try:
                    gained, lost = self.leases.changes()
                    if lost:
                        self._drop_all()
                        self.cursor.reread()  # what we had in hand goes first again, in order
                    if gained:
                        self.cursor.gained(gained)
                        self._parks_unread |= gained
                    if self._parks_unread or self._parked_stale:
                        await self._load_parked()
                    if not self.leases.held:
                        await self._sleep(0.05)
                        continue
                    if len(self._in_hand) >= self.max_in_hand:  # lanes are full: wait for room
                        self._room.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._room.wait(), 0.1)
                        continue
                    if time.monotonic() >= next_own_check:  # entries of a lost read reply
                        self.cursor.reread()
                        next_own_check = time.monotonic() + OWN_PENDING_CHECK_S
                    entries = await self.cursor.next(self.leases.held)
                    if entries:
                        await self._accept(entries)
                except LeaseLost as exc:
                    self._lose(exc)
                except StoreUnavailable as exc:
                    log.warning("redis unavailable, retrying", extra={"channel": self.channel, "error": str(exc)})
                    self.cursor.reread()
                    await self._sleep(0.5)
        finally:
            await self._finish_sends()
            self._closing = True
            self._record_wanted.set()
            try:
                await asyncio.wait_for(recorder, 10)
            except Exception as exc:  # Redis away: the next owner sends what was not recorded
                log.warning("could not record the last sends", extra={"channel": self.channel, "error": repr(exc)})
            await self.leases.stop()

    def _lose(self, exc: LeaseLost) -> None:
        if self.leases.drop(exc.lease_key) is not None:
            log.warning("lease lost", extra={"channel": self.channel})
        self._drop_all()
        self.cursor.reread()

    def _drop_all(self) -> None:
        """The lease went: the new owner sends what we had not recorded."""
        for worker in self._workers:
            worker.cancel()
        self._workers.clear()  # new ones may start at once
        for lane in self._lanes.values():
            if lane.timer is not None:
                lane.timer.cancel()
        self._lanes.clear()
        self._ready.clear()
        self._idle.clear()
        self._waking = 0
        self._in_hand.clear()
        self._noted.clear()
        self._parked.clear()
        self._parked_stale = True
        self._release(self._done)
        self._done.clear()
        self._room.set()

    async def _load_parked(self) -> None:
        """The parked lanes of streams just taken; of every stream held after a drop (nothing
        is in hand then: Redis has them all)."""
        if self._parked_stale:
            self._parked = await self.bus.parked(sorted(self.leases.held))
            self._parked_stale = False
        else:
            self._parked.update(await self.bus.parked(sorted(self._parks_unread & self.leases.held)))
        self._parks_unread.clear()

    async def _finish_sends(self) -> None:
        """Stopping: sends in flight finish (up to the adapter's timeout); waiting lanes stop
        waiting and leave their entries unacked for the next run."""
        for lane in self._lanes.values():
            if lane.timer is not None:
                lane.timer.cancel()
        tasks = list(self._workers)
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        for task in tasks:
            task.cancel()

    # -- taking entries into lanes -------------------------------------------------

    async def _accept(self, entries: list[Entry]) -> None:
        entries = [e for e in entries if (e.stream, e.id) not in self._in_hand]  # a reread returns what we hold
        if not entries:
            return
        decoded, malformed = decode_entries(entries)
        for entry, reason in malformed:
            self._in_hand.add((entry.stream, entry.id))
            self._complete(_Done(_Item(entry, Message(kind="event", channel=self.channel)), dead=reason))
        for entry in entries:
            if entry.erased:  # deleted while pending (an erasure): nothing to send, only acked
                self._in_hand.add((entry.stream, entry.id))
                self._complete(_Done(_Item(entry, Message(kind="event", channel=self.channel)),
                                     delivered=Delivered(), recorded_before=True))
        recorded, attempts, due_ms = await self._history(decoded)
        now_s, now = time.monotonic(), now_ms()
        for entry, message in decoded:
            self._in_hand.add((entry.stream, entry.id))
            item = _Item(entry, message, attempts=attempts.get((entry.stream, entry.id), 0))
            if (due := due_ms.get((entry.stream, entry.id))) is not None:
                item.due_s = now_s + max(0, due - now) / 1000
            if message.id in recorded:
                self._complete(_Done(item, delivered=Delivered(platform_id=recorded[message.id]),
                                     recorded_before=True))
                continue
            key = str(message.data.get("lane", "")) if message.name == RELEASE_LANE else lane_key(message)
            lane = self._lanes.get(key)
            if lane is None:  # a lane in the map is queued, served or scheduled already
                lane = self._lanes[key] = _Lane(key)
                lane.items.append(item)
                self._ready_now(lane)
            else:
                lane.items.append(item)

    async def _history(self, decoded: list[tuple[Entry, Message]]
                       ) -> tuple[dict[str, str], dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """For entries read before (a redelivery): which were sent, failed attempts, and
        when the next attempt is due, by (stream, entry id). One round trip; none for new
        entries."""
        if not decoded or not self.cursor.replayed:
            return {}, {}, {}
        by_stream: dict[str, list[tuple[Entry, Message]]] = {}
        for entry, message in decoded:
            by_stream.setdefault(entry.stream, []).append((entry, message))
        today = _today()
        return await self.bus.delivery_history(
            [(stream, [m.id for _, m in read], [e.id for e, _ in read]) for stream, read in by_stream.items()],
            range(today - SENT_RECORD_DAYS + 1, today + 1))

    # -- the workers ---------------------------------------------------------------

    def _ready_now(self, lane: _Lane) -> None:
        """Queue a lane whose head can be tried now; wake a worker unless one is waking."""
        lane.timer = None
        self._ready.append(lane)
        if not self._waking:
            self._wake_worker()

    def _wake_worker(self) -> None:
        """Wake an idle worker, or start one (up to max_in_flight). A worker about to send
        wakes the next one while lanes are queued, so as many work as the sends keep
        waiting, and a channel whose sends never wait is served by one."""
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():  # else its worker was cancelled
                waiter.set_result(True)
                self._waking += 1
                return
        if len(self._workers) < self.max_in_flight and not self._stopping.is_set():
            worker = asyncio.create_task(self._work(), name=f"dispatch-send:{self.channel}")
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
            self._waking += 1

    def _ready_at(self, lane: _Lane, due_s: float) -> None:
        """The lane's head waits (a Retry-After, a backoff, the address's pace): it comes
        back to the queue at ``due_s`` (monotonic) and holds no worker meanwhile."""
        lane.timer = asyncio.get_running_loop().call_later(max(0.0, due_s - time.monotonic()),
                                                           self._ready_now, lane)

    async def _work(self) -> None:
        """One worker: takes the lane at the queue's head and tries its head message; a lane
        with more to send goes back to the queue's end (lanes take turns)."""
        self._waking -= 1
        while not self._stopping.is_set():
            if not self._ready:
                waiter = asyncio.get_running_loop().create_future()
                self._idle.append(waiter)
                if not await waiter:
                    return
                self._waking -= 1
                continue
            lane = self._ready.popleft()
            if self._lanes.get(lane.key) is not lane:  # dropped with the lease
                continue
            if self._ready and not self._waking:
                self._wake_worker()  # this send may wait: the next lane need not
            item = lane.items[0]
            try:
                done = self._held_back(lane, item)
                if done is None and item.due_s <= time.monotonic():
                    done = await self._attempt(lane, item)
            except _Stopping:  # the entry stays unacked, in order, for the next run
                return
            except Exception:  # Redis away while reporting health, a bug: the lane tries again
                log.exception("lane failed", extra={"channel": self.channel})
                self._ready_at(lane, time.monotonic() + 0.5)
                continue
            if done is None:  # tried again later
                self._ready_at(lane, item.due_s)
                continue
            lane.items.popleft()
            self._complete(done)
            if lane.items:
                self._ready_now(lane)
            elif self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]

    def _held_back(self, lane: _Lane, item: _Item) -> _Done | None:
        """The head's outcome when it is not to be sent: a release of its lane, or a message
        held behind its lane's dead letter; None: it is to be sent (at ``item.due_s``)."""
        message = item.message
        if message.kind == "command" and message.name == RELEASE_LANE:  # `bridge dlq drop` let it go on
            self._parked.pop(lane.key, None)
            item.unparks = lane.key
            return _Done(item, delivered=Delivered())
        behind = self._parked.get(lane.key)
        if behind is not None:
            # written after the failure, or replayed behind a replay that failed again: it
            # waits behind the failed one, in order
            if not item.entry.replay or behind.startswith("r:"):
                return _Done(item, dead=f"held behind the dead letter of entry {behind.removeprefix('r:')}: "
                                        "replay or drop it to go on", lane=lane.key)
            del self._parked[lane.key]  # the operator put the lane back: it goes on
            item.unparks = lane.key
        return None

    async def _attempt(self, lane: _Lane, item: _Item) -> _Done | None:
        """One send; None when it must be tried again (``item.due_s`` says when)."""
        message = item.message
        if item.attempts >= self.max_attempts:  # tried often enough before a restart
            return self._failed(lane, item, PermanentError(f"gave up after {item.attempts} attempts"))
        if self.address_pacer.interval_s:
            pace_s = self.address_pacer.take(lane.key)
            if pace_s > 0:  # the address's pace: the lane comes back then, holding no worker
                item.due_s = time.monotonic() + pace_s
                return None
        # a slot is held from the send until its outcome is recorded: at most max_in_flight
        # sends are unrecorded at any time, and that is all a crash can send twice
        if not self._slots.take():
            await self._slots.acquire()
        done: _Done | None = None
        try:
            if self._stopping.is_set():
                raise _Stopping
            if self.pacer.interval_s:
                await self.pacer.wait()
            started = time.perf_counter()
            try:
                delivered = await self.adapter.send(message)
                failpoints.hit("dispatch.after_send", self.channel)
                self._send_seconds.observe(time.perf_counter() - started)
                done = _Done(item, delivered=delivered, holds_slot=True)
                return done
            except PermanentError as exc:
                SEND_FAILURES.labels(self.channel, "permanent").inc()
                if isinstance(exc, IntegrationBroken):
                    await self.report_health("broken", exc.reason)
                return self._failed(lane, item, exc)
            except TransientError as exc:
                reason, wait_s = exc.reason, exc.retry_after_s
            except Exception as exc:  # an adapter bug or an unexpected library error: retry, then dead-letter
                log.exception("send raised", extra={"channel": self.channel, "message_id": message.id})
                reason, wait_s = f"{type(exc).__name__}: {exc}", None
        finally:
            if done is None:
                self._slots.release()
        SEND_FAILURES.labels(self.channel, "transient").inc()
        item.attempts += 1
        if item.attempts >= self.max_attempts:
            return self._failed(lane, item, PermanentError(f"gave up after {item.attempts} attempts: {reason}"))
        delay_s = wait_s if wait_s is not None else backoff_s(item.attempts, cap_s=60.0)
        item.due_s = time.monotonic() + delay_s
        # the attempt count and due time go to Redis with the next record (a restarted
        # dispatcher honours them), not in a round trip of their own
        self._complete(_Done(item, retry_due_ms=now_ms() + int(delay_s * 1000)))
        log.info("send will be retried", extra={"channel": self.channel, "message_id": message.id,
                                                "attempt": item.attempts, "delay_s": round(delay_s, 3),
                                                "reason": reason})
        return None

    def _failed(self, lane: _Lane, item: _Item, error: PermanentError) -> _Done:
        behind = self._parked[lane.key] = ("r:" if item.entry.replay else "") + item.entry.id
        return _Done(item, dead=error.reason, lane=lane.key, parks=behind, error=error)

    # -- recording -------------------------------------------------------------------

    def _complete(self, done: _Done) -> None:
        self._done.append(done)
        self._record_wanted.set()

    async def _recorder(self) -> None:
        """Write what completed, as it completes: each write takes everything finished
        while the previous one was under way."""
        while True:
            await self._record_wanted.wait()
            self._record_wanted.clear()
            while self._done:
                batch, self._done = self._done, []
                try:
                    await self._record(batch)
                except LeaseLost as exc:
                    self._release(batch)
                    self._lose(exc)
                    break
                except Exception as exc:  # Redis away (or a bug): keep the batch and try again
                    log.warning("the sent record waits", extra={"channel": self.channel, "error": repr(exc)})
                    self._done[:0] = batch
                    await asyncio.sleep(0.5)
            if self._closing:
                return

    async def _record(self, batch: list[_Done]) -> None:
        """Record deliveries, dead-letter failures and ack, in one fenced commit; then
        report deliveries to the engine."""
        bus = self.bus
        retries: Ops = []
        sent = 0
        sent_ids: list[tuple[str, str]] = []  # (message id, platform id) sent from the channel's own stream
        refs: list[tuple[str, str]] = []  # (thread ref, conversation id)
        failures: Ops = []
        acks: dict[str, list[Entry]] = {}  # stream -> entries done
        tried: dict[str, list[str]] = {}  # stream -> entry ids with failed attempts before
        for d in batch:  # one pass: a record takes hundreds of sends at a time
            item = d.item
            entry, message = item.entry, item.message
            stream = entry.stream
            if d.retry_due_ms:
                retries += bus.attempt_ops(stream, entry.id, d.retry_due_ms)
                continue
            delivered = d.delivered
            if delivered is not None and not d.recorded_before and message.id:
                sent += 1
                if stream == self.own_stream:
                    sent_ids.append((message.id, _platform_id(d)))
                if delivered.ref and message.conversation_id:
                    refs.append((delivered.ref, message.conversation_id))
            if d.dead:
                failures += bus.dead_letter_ops(stream, self.group, entry, d.dead, lane=d.lane)
                if d.parks:
                    failures += bus.park_ops(stream, d.lane, d.parks)
            acks.setdefault(stream, []).append(entry)
            if item.unparks:  # wherever the lane was parked (a lane's sends may come from two partitions)
                for held in sorted(self.leases.held):
                    failures += bus.unpark_ops(held, item.unparks)
            if item.attempts:
                tried.setdefault(stream, []).append(entry.id)
        if retries:
            batch = [d for d in batch if not d.retry_due_ms]
        ops = retries
        today = _today()
        ops += bus.sent_ops(self.own_stream, today, sent_ids, keep_days=SENT_RECORD_DAYS)
        for ref, conversation_id in refs:
            ops += Store.ref_ops(ref, conversation_id, bus.partitions)
        if refs and self.history:
            ops += Store.refs_record_ops(refs, bus.partitions, now_ms())
        ops += failures
        for stream, done in acks.items():
            ops += bus.ack_ops(stream, self.group, done, self._noted)
        for stream, ids in tried.items():
            ops += bus.attempts_done_ops(stream, ids)
        acked = sum(1 for d in batch if not d.dead)
        await self.bus.commit_by_slot(ops, leases=self.leases.keys_held(), owner=self.worker_id)
        failpoints.hit("dispatch.after_record")
        self._release(batch)
        for d in batch:
            self._in_hand.discard((d.item.entry.stream, d.item.entry.id))
            if d.dead:
                DEAD_LETTERS.labels(d.item.entry.stream).inc()
                log.warning("dead-lettered", extra={"channel": self.channel, "message_id": d.item.message.id,
                                                    "conversation": d.item.message.conversation_id,
                                                    "reason": d.dead})
        self._room.set()
        self._sent.inc(sent)
        self.delivered += acked
        notices = [n for d in batch if (n := self._notice(d)) is not None]
        for _ in range(20):  # recorded already: only the reports are tried again (they dedupe)
            try:
                if notices:
                    await self.bus.publish_many(notices)
                return
            except Exception as exc:
                log.warning("delivery reports wait", extra={"channel": self.channel, "error": repr(exc)})
                await asyncio.sleep(0.5)

    def _release(self, batch: list[_Done]) -> None:
        for d in batch:
            if d.holds_slot:
                d.holds_slot = False
                self._slots.release()

    def _notice(self, done: _Done) -> Message | None:
        """A delivery report for the engine: agents see whether their reply arrived, are told
        when a reply failed and later ones wait behind it, and an unreachable address marks
        the conversation."""
        message = done.item.message
        if not message.conversation_id or message.kind != "reply" or done.recorded_before:
            return None
        wants = bool(message.data.get("notify_delivery"))
        error = done.error
        unreachable = error is not None and error.unreachable
        if not wants and error is None:
            return None
        data: dict[str, Any] = {"message_id": message.id, "channel": self.channel, "notify": wants or error is not None,
                                "agent_channel": message.data.get("agent_channel", "")}
        if error is None:
            data.update(status="delivered", platform_id=done.delivered.platform_id if done.delivered else "")
        else:
            data.update(status="failed", unreachable=unreachable,
                        reason=f"{error.reason} (later replies to this address wait until the dead letter is "
                               "replayed or dropped)")
        return Message(kind="command", channel=self.channel, name="delivery",
                       conversation_id=message.conversation_id, data=data,
                       dedupe_key=f"delivery:{message.id}")


def _platform_id(done: _Done) -> str:
    return (done.delivered.platform_id if done.delivered else "") or "-"
