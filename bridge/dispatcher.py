"""The dispatcher: reads each channel's outbound stream and delivers through its adapter.

The adapter's answer decides: `Delivered` (record the platform id, then ack), a
`TransientError` (wait what the platform said, else back off with jitter; after
``max_attempts`` dead-letter), a `PermanentError` (dead-letter at once with the reason).
Messages to one address (or about one conversation, for agent-side events) go out in
stream order; different addresses are sent concurrently within the channel's rate.

A redelivered entry (after a crash) whose send was recorded is acked without sending
again. The window between a platform accepting a send and the record is the only place
a crash can double a message; the HTTP webhook carries the message id so receivers can
drop that double.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bridge import failpoints, keys
from bridge.adapter import Adapter, Delivered, HealthState
from bridge.bus import Bus, Entry, LeaseLost, decode_entries
from bridge.cursor import GroupCursor
from bridge.errors import IntegrationBroken, PermanentError, SendError, TransientError
from bridge.lease import Leases
from bridge.metrics import DEAD_LETTERS, SEND_FAILURES, SEND_SECONDS, SENT
from bridge.model import Message, now_ms
from bridge.ratelimit import Pacer
from bridge.retry import backoff_s

log = logging.getLogger("bridge.dispatcher")

SENT_RECORD_DAYS = 2  # how long a delivered outbound id is remembered (day buckets)
MAX_CONCURRENT_SENDS = 32


def sent_key(channel: str, day: int) -> str:
    return f"{keys.sent(channel)}:{day}"


def _platform_id(outcome: _Outcome) -> str:
    return (outcome.delivered.platform_id if outcome.delivered else "") or "-"


def lane_key(message: Message) -> str:
    """What a message keeps its order within: its address for the customer's side; its
    conversation for agent-side events (a case's ticket goes before its follow-ups)."""
    if message.kind == "event" and message.conversation_id:
        return message.conversation_id
    return message.address or message.conversation_id


def _today() -> int:
    return now_ms() // 86_400_000


@dataclass
class _Outcome:
    entry: Entry
    message: Message
    delivered: Delivered | None = None
    error: SendError | None = None
    abandoned: bool = False  # stopping during a retry wait: leave unacked for the next run
    retried: bool = False  # has a failed-attempts counter in Redis to clear


class ChannelDispatcher:
    """Delivery for one channel: owns the channel's outbound stream while holding its lease."""

    def __init__(self, *, bus: Bus, adapter: Adapter, worker_id: str, lease_ttl_s: float, block_ms: int,
                 batch_size: int, claim_min_idle_s: float,
                 report_health: Callable[[HealthState, str], Awaitable[None]]) -> None:
        self.bus = bus
        self.adapter = adapter
        self.channel = adapter.name
        self.stream = keys.outbound(self.channel)
        self.group = keys.DISPATCH_GROUP
        self.worker_id = worker_id
        self.report_health = report_health
        config = adapter.config
        self.max_attempts = config.max_attempts
        self.pacer = Pacer(config.rate_per_s or adapter.default_rate_per_s)
        self.address_pacer = Pacer(config.rate_per_address_per_s or adapter.default_rate_per_address_per_s)
        self.leases = Leases(bus.redis, worker_id, [self.stream], ttl_s=lease_ttl_s, fair_share=False,
                             role=f"dispatch:{self.channel}")
        self._stopping = asyncio.Event()
        self.cursor = GroupCursor(bus, self.group, worker_id, count=batch_size, block_ms=block_ms,
                                  min_idle_ms=int(claim_min_idle_s * 1000), sleep=self._sleep)
        self.delivered = 0
        self._sent = SENT.labels(self.channel)
        self._send_seconds = SEND_SECONDS.labels(self.channel)

    def stop(self) -> None:
        self._stopping.set()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True when woken by stop."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
            return True
        except TimeoutError:
            return False

    async def run(self) -> None:
        await self.bus.ensure_group(self.stream, self.group)
        keeper = asyncio.create_task(self.leases.keep(), name=f"dispatch-lease:{self.channel}")
        next_own_check = time.monotonic() + 30.0
        try:
            while not self._stopping.is_set():
                try:
                    gained, _ = self.leases.changes()
                    self.cursor.gained(gained)
                    if not self.leases.held:
                        await self._sleep(0.05)
                        continue
                    if time.monotonic() >= next_own_check:  # entries of a lost read reply
                        self.cursor.reread()
                        next_own_check = time.monotonic() + 30.0
                    entries = await self.cursor.next(self.leases.held)
                    if entries:
                        await self.deliver(entries)
                except LeaseLost as exc:
                    if self.leases.drop(exc.lease_key) is not None:
                        log.warning("lease lost", extra={"channel": self.channel})
                    self.cursor.reread()
                except Exception as exc:
                    if not (isinstance(exc, ConnectionError | OSError | TimeoutError)
                            or type(exc).__module__.startswith("redis")):
                        raise
                    log.warning("redis unavailable, retrying", extra={"channel": self.channel, "error": repr(exc)})
                    self.cursor.reread()
                    await self._sleep(0.5)
        finally:
            keeper.cancel()
            try:
                await self.leases.release_all()
            except Exception as exc:
                log.info("could not release lease", extra={"error": repr(exc)})

    # -- one batch -------------------------------------------------------------------

    async def deliver(self, entries: list[Entry]) -> None:
        fence: dict[str, Any] = {"leases": self.leases.keys_held(), "owner": self.worker_id}
        decoded, malformed = decode_entries(entries)
        for entry, reason in malformed:
            DEAD_LETTERS.labels(self.stream).inc()
            await self.bus.dead_letter(self.stream, self.group, entry, reason, **fence)
        recorded, attempts = await self._history(decoded)
        outcomes: list[_Outcome] = []
        by_key: dict[str, list[_Outcome]] = defaultdict(list)
        for entry, message in decoded:
            outcome = _Outcome(entry, message)
            if message.id in recorded:
                outcome.delivered = Delivered(platform_id=recorded[message.id])
            else:
                by_key[lane_key(message)].append(outcome)
            outcomes.append(outcome)
        queue = deque(by_key.items())

        async def worker() -> None:
            """Sends one address's messages in order, then takes the next address."""
            while queue:
                key, items = queue.popleft()
                for item in items:
                    item.retried = item.entry.id in attempts
                    await self._send(key, item, attempts.get(item.entry.id, 0))
                    if item.abandoned:  # stopping: the rest stay unacked, in order, for the next run
                        break

        await asyncio.gather(*(worker() for _ in range(min(len(queue), MAX_CONCURRENT_SENDS))))
        await self._finish(outcomes, recorded, fence)

    async def _history(self, decoded: list[tuple[Entry, Message]]) -> tuple[dict[str, str], dict[str, int]]:
        """Which of these were already sent (a redelivery), and earlier failed attempts."""
        if not decoded or not self.cursor.replayed:
            return {}, {}
        ids = [m.id for _, m in decoded]
        entry_ids = [e.id for e, _ in decoded]
        today = _today()
        async with self.bus.redis.pipeline(transaction=False) as pipe:
            for day in range(today - SENT_RECORD_DAYS + 1, today + 1):
                pipe.hmget(sent_key(self.channel, day), ids)
            pipe.hmget(keys.attempts(self.stream), entry_ids)
            *days, tries = await pipe.execute()
        recorded: dict[str, str] = {}
        for values in days:
            for message_id, platform_id in zip(ids, values, strict=True):
                if platform_id is not None:
                    recorded[message_id] = platform_id.decode()
        attempts = {e: int(t) for e, t in zip(entry_ids, tries, strict=True) if t is not None}
        return recorded, attempts

    async def _send(self, key: str, item: _Outcome, attempt: int) -> None:
        message = item.message
        while True:
            if attempt >= self.max_attempts:  # tried often enough before a restart
                item.error = PermanentError(f"gave up after {attempt} attempts")
                return
            if self.pacer.interval_s:
                await self.pacer.wait()
            if self.address_pacer.interval_s:
                await self.address_pacer.wait(key)
            started = time.perf_counter()
            try:
                item.delivered = await self.adapter.send(message)
                failpoints.hit("dispatch.after_send")
                self._sent.inc()
                self._send_seconds.observe(time.perf_counter() - started)
                return
            except PermanentError as exc:
                SEND_FAILURES.labels(self.channel, "permanent").inc()
                item.error = exc
                if isinstance(exc, IntegrationBroken):
                    await self.report_health("broken", exc.reason)
                return
            except TransientError as exc:
                reason, wait_s = exc.reason, exc.retry_after_s
            except Exception as exc:  # an adapter bug or an unexpected library error: retry, then dead-letter
                log.exception("send raised", extra={"channel": self.channel, "message_id": message.id})
                reason, wait_s = f"{type(exc).__name__}: {exc}", None
            SEND_FAILURES.labels(self.channel, "transient").inc()
            attempt += 1
            item.retried = True
            await self.bus.redis.hincrby(keys.attempts(self.stream), item.entry.id, 1)
            if attempt >= self.max_attempts:
                item.error = PermanentError(f"gave up after {attempt} attempts: {reason}")
                return
            delay_s = wait_s if wait_s is not None else backoff_s(attempt, cap_s=60.0)
            log.info("send will be retried", extra={"channel": self.channel, "message_id": message.id,
                                                    "attempt": attempt, "delay_s": round(delay_s, 3),
                                                    "reason": reason})
            if await self._sleep(delay_s):
                item.abandoned = True
                return

    async def _finish(self, outcomes: list[_Outcome], recorded: dict[str, str], fence: dict[str, Any]) -> None:
        """Record what was delivered, report to the engine, dead-letter failures, then ack."""
        delivered = [o for o in outcomes if o.delivered is not None and o.message.id not in recorded]
        if delivered:
            bucket = sent_key(self.channel, _today())
            ids = [x for o in delivered for x in (o.message.id, _platform_id(o))]
            record: list[list[Any]] = [["HSET", bucket, *ids], ["EXPIRE", bucket, SENT_RECORD_DAYS * 86_400]]
            record += [["SET", keys.ref(o.delivered.ref), o.message.conversation_id] for o in delivered
                       if o.delivered is not None and o.delivered.ref and o.message.conversation_id]
            await self.bus.commit(record, **fence)
        failpoints.hit("dispatch.before_ack")
        notices = [n for n in (self._notice(o) for o in outcomes) if n is not None]
        if notices:
            await self.bus.publish_many(notices)
        ops: list[list[Any]] = []
        for o in outcomes:
            if o.error is not None:
                DEAD_LETTERS.labels(self.stream).inc()
                log.warning("dead-lettered", extra={"channel": self.channel, "message_id": o.message.id,
                                                    "conversation": o.message.conversation_id,
                                                    "reason": o.error.reason})
                ops.extend(self.bus.dead_letter_ops(self.stream, self.group, o.entry, o.error.reason))
        acked = [o.entry.id for o in outcomes if o.delivered is not None]
        if acked:
            ops.append(["XACK", self.stream, self.group, *acked])
        retried = [o.entry.id for o in outcomes if o.delivered is not None and o.retried]
        if retried:
            ops.append(["HDEL", keys.attempts(self.stream), *retried])
        await self.bus.commit(ops, **fence)
        self.delivered += len(acked)

    def _notice(self, outcome: _Outcome) -> Message | None:
        """A delivery report for the engine: agents see whether their reply arrived, and an
        unreachable address marks the conversation."""
        message = outcome.message
        if outcome.abandoned or not message.conversation_id or message.kind != "reply":
            return None
        wants = bool(message.data.get("notify_delivery"))
        error = outcome.error
        unreachable = isinstance(error, PermanentError) and error.unreachable
        if not wants and not unreachable:
            return None
        data: dict[str, Any] = {"message_id": message.id, "channel": self.channel, "notify": wants,
                                "agent_channel": message.data.get("agent_channel", "")}
        if error is None:
            data.update(status="delivered", platform_id=outcome.delivered.platform_id if outcome.delivered else "")
        else:
            data.update(status="failed", reason=error.reason, unreachable=unreachable)
        return Message(kind="command", channel=self.channel, name="delivery",
                       conversation_id=message.conversation_id, data=data,
                       dedupe_key=f"delivery:{message.id}")
