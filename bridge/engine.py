"""The flow engine: consumes the inbound partitions and runs the pipeline of steps.

The partition is the unit of order and isolation. One loop reads every partition it
holds a lease on and is not busy with (one XREADGROUP for all of them) and hands each
partition's entries to a task of its own; that task runs them through the steps in
stream order and commits them (conversation state, transcript, outbound messages, queue
entries, timers and the acks) in one Lua call fenced by that partition's lease alone. A
partition waiting on a slow step or a lookup holds only itself: the others are read and
committed meanwhile. A crash anywhere before a commit leaves nothing of that batch
written and nothing acked; the entries are read again by whoever holds the lease next.

A message whose step fails is tried again with backoff and jitter (its conversation's
later messages wait behind it, the partition's other conversations go on) until
``engine.step_retry_window_s`` has passed since its first failure; then it is
dead-lettered and its conversation goes on.

Conversations are cached per partition: only the lease holder of a partition writes its
conversations, so the cache is exact while the lease is held and is dropped with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge import failpoints, keys
from bridge.bus import Bus, CommitUncertain, Entry, LeaseLost, StaleCache, decode_entries
from bridge.cursor import GroupCursor
from bridge.errors import RecordUnavailable, StorageFull, StoreUnavailable
from bridge.jobs import Jobs
from bridge.metrics import ENGINE_BATCH_SECONDS, ENGINE_MESSAGES
from bridge.model import (
    Contact,
    Conversation,
    Message,
    address_hash,
    new_id,
    now_ms,
)
from bridge.ops import Ops
from bridge.retry import backoff_s
from bridge.store import Saves, Store
from bridge.turn import FlowConfig, Step, Turn

log = logging.getLogger("bridge.engine")

OWN_PENDING_CHECK_S = 30.0
# contacts span partitions, so another worker may change one: every change to a contact
# that existed before (a link by email, an agent's edit) bumps keys.CONTACTS_REV, which
# drops the cached ones, and an erasure bumps each partition's keys.erasures_rev, which drops its
# whole cache (none of the erased conversations is written back from memory; a batch that
# read the counter before an erasure is refused at its commit, `StaleCache`); as a safety
# net a cached contact is also read again when older than this at the start of a batch
CONTACT_FRESH_MS = 60_000
# a partition's batch lets the event loop run its other work (deliveries and their
# records, HTTP, other partitions) after this much CPU time: a batch of a few hundred
# triaged messages would otherwise hold the loop for a fraction of a second, and a
# dispatcher whose sends wait for their record to free a slot would wait as long
SLICE_S = 0.001
# while some partition is busy, the read of the others blocks this long at most, so a
# partition that finishes is read again soon
BUSY_BLOCK_MS = 20


class _Cache:
    """A small LRU map."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        value = self.data.get(key)
        if value is not None:
            self.data.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.size:
            self.data.popitem(last=False)

    def drop(self, key: Any) -> None:
        self.data.pop(key, None)


@dataclass
class _Failure:
    """A message whose step failed: its conversation's later messages wait behind it."""

    entry_id: str
    tries: int
    first_s: float  # monotonic time of the first failure
    due_s: float = 0.0  # when it is tried again
    asked: bool = False  # our pending entries were asked for again since it fell due


@dataclass
class _Partition:
    """What the engine keeps about one partition it holds: its cached conversations and
    contacts, and the conversations waiting to try a failed message again."""

    cache_size: int
    conversations: _Cache = field(init=False)  # conversation id -> Conversation
    current: _Cache = field(init=False)  # (channel, address) -> conversation id
    contacts: _Cache = field(init=False)  # contact id -> (Contact, loaded at clock_ms)
    revs: tuple[int, int] = (-1, -1)  # the (contacts, erasures) change counters the caches have seen
    failures: dict[str, _Failure] = field(default_factory=dict)  # partition key -> its failed message
    # the batch's new addresses -> their next conversation number and their known contact
    # (`Engine._openings`)
    openings: dict[tuple[str, str], tuple[int, Contact | None]] = field(default_factory=dict)
    # a failed message was handled or dead-lettered: the ones that waited behind it are
    # among our pending entries, to be read again once the partition is idle
    reread: bool = False
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.conversations = _Cache(self.cache_size)
        self.current = _Cache(self.cache_size)
        self.contacts = _Cache(self.cache_size)

    def forget(self) -> None:
        self.conversations.data.clear()
        self.current.data.clear()
        self.contacts.data.clear()


class Engine:
    def __init__(self, *, bus: Bus, store: Store, flow_config: FlowConfig, steps: list[Step],
                 worker_id: str, clock_ms: Callable[[], int] = now_ms) -> None:
        settings = flow_config.settings
        self.bus = bus
        self.store = store
        self.flow_config = flow_config
        self.jobs = flow_config.jobs = flow_config.jobs or Jobs(bus.publish)
        self.steps = [(step, _is_async(step)) for step in steps]
        self.worker_id = worker_id
        self.clock_ms = clock_ms
        self.engine = settings.engine
        self.partitions = settings.engine.partitions
        if store.partitions != self.partitions or bus.partitions != self.partitions:
            raise ValueError(f"the engine's {self.partitions} partitions, the store's {store.partitions} and the bus's "
                             f"{bus.partitions} must agree: a partition's keys are named by the count")
        self.group = keys.ENGINE_GROUP
        self.reopen_within_ms = int(settings.engine.reopen_within_h * 3600_000)
        self._streams = {keys.inbound(p, self.partitions): p for p in range(self.partitions)}
        self.leases = bus.leases(worker_id, list(self._streams),
                                 ttl_s=settings.engine.lease_ttl_s, role="engine")
        # a batch's conversations must all fit: one evicted before its turn would be opened anew
        self._cache_size = max(2 * settings.engine.batch_size, settings.engine.conversation_cache // self.partitions)
        self._held: dict[str, _Partition] = {}  # stream -> its state, while we hold its lease
        # partitions lost while a task was working on them: not read again (should the lease
        # come back) until that task is over, so one partition never has two
        self._draining: dict[str, _Partition] = {}
        self.cursor = GroupCursor(bus, self.group, worker_id, count=settings.engine.batch_size,
                                  block_ms=settings.engine.block_ms,
                                  min_idle_ms=int(settings.engine.claim_min_idle_s * 1000), sleep=self._sleep,
                                  vet=self._drop_poison)
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()  # a partition task ended: its partition can be read again
        self._settling: set[asyncio.Task[None]] = set()  # batches whose commit got no answer (`_settle`)
        self.processed = 0

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until `stop()`; the batches in hand are finished and committed first."""
        for stream in self._streams:
            await self.bus.ensure_group(stream, self.group)
        tick_every_s = self.engine.lease_ttl_s / 3
        next_tick = 0.0
        next_timers = 0.0
        next_own_check = time.monotonic() + OWN_PENDING_CHECK_S
        self.leases.start("engine-leases")
        try:
            while not self._stopping.is_set():
                try:
                    self._apply_lease_changes()
                    if time.monotonic() >= next_tick:
                        await self._give_back_excess()
                        next_tick = time.monotonic() + tick_every_s
                    if not self.leases.held:
                        await self._sleep(0.05)
                        continue
                    if time.monotonic() >= next_timers:
                        await self._fire_timers()
                        next_timers = time.monotonic() + 1.0
                    if time.monotonic() >= next_own_check or self._retry_due():
                        # entries whose read reply was lost (a retried XREADGROUP), and
                        # failed ones due again, sit in our pending list
                        self.cursor.reread()
                        next_own_check = time.monotonic() + OWN_PENDING_CHECK_S
                    busy = {s for s, p in self._held.items() if p.task is not None} | set(self._draining)
                    idle = [s for s in self.leases.held if s not in busy]
                    if not idle:  # every partition we hold is working: wait for one to finish
                        self._finished.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._finished.wait(), 0.1)
                        continue
                    entries = await self.cursor.next(idle, block_ms=BUSY_BLOCK_MS if busy else None)
                    if entries:
                        await self.handle(entries)
                except LeaseLost as exc:
                    self._lose(exc)
                except StoreUnavailable as exc:
                    log.warning("redis unavailable, retrying", extra={"error": str(exc)})
                    self._forget_all()
                    await self._sleep(0.5)
        finally:
            await self.settled(timeout_s=30)
            for settling in list(self._settling):
                settling.cancel()  # (their jobs' results are dropped with the jobs)
            await self.jobs.close()
            await self.leases.stop()

    def stop(self) -> None:
        self._stopping.set()

    async def settled(self, timeout_s: float | None = None) -> None:
        """Wait until no partition batch is under way (each committed or failed)."""
        tasks = [p.task for p in [*self._held.values(), *self._draining.values()] if p.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _partition(self, stream: str) -> _Partition:
        partition = self._held.get(stream)
        if partition is None:
            partition = self._held[stream] = _Partition(self._cache_size)
        return partition

    def _forget_all(self) -> None:
        """Drop every cached conversation and re-read our unacked entries first."""
        for partition in self._held.values():
            if partition.task is None:  # a working partition keeps what it is committing
                partition.forget()
        self.cursor.reread()

    def _lose(self, exc: LeaseLost) -> None:
        stream = self.leases.drop(exc.lease_key)
        if stream is not None:  # once per partition: the next read leaves it out
            log.warning("lease lost, dropping partition state", extra={"stream": stream})
        self._apply_lease_changes()

    def _apply_lease_changes(self) -> None:
        gained, lost = self.leases.changes()
        if gained or lost:
            log.info("partitions changed", extra={"gained": sorted(gained), "lost": sorted(lost),
                                                  "held": sorted(self.leases.held)})
            for stream in lost:
                partition = self._held.pop(stream, None)
                if partition is not None and partition.task is not None:
                    self._draining[stream] = partition
            self.cursor.lost(lost)
            self.cursor.gained(gained)  # after lost: a stream lost and taken again recovers too
            self.cursor.reread()

    async def _give_back_excess(self) -> None:
        """Hand partitions above the fair share to newly joined workers (idle ones only)."""
        surplus = [s for s in await self.leases.excess() if self._partition(s).task is None]
        if surplus:
            await self.leases.give_back(surplus)
            log.info("partitions handed over", extra={"streams": surplus})
            for stream in surplus:
                self._held.pop(stream, None)
            self.cursor.lost(surplus)

    async def _fire_timers(self) -> None:
        now = self.clock_ms()
        for stream in sorted(self.leases.held):
            await self.bus.fire_timers(self._streams[stream], now)

    def _retry_due(self) -> bool:
        """A failed message is due again in an idle partition: read our pending entries
        (it is among them, before the messages of its conversation that waited)."""
        now = time.monotonic()
        due = False
        for partition in self._held.values():
            if partition.task is not None:
                continue
            if partition.reread:
                partition.reread = False
                due = True
            for failure in partition.failures.values():
                if not failure.asked and failure.due_s <= now:
                    failure.asked = due = True
        return due

    async def _drop_poison(self, stream: str, claimed: list[Entry]) -> list[Entry]:
        """An entry delivered too often (it crashed its workers) goes to the dead letters."""
        counts = await self.bus.delivery_counts(stream, self.group, list(dict.fromkeys(e.source for e in claimed)))
        keep, poison, ops = [], [], []
        for entry in claimed:
            delivered = counts.get(entry.source, 0)
            if delivered > self.engine.max_deliveries:
                log.warning("dead-lettered", extra={"stream": stream, "entry": entry.id, "deliveries": delivered})
                ops.extend(self.bus.dead_letter_ops(stream, self.group, entry,
                                                    f"delivered {delivered} times without being handled"))
                poison.append(entry)
            else:
                keep.append(entry)
        if poison:
            await self.bus.commit([*ops, *self.bus.ack_ops(stream, self.group, poison)],
                                  leases=[keys.lease(stream)], owner=self.worker_id)
        return keep

    # -- one batch -------------------------------------------------------------------

    async def handle(self, entries: list[Entry], revs: tuple[int, tuple[int, ...]] | None = None) -> None:
        """Start one task per partition in the batch; each commits on its own. Changes to
        contacts and erasures (``revs``) are asked for once per read, after it (so its
        turns see them); a commit fails should an erasure come after that (`StaleCache`)."""
        by_stream: dict[str, list[Entry]] = defaultdict(list)
        for entry in entries:
            by_stream[entry.stream].append(entry)
        if revs is None:
            revs = await self.store.cache_revs()
        for stream, items in by_stream.items():
            partition = self._partition(stream)
            seen = (revs[0], revs[1][self._streams[stream]])
            partition.task = asyncio.create_task(self._run_partition(stream, partition, items, seen),
                                                 name=f"engine:{stream}")

    async def _run_partition(self, stream: str, partition: _Partition, entries: list[Entry],
                             revs: tuple[int, int]) -> None:
        try:
            await self._handle_partition(stream, partition, entries, revs)
        except LeaseLost as exc:
            self._lose(exc)
        except StaleCache:  # an erasure since the read: nothing was written, read the batch again
            log.info("an erasure came during the batch: it is read again", extra={"stream": stream})
            partition.forget()
            self.cursor.reread()
        except Exception as exc:
            partition.forget()
            self.cursor.reread()
            if isinstance(exc, StoreUnavailable):
                log.warning("redis unavailable, retrying", extra={"stream": stream, "error": str(exc)})
                await self._sleep(0.5)
            else:
                log.exception("partition batch failed", extra={"stream": stream})
        finally:
            partition.task = None
            if self._draining.get(stream) is partition:
                del self._draining[stream]
            self._finished.set()

    async def _handle_partition(self, stream: str, partition: _Partition, entries: list[Entry],
                                revs: tuple[int, int]) -> None:
        """One partition's entries in stream order, then its one fenced commit; the jobs
        its turns started publish their results only if it was committed (`bridge.jobs`)."""
        committed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        try:
            await self._handle_batch(stream, partition, entries, revs, committed)
        except CommitUncertain as exc:  # applied, perhaps: its jobs wait until Redis tells
            settling = asyncio.create_task(self._settle(committed, exc.once), name=f"settle {stream}")
            self._settling.add(settling)
            settling.add_done_callback(self._settling.discard)
            raise
        except BaseException:
            committed.set_result(False)
            raise
        committed.set_result(True)

    async def _settle(self, committed: asyncio.Future[bool], once: str) -> None:
        """Whether a batch whose commit got no answer was applied, asked until Redis answers
        (within the once key's life). Applied, its entries are acked and never run again, so
        its jobs' results are the only ones there will be."""
        given_up = time.monotonic() + keys.COMMIT_ONCE_TTL_S / 2
        try:
            while not committed.done():
                try:
                    committed.set_result(await self.bus.commit_applied(once))
                except StoreUnavailable:
                    if time.monotonic() > given_up:
                        return
                    await asyncio.sleep(0.5)
        finally:
            if not committed.done():
                committed.set_result(False)

    async def _handle_batch(self, stream: str, partition: _Partition, entries: list[Entry],
                            revs: tuple[int, int], committed: asyncio.Future[bool]) -> None:
        started = time.perf_counter()
        ops: Ops = []
        messages, malformed = decode_entries(entries)
        acked = [e for e in entries if e.erased]  # an erasure deleted them while pending
        for entry, reason in malformed:
            log.error("malformed entry dead-lettered", extra={"stream": entry.stream, "entry": entry.id,
                                                              "reason": reason})
            ops.extend(self.bus.dead_letter_ops(entry.stream, self.group, entry, reason))
            acked.append(entry)
        await self._load(partition, [m for _, m in messages], revs)
        handled = 0
        touched: list[str] = []
        resolved: list[str] = []  # left out of the cache after the commit (retention may drop them from Redis)
        blocked: set[str] = set()  # conversations with a failed message: later ones wait, in order
        saves = Saves(self.partitions)  # each conversation's state once, as its last turn in the batch left it
        now_s = time.monotonic()
        failures = partition.failures
        slice_started = time.perf_counter()
        for entry, message in messages:
            if time.perf_counter() - slice_started > SLICE_S:  # the loop's other work goes on
                await asyncio.sleep(0)
                slice_started = time.perf_counter()
            if failures or blocked:
                key = message.partition_key
                failed = failures.get(key)
                if key in blocked or (failed is not None and (entry.id != failed.entry_id or failed.due_s > now_s)):
                    blocked.add(key)  # behind its conversation's failed message, or that one not due yet
                    continue
            try:
                turn = await self._begin(partition, message, committed)
                if turn is None:
                    ops.extend(self.bus.dead_letter_ops(entry.stream, self.group, entry, _unknown(message)))
                    acked.append(entry)
                    continue
                for step, is_async in self.steps:
                    result = step(turn)
                    if is_async and result is not None:
                        await result
                    if turn.stopped:
                        break
                ops.extend(self.store.effect_ops(turn.effects(entry.payload), saves))
                touched.append(turn.conversation.id)
                if turn.conversation.status == "resolved":
                    resolved.append(turn.conversation.id)
                acked.append(entry)
                handled += 1
                if failures and failures.pop(message.partition_key, None) is not None:
                    partition.reread = True
            except Exception as exc:
                if isinstance(exc, StoreUnavailable | StorageFull):
                    raise
                blocked.add(message.partition_key)
                self._evict(partition, message)
                dead = self._failed(partition, entry, message, exc)
                if dead:
                    ops.extend(dead)
                    acked.append(entry)
        ops.extend(saves.ops())
        ops.extend(self.bus.ack_ops(stream, self.group, acked))
        ops.extend(self.bus.announce_ops(touched))
        try:
            await self.store.write_contacts(saves.contacts)  # in the contacts' slot, first
            failpoints.hit("engine.before_commit")
            # the caches this batch used held nothing an erasure since has deleted
            await self.bus.commit(ops, leases=[keys.lease(stream)], owner=self.worker_id,
                                  guards=[(keys.erasures_rev(self._streams[stream], self.partitions),
                                           str(revs[1]) if revs[1] else "")])
        except BaseException:
            partition.forget()
            raise
        for conversation_id in resolved:
            if (cached := partition.conversations.get(conversation_id)) is not None and cached.status == "resolved":
                partition.conversations.drop(conversation_id)
        self.processed += handled
        ENGINE_MESSAGES.inc(handled)
        ENGINE_BATCH_SECONDS.observe(time.perf_counter() - started)

    def _failed(self, partition: _Partition, entry: Entry, message: Message, exc: Exception) -> Ops:
        """A step raised: try again after a backoff (no ops), or dead-letter once the retry
        window is over (the ops that do it; the entry's ack is the caller's)."""
        now_s = time.monotonic()
        key = message.partition_key
        failure = partition.failures.get(key)
        if failure is None or failure.entry_id != entry.id:
            failure = partition.failures[key] = _Failure(entry.id, 0, now_s)
        failure.tries += 1
        log.exception("step failed", extra={"entry": entry.id, "conversation": message.conversation_id,
                                            "attempt": failure.tries})
        if now_s - failure.first_s >= self.engine.step_retry_window_s:
            del partition.failures[key]  # its conversation goes on without it
            partition.reread = True
            return self.bus.dead_letter_ops(entry.stream, self.group, entry,
                                            f"failed {failure.tries} times in {now_s - failure.first_s:.1f} s: "
                                            f"{type(exc).__name__}: {exc}")
        failure.due_s = now_s + backoff_s(failure.tries, base_s=0.2, cap_s=10.0)
        failure.asked = False
        return []

    # -- conversations ---------------------------------------------------------------

    async def _load(self, p: _Partition, messages: list[Message], revs: tuple[int, int]) -> None:
        """Fill the caches for a batch: no round trip when warm, a few for what is missing;
        contacts are read again once older than CONTACT_FRESH_MS or after any known
        contact changed, everything after an erasure (``revs``, read with the batch)."""
        if revs[1] != p.revs[1]:
            p.forget()
        elif revs[0] != p.revs[0]:
            p.contacts.data.clear()
        p.revs = revs
        wanted: set[str] = set()  # the batch's conversations
        addresses: dict[tuple[str, str], None] = {}  # the batch's addresses with no cached conversation
        for m in messages:
            if m.kind == "customer" and not m.conversation_id:
                current = p.current.get((m.channel, m.address))
                if current is None:
                    addresses[(m.channel, m.address)] = None
                else:
                    wanted.add(current)
            elif m.conversation_id:
                wanted.add(m.conversation_id)
        new: list[tuple[str, str]] = []  # addresses with no conversation: their messages open one
        if addresses:
            looked_up = list(addresses)
            ids = await self.store.current_ids(looked_up)
            if None in ids:
                ids = await self._returning(messages, looked_up, ids)
            for address, conversation_id in zip(looked_up, ids, strict=True):
                if conversation_id:
                    p.current.put(address, conversation_id)
                    wanted.add(conversation_id)
                else:
                    new.append(address)
        p.openings = await self._openings(messages, new)
        known = {c: p.conversations.get(c) for c in wanted}  # (each one touched: the batch keeps it)
        missing = [c for c, conversation in known.items() if conversation is None]
        if missing:
            try:
                loaded = await self.store.get_many(missing, load_back=True)
            except RecordUnavailable:  # each message's turn asks again (and waits while it is away)
                loaded = []
            for conversation in loaded:
                if conversation is not None:
                    p.conversations.put(conversation.id, conversation)
                    known[conversation.id] = conversation
        contact_ids = {c.contact_id for c in known.values() if c is not None and c.contact_id}
        now = self.clock_ms()
        stale = [c for c in contact_ids
                 if (cached := p.contacts.get(c)) is None or now - cached[1] > CONTACT_FRESH_MS]
        if stale:
            for contact in await self.store.contacts_many(stale):
                if contact is not None:
                    p.contacts.put(contact.id, (contact, now))

    async def _returning(self, messages: list[Message], addresses: list[tuple[str, str]],
                         ids: list[str | None]) -> list[str | None]:
        """Addresses Redis has no conversation for: new customers, or ones writing again
        after retention dropped them (the SQL record gives their latest conversation back,
        with its contact and counter, before anything is opened; history on only)."""
        missed = [a for a, i in zip(addresses, ids, strict=True) if not i]
        unknown = set(missed)
        emails = sorted({m.sender.email for m in messages
                         if m.sender is not None and m.sender.email and (m.channel, m.address) in unknown})
        found = iter(await self.store.returning(missed, emails))
        return [i or next(found) for i in ids]

    async def _openings(self, messages: list[Message],
                        new: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, Contact | None]]:
        """What opening a conversation takes, for every new address of a batch at once: its
        next number and its contact (linked to the address, or else to the email the channel
        vouches for: mail From, a confirmed widget form, the API caller). A burst of new
        customers then costs a few round trips per batch instead of three per customer,
        each waiting its turn on a busy loop."""
        if not new:
            return {}
        numbers = await self.store.next_conversation_numbers([address_hash(c, a) for c, a in new])
        contact_ids = await self.store.contact_ids_for(new)
        emails: dict[tuple[str, str], str] = {}
        for m in messages:  # the email of each address's first message (the one that opens)
            if m.sender is not None and m.sender.email:
                emails.setdefault((m.channel, m.address), m.sender.email)
        unlinked = [a for a, c in zip(new, contact_ids, strict=True) if c is None and a in emails]
        if unlinked:
            by_email = dict(zip(unlinked, await self.store.contact_ids_by_email([emails[a] for a in unlinked]),
                                strict=True))
            contact_ids = [c or by_email.get(a) for a, c in zip(new, contact_ids, strict=True)]
        known = list(dict.fromkeys(c for c in contact_ids if c))
        # one object per contact: two new addresses of one person in a batch both join it
        contacts = dict(zip(known, await self.store.contacts_many(known), strict=True)) if known else {}
        return {a: (n, contacts.get(c) if c else None) for a, n, c in zip(new, numbers, contact_ids, strict=True)}

    def _evict(self, p: _Partition, message: Message) -> None:
        conversation_id = message.conversation_id or p.current.get((message.channel, message.address))
        if conversation_id:
            p.conversations.drop(conversation_id)
        p.current.drop((message.channel, message.address))

    async def _begin(self, p: _Partition, message: Message, committed: asyncio.Future[bool]) -> Turn | None:
        # the caches are read without touching: `_load` touched what the batch uses
        now = self.clock_ms()
        conversation: Conversation | None = None
        if message.conversation_id:
            conversation = p.conversations.data.get(message.conversation_id)
            if conversation is None:
                conversation = await self.store.get(message.conversation_id, load_back=True)
                if conversation is not None:
                    p.conversations.put(conversation.id, conversation)
        if message.kind != "customer":
            if conversation is None:
                return None
            return Turn(message=message, conversation=conversation, contact=self._contact(p, conversation),
                        config=self.flow_config, now_ms=now, previous_status=conversation.status,
                        previous_updated_ms=conversation.updated_ms, committed=committed)
        if conversation is None:
            conversation_id = p.current.data.get((message.channel, message.address))
            conversation = p.conversations.data.get(conversation_id) if conversation_id else None
        is_new = reopened = False
        if conversation is not None and conversation.status == "resolved":
            if now - conversation.resolved_ms > self.reopen_within_ms:
                conversation = None
            else:
                reopened = True
        contact = self._contact(p, conversation) if conversation else None
        created = False
        if conversation is None:
            conversation, contact, created = await self._open(p, message, now)
            is_new = True
        previous = None if is_new else conversation.status
        if reopened:
            conversation.resolved_ms = 0
        conversation.status = "open"
        conversation.last_customer_ms = now
        renamed = bool(contact and message.sender and message.sender.name and contact.name != message.sender.name)
        if renamed and contact is not None and message.sender is not None:
            contact.name = message.sender.name
        return Turn(message=message, conversation=conversation, contact=contact, config=self.flow_config,
                    now_ms=now, is_new=is_new, reopened=reopened, contact_changed=is_new or renamed,
                    contact_created=created, previous_status=previous,
                    previous_updated_ms=conversation.updated_ms, committed=committed)

    def _contact(self, p: _Partition, conversation: Conversation) -> Contact | None:
        cached = p.contacts.data.get(conversation.contact_id) if conversation.contact_id else None
        return cached[0] if cached else None

    async def _open(self, p: _Partition, message: Message, now: int) -> tuple[Conversation, Contact, bool]:
        """A new conversation for a customer address, and its contact: a known one (the
        address or the email is linked to it) or a new one (True)."""
        key = (message.channel, message.address)
        h = address_hash(*key)
        address = f"{message.channel}:{message.address}"
        sender = message.sender
        # a new address was looked up with its batch; one whose last conversation closed
        # too long ago is looked up now
        if key not in p.openings:
            p.openings.update(await self._openings([message], [key]))
        number, contact = p.openings.pop(key)
        if contact is not None and address not in contact.addresses:
            contact.addresses.append(address)
        created = contact is None
        if contact is None:
            contact = Contact(id=new_id(), name=sender.name if sender else "", email=sender.email if sender else "",
                              language=sender.language if sender else "",
                              addresses=[address], created_ms=now)
        conversation = Conversation(id=f"{h}-{number}", channel=message.channel, address=message.address,
                                    contact_id=contact.id, created_ms=now, updated_ms=now)
        p.conversations.put(conversation.id, conversation)
        p.current.put(key, conversation.id)
        p.contacts.put(contact.id, (contact, self.clock_ms()))
        return conversation, contact, created

def _is_async(step: Step) -> bool:
    """True for async functions and for objects whose __call__ is async."""
    return inspect.iscoroutinefunction(step) or inspect.iscoroutinefunction(type(step).__call__)


def _unknown(message: Message) -> str:
    target = message.conversation_id or message.ref or f"{message.channel}:{message.address}"
    return f"no conversation for {message.kind} message (conversation {target!r})"
