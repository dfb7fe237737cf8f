"""The flow engine: consumes the inbound partitions and runs the pipeline of steps.

One loop per worker reads every partition it holds a lease on (one XREADGROUP for all
of them), runs each partition's messages through the steps in stream order (the
partitions side by side: one waiting on a lookup leaves the others working), and commits the whole
batch (conversation state, transcript, outbound messages, queue entries, timers and
the acks) in one fenced Lua call. A crash anywhere before that call leaves nothing
written and nothing acked; the entries are read again by whoever holds the lease next.

Conversations are cached in memory: only the lease holder of a partition writes its
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
from typing import Any

from bridge import failpoints, keys
from bridge.bus import Bus, Entry, LeaseLost, decode_entries
from bridge.cursor import GroupCursor
from bridge.lease import Leases
from bridge.metrics import ENGINE_BATCH_SECONDS, ENGINE_MESSAGES
from bridge.model import (
    Contact,
    Conversation,
    Message,
    address_hash,
    conversation_hash,
    encode,
    new_id,
    now_ms,
    partition_of,
)
from bridge.store import Store
from flows.turn import FlowConfig, Step, Turn

log = logging.getLogger("bridge.engine")

OWN_PENDING_CHECK_S = 30.0
# contacts span partitions, so another worker may change one (a link by email): a cached
# contact is read again when it is older than this at the start of a batch
CONTACT_FRESH_MS = 5_000


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


class Engine:
    def __init__(self, *, bus: Bus, store: Store, flow_config: FlowConfig, steps: list[Step],
                 worker_id: str, clock_ms: Callable[[], int] = now_ms) -> None:
        settings = flow_config.settings
        self.bus = bus
        self.store = store
        self.flow_config = flow_config
        self.steps = [(step, _is_async(step)) for step in steps]
        self.worker_id = worker_id
        self.clock_ms = clock_ms
        self.engine = settings.engine
        self.partitions = settings.engine.partitions
        self.group = keys.ENGINE_GROUP
        self.reopen_within_ms = int(settings.engine.reopen_within_h * 3600_000)
        self.leases = Leases(bus.redis, worker_id, [keys.inbound(p) for p in range(self.partitions)],
                             ttl_s=settings.engine.lease_ttl_s, role="engine")
        size = max(1, settings.engine.conversation_cache)
        self._conversations = _Cache(size)  # conversation id -> Conversation
        self._current = _Cache(size)  # (channel, address) -> conversation id
        self._contacts = _Cache(size)  # contact id -> (Contact, loaded at clock_ms)
        self.cursor = GroupCursor(bus, self.group, worker_id, count=settings.engine.batch_size,
                                  block_ms=settings.engine.block_ms,
                                  min_idle_ms=int(settings.engine.claim_min_idle_s * 1000), sleep=self._sleep,
                                  vet=self._drop_poison)
        self._failures: dict[str, int] = defaultdict(int)
        self._stopping = asyncio.Event()
        self.processed = 0

    # -- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until `stop()`; the batch in hand is finished and committed first."""
        for p in range(self.partitions):
            await self.bus.ensure_group(keys.inbound(p), self.group)
        tick_every_s = self.engine.lease_ttl_s / 3
        next_tick = 0.0
        next_timers = 0.0
        next_own_check = time.monotonic() + OWN_PENDING_CHECK_S
        keeper = asyncio.create_task(self.leases.keep(), name="engine-leases")
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
                    if time.monotonic() >= next_own_check:
                        # entries whose read reply was lost (a retried XREADGROUP) sit in our
                        # pending list; look there now and then
                        self.cursor.reread()
                        next_own_check = time.monotonic() + OWN_PENDING_CHECK_S
                    entries = await self.cursor.next(self.leases.held)
                    if entries:
                        await self.handle(entries)
                except LeaseLost as exc:
                    stream = self.leases.drop(exc.lease_key)
                    if stream is not None:  # once per partition: the next read leaves it out
                        log.warning("lease lost, dropping partition state", extra={"stream": stream})
                    self._forget_all()
                except (ConnectionError, OSError, TimeoutError) as exc:
                    log.warning("redis unavailable, retrying", extra={"error": repr(exc)})
                    self._forget_all()
                    await self._sleep(0.5)
                except Exception as exc:
                    if type(exc).__module__.startswith("redis"):
                        log.warning("redis error, retrying: %r", exc)
                        self._forget_all()
                        await self._sleep(0.5)
                    else:
                        raise
        finally:
            keeper.cancel()
            try:
                await self.leases.release_all()
            except Exception as exc:  # Redis gone at shutdown: the leases expire by themselves
                log.info("could not release leases", extra={"error": repr(exc)})

    def stop(self) -> None:
        self._stopping.set()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _forget_all(self) -> None:
        """Drop every cached conversation and re-read our unacked entries first."""
        self._conversations.data.clear()
        self._current.data.clear()
        self._contacts.data.clear()
        self.cursor.reread()

    def _apply_lease_changes(self) -> None:
        gained, lost = self.leases.changes()
        if gained or lost:
            log.info("partitions changed", extra={"gained": sorted(gained), "lost": sorted(lost),
                                                  "held": sorted(self.leases.held)})
            self._forget_all()
            self.cursor.gained(gained)
            self.cursor.lost(lost)

    async def _give_back_excess(self) -> None:
        """Between batches: hand partitions above the fair share to newly joined workers."""
        surplus = await self.leases.excess()
        if surplus:
            await self.leases.give_back(surplus)
            log.info("partitions handed over", extra={"streams": surplus})
            self._forget_all()
            self.cursor.lost(surplus)

    async def _fire_timers(self) -> None:
        now = self.clock_ms()
        for stream in sorted(self.leases.held):
            await self.bus.fire_timers(int(stream.rsplit(":", 1)[1]), now)

    async def _drop_poison(self, stream: str, claimed: list[Entry]) -> list[Entry]:
        """An entry delivered too often (it crashed its workers) goes to the dead letters."""
        counts = await self.bus.delivery_counts(stream, self.group, [e.id for e in claimed])
        keep = []
        for entry in claimed:
            if counts.get(entry.id, 0) > self.engine.max_deliveries:
                await self.bus.dead_letter(stream, self.group, entry,
                                           f"delivered {counts[entry.id]} times without being handled",
                                           leases=self.leases.keys_held(), owner=self.worker_id)
            else:
                keep.append(entry)
        return keep

    # -- one batch -------------------------------------------------------------------

    async def handle(self, entries: list[Entry]) -> None:
        started = time.perf_counter()
        ops: list[list[Any]] = []
        messages, malformed = decode_entries(entries)
        for entry, reason in malformed:
            log.error("malformed entry dead-lettered", extra={"stream": entry.stream, "entry": entry.id,
                                                              "reason": reason})
            ops.extend(self.bus.dead_letter_ops(entry.stream, self.group, entry, reason))
        await self._load([m for _, m in messages])
        by_stream: dict[str, list[tuple[Entry, Message]]] = defaultdict(list)
        for entry, message in messages:
            by_stream[entry.stream].append((entry, message))
        # partitions are independent: while one waits (an order-status lookup, a cache miss)
        # the others go on; each keeps its own order, and the batch still commits once
        streams = sorted(by_stream)
        results = await asyncio.gather(*(self._handle_partition(by_stream[s]) for s in streams),
                                       return_exceptions=True)
        touched: list[str] = []
        acked = 0
        for stream, result in zip(streams, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            partition_ops, ids, conversations = result
            ops.extend(partition_ops)
            if ids:
                ops.append(["XACK", stream, self.group, *ids])
                acked += len(ids)
            touched.extend(conversations)
        if touched:  # consoles listen for changed conversations (pub/sub, best effort)
            ops.append(["PUBLISH", keys.FANOUT + "conversations", " ".join(dict.fromkeys(touched))])
        failpoints.hit("engine.before_commit")
        try:
            await self.bus.commit(ops, leases=self.leases.keys_held(), owner=self.worker_id)
        except BaseException:
            self._forget_all()
            raise
        self.processed += acked
        ENGINE_MESSAGES.inc(acked)
        ENGINE_BATCH_SECONDS.observe(time.perf_counter() - started)

    async def _handle_partition(self, items: list[tuple[Entry, Message]]
                                ) -> tuple[list[list[Any]], list[str], list[str]]:
        """One partition's entries in stream order: (effects, acked entry ids, conversations)."""
        ops: list[list[Any]] = []
        acked: list[str] = []
        touched: list[str] = []
        blocked: set[str] = set()  # conversations with a failed message: later ones wait, in order
        for entry, message in items:
            key = message.partition_key
            if key in blocked:
                continue
            try:
                turn = await self._begin(message)
                if turn is None:
                    ops.extend(self.bus.dead_letter_ops(entry.stream, self.group, entry, _unknown(message)))
                    continue
                for step, is_async in self.steps:
                    result = step(turn)
                    if is_async and result is not None:
                        await result
                    if turn.stopped:
                        break
                ops.extend(self._effects(turn, entry.payload))
                touched.append(turn.conversation.id)
                acked.append(entry.id)
                self._failures.pop(entry.id, None)
            except Exception as exc:
                if type(exc).__module__.startswith("redis"):
                    raise
                blocked.add(key)
                self._evict(message)
                self._failures[entry.id] += 1
                tries = self._failures[entry.id]
                log.exception("step failed", extra={"entry": entry.id, "conversation": message.conversation_id,
                                                    "attempt": tries})
                if tries >= self.engine.max_deliveries:
                    self._failures.pop(entry.id, None)
                    ops.extend(self.bus.dead_letter_ops(entry.stream, self.group, entry,
                                                        f"failed {tries} times: {type(exc).__name__}: {exc}"))
                else:
                    self.cursor.reread()
        return ops, acked, touched

    # -- conversations ---------------------------------------------------------------

    async def _load(self, messages: list[Message]) -> None:
        """Fill the caches for a batch: at most three round trips, none when warm (contacts
        are read again once older than CONTACT_FRESH_MS)."""
        addresses = list(dict.fromkeys((m.channel, m.address) for m in messages
                                       if m.kind == "customer" and not m.conversation_id
                                       and self._current.get((m.channel, m.address)) is None))
        if addresses:
            for address, conversation_id in zip(addresses, await self.store.current_ids(addresses), strict=True):
                if conversation_id:
                    self._current.put(address, conversation_id)
        wanted = {self._current.get((m.channel, m.address)) if m.kind == "customer" and not m.conversation_id
                  else m.conversation_id for m in messages}
        missing = [c for c in wanted if c and self._conversations.get(c) is None]
        if missing:
            for conversation in await self.store.get_many(missing):
                if conversation is not None:
                    self._conversations.put(conversation.id, conversation)
        contact_ids = {c.contact_id for c in (self._conversations.get(i) for i in wanted if i) if c and c.contact_id}
        now = self.clock_ms()
        stale = [c for c in contact_ids
                 if (cached := self._contacts.get(c)) is None or now - cached[1] > CONTACT_FRESH_MS]
        if stale:
            for contact in await self.store.contacts_many(stale):
                if contact is not None:
                    self._contacts.put(contact.id, (contact, now))

    def _evict(self, message: Message) -> None:
        conversation_id = message.conversation_id or self._current.get((message.channel, message.address))
        if conversation_id:
            self._conversations.drop(conversation_id)
        self._current.drop((message.channel, message.address))

    async def _begin(self, message: Message) -> Turn | None:
        now = self.clock_ms()
        conversation: Conversation | None = None
        if message.conversation_id:
            conversation = self._conversations.get(message.conversation_id)
            if conversation is None:
                conversation = await self.store.get(message.conversation_id)
                if conversation is not None:
                    self._conversations.put(conversation.id, conversation)
        if message.kind != "customer":
            if conversation is None:
                return None
            return Turn(message=message, conversation=conversation, contact=self._contact(conversation),
                        config=self.flow_config, now_ms=now, previous_status=conversation.status)
        if conversation is None:
            conversation_id = self._current.get((message.channel, message.address))
            conversation = self._conversations.get(conversation_id) if conversation_id else None
        is_new = reopened = False
        if conversation is not None and conversation.status == "resolved":
            if now - conversation.resolved_ms > self.reopen_within_ms:
                conversation = None
            else:
                reopened = True
        contact = self._contact(conversation) if conversation else None
        if conversation is None:
            conversation, contact = await self._open(message, now)
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
                    previous_status=previous)

    def _contact(self, conversation: Conversation) -> Contact | None:
        cached = self._contacts.get(conversation.contact_id) if conversation.contact_id else None
        return cached[0] if cached else None

    async def _open(self, message: Message, now: int) -> tuple[Conversation, Contact]:
        """A new conversation for a customer address (and a contact, unless one is linked)."""
        h = address_hash(message.channel, message.address)
        (number,) = await self.store.next_conversation_numbers([h])
        address = f"{message.channel}:{message.address}"
        (contact_id,) = await self.store.contact_ids_for([(message.channel, message.address)])
        sender = message.sender
        if contact_id is None and sender is not None and sender.email:
            # the channel vouches for this email (mail From, a confirmed widget form, the API
            # caller): the address joins the person who already wrote from that email
            contact_id = await self.store.contact_id_by_email(sender.email)
        contact = (await self.store.contact(contact_id)) if contact_id else None
        if contact is not None and address not in contact.addresses:
            contact.addresses.append(address)
        if contact is None:
            contact = Contact(id=new_id(), name=sender.name if sender else "", email=sender.email if sender else "",
                              language=sender.language if sender else "",
                              addresses=[address], created_ms=now)
        conversation = Conversation(id=f"{h}-{number}", channel=message.channel, address=message.address,
                                    contact_id=contact.id, created_ms=now, updated_ms=now)
        self._conversations.put(conversation.id, conversation)
        self._current.put((message.channel, message.address), conversation.id)
        self._contacts.put(contact.id, (contact, self.clock_ms()))
        return conversation, contact

    # -- effects ---------------------------------------------------------------------

    def _effects(self, turn: Turn, payload: bytes | None) -> list[list[Any]]:
        """The commands that write what ``turn`` caused; ``payload`` is the message as read
        from the stream, kept in the transcript as it arrived."""
        conversation = turn.conversation
        conversation.updated_ms = turn.now_ms
        ops: list[list[Any]] = []
        message = turn.message
        is_note = message.kind == "command" and message.name == "note"
        if turn.record and (message.kind in ("customer", "agent") or is_note):
            conversation.messages += 1
            ops.extend(self.store.transcript_ops(conversation.id, payload or message))
        for notice in turn.notices:
            ops.extend(self.store.transcript_ops(conversation.id, notice))
        for out in turn.outbound:
            ops.append(["XADD", keys.outbound(out.channel), "*", keys.PAYLOAD_FIELD, encode(out)])
            if out.kind == "reply" and message.kind != "agent":  # an agent's words are kept once, as theirs
                ops.extend(self.store.transcript_ops(conversation.id, out))
        for queue, case in turn.queued:
            ops.append(["XADD", keys.queue(queue), "MAXLEN", "~", keys.QUEUE_MAX_LEN, "*",
                        keys.PAYLOAD_FIELD, encode(case)])
        if turn.timers:
            zset = keys.timers(partition_of(conversation_hash(conversation.id), self.partitions))
            for due_ms, command in turn.timers:
                ops.append(["ZADD", zset, due_ms, encode(command)])
        for ref in turn.refs:
            ops.extend(self.store.ref_ops(ref, conversation.id))
        if turn.contact is not None and turn.contact_changed:
            ops.extend(self.store.contact_ops(turn.contact))
        ops.extend(self.store.save_ops(conversation, turn.previous_status))
        return ops


def _is_async(step: Step) -> bool:
    """True for async functions and for objects whose __call__ is async."""
    return inspect.iscoroutinefunction(step) or inspect.iscoroutinefunction(type(step).__call__)


def _unknown(message: Message) -> str:
    target = message.conversation_id or message.ref or f"{message.channel}:{message.address}"
    return f"no conversation for {message.kind} message (conversation {target!r})"
