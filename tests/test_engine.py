"""The engine's guarantees, driven directly: fenced commits, failing steps, timers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from bridge import keys
from bridge.bus import Bus, LeaseLost, StaleCache
from bridge.config import RedisSettings, Settings
from bridge.connection import close, connect
from bridge.contactwrites import ContactWrites
from bridge.effects import Effects
from bridge.engine import Engine
from bridge.model import Contact, Conversation, Message, Sender, decode, encode_record, partition_of
from bridge.ops import MAX_VALUES
from bridge.store import Saves, Store
from bridge.templates import Templates
from bridge.turn import FlowConfig, Turn
from flows.commands import Commands
from flows.routing import Routing
from flows.triage import KeywordTriage
from tests.harness import Clock, commit, finished, outbound_entries, wait_for
from tests.redis_proxy import AnswerLosingProxy


def settings(**engine: Any) -> Settings:
    return Settings.model_validate({
        "engine": {"partitions": 2, "lease_ttl_s": 1, "claim_min_idle_s": 0.2, "block_ms": 50, "max_deliveries": 3,
                   **engine},
        "triage": {"urgent_keywords": {"en": ["urgent"]}},
    })


@pytest.fixture
async def make_engine(redis: aioredis.Redis) -> AsyncIterator[Any]:
    tasks: list[tuple[Engine, asyncio.Task[None]]] = []

    def make(steps: list[Any], clock: Clock | None = None, client: aioredis.Redis | None = None,
             **engine: Any) -> Engine:
        s = settings(**engine)
        bus, store = Bus(client or redis, partitions=s.engine.partitions), Store(redis, partitions=s.engine.partitions)
        config = FlowConfig(settings=s, channels=frozenset({"api"}), templates=Templates(),
                            clock_ms=clock or Clock(), store=store)
        built = [step(config) if isinstance(step, type) else step for step in steps]
        engine_ = Engine(bus=bus, store=store, flow_config=config, steps=built, worker_id="w1",
                         clock_ms=config.clock_ms)
        tasks.append((engine_, asyncio.create_task(engine_.run())))
        return engine_

    yield make
    for engine_, task in tasks:
        engine_.stop()
        await finished(task)


async def test_a_commit_is_refused_once_the_lease_is_lost(redis: aioredis.Redis) -> None:
    bus = Bus(redis, partitions=1)
    await redis.set(keys.lease("s"), "someone-else")
    with pytest.raises(LeaseLost):
        await bus.commit([["SET", "written", "1"]], leases=[keys.lease("s")], owner="me")
    assert await redis.exists("written") == 0
    await redis.set(keys.lease("s"), "me")
    await bus.commit([["SET", "written", "1"]], leases=[keys.lease("s")], owner="me")
    assert await redis.get("written") == b"1"


async def test_a_guarded_commit_is_refused_once_its_guard_key_changed(redis: aioredis.Redis) -> None:
    bus = Bus(redis, partitions=1)
    counter = keys.erasures_rev(0, 1)
    guard = [(counter, "")]  # as read before any erasure: no such key
    await bus.commit([["SET", "first", "1"]], guards=guard)
    await redis.incr(counter)
    with pytest.raises(StaleCache):
        await bus.commit([["SET", "second", "1"]], guards=guard)
    assert await redis.get("first") == b"1" and await redis.exists("second") == 0
    await bus.commit([["SET", "second", "1"]], guards=[(counter, "1")])
    assert await redis.get("second") == b"1"


async def test_a_lost_lease_is_dropped_at_once_and_logged_once(redis: aioredis.Redis, make_engine: Any,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """After a stall another worker owns the partition: the engine stops reading it at once
    instead of retrying the refused commit until its next lease renewal."""
    seen: list[str] = []
    engine = make_engine([lambda turn: seen.append(turn.message.text)], partitions=1, lease_ttl_s=30)
    stream = keys.inbound(0, 1)
    await wait_for(lambda: stream in engine.leases.held, 10, "the partition's lease")
    await redis.set(keys.lease(stream), "another-worker", px=60_000)  # taken over while we stalled
    await engine.bus.publish(Message(kind="customer", channel="api", address="a", text="hello"))
    await wait_for(lambda: stream not in engine.leases.held, 10, "the lost partition dropped")
    await wait_for(lambda: [r for r in caplog.records if r.name == "bridge.engine"], 10, "the warning")
    await asyncio.sleep(1.0)  # a spinning engine would log hundreds of warnings in this second
    lost = [r for r in caplog.records if r.getMessage() == "lease lost, dropping partition state"]
    assert len(lost) == 1 and lost[0].stream == stream  # type: ignore[attr-defined]
    assert seen == ["hello"]  # handled once, its commit refused; the new owner handles it
    assert await outbound_entries(redis, "api", partitions=1) == []


async def test_a_link_handled_again_after_a_lost_lease_is_recorded_once(redis: aioredis.Redis,
                                                                         make_engine: Any) -> None:
    """A batch's contact changes are written before its partition's commit (in the
    contacts' own slot): when that commit is refused and the batch runs again, the contact
    is the same and the agents see one link in its history, not two."""
    ran: list[str] = []
    stream, store = keys.inbound(0, 1), Store(redis, partitions=1)
    engine = make_engine([lambda turn: ran.append(turn.message.name or turn.message.text), Commands(store)],
                         partitions=1, lease_ttl_s=30)
    await wait_for(lambda: stream in engine.leases.held, 10, "the partition's lease")
    await engine.bus.publish(Message(kind="customer", channel="api", address="linked", text="hello"))
    await wait_for(lambda: engine.processed == 1, 10, "the conversation opened")
    conversation = await store.for_address("api", "linked")
    assert conversation is not None
    await redis.set(keys.lease(stream), "another-worker", px=60_000)  # taken over while we stalled
    await engine.bus.publish(Message(kind="command", channel="api", name="link", conversation_id=conversation.id,
                                     data={"email": "Linked@Example.com"}))
    await wait_for(lambda: stream not in engine.leases.held, 10, "the lost partition dropped")
    assert ran == ["hello", "link"] and engine.processed == 1  # handled, its commit refused
    await redis.delete(keys.lease(stream))  # the other worker went: ours takes the partition back
    await wait_for(lambda: engine.processed == 2, 20, "the link handled again and committed")
    assert ran == ["hello", "link", "link"]
    contact = await store.contact(conversation.contact_id)
    assert contact is not None and contact.email == "linked@example.com"
    assert await store.contact_id_by_email("linked@example.com") == contact.id
    events = [json.loads(e) for e in await store.contact_events([contact.id])]
    assert [(e["action"], e["value"]) for e in events] == [("link", "linked@example.com")]


def echo_job_step(answered: list[str]) -> Callable[[Turn], None]:
    """A step whose turn on a customer message starts a job; the job's result (the command
    ``echo``) is noted in ``answered`` by conversation when it comes back."""
    def step(turn: Turn) -> None:
        message = turn.message
        if message.kind == "customer":
            conversation_id = turn.conversation.id

            async def work() -> Message:
                return Message(kind="command", channel="api", name="echo", conversation_id=conversation_id,
                               dedupe_key=f"echo:{message.id}")

            assert turn.start_job(work(), "echo")
        elif message.name == "echo":
            answered.append(message.conversation_id)

    return step


async def test_a_job_of_a_turn_whose_commit_was_refused_leaves_its_result_to_the_run_again(
        redis: aioredis.Redis, make_engine: Any) -> None:
    """A turn starts a job (a translation, an order lookup), then its batch's commit is
    refused (the lease lost): the batch runs again and opens the conversation again, under
    another id. Only the job of the committed run publishes its result (the first one's
    named a conversation never stored, went to the dead letters and took the dedupe key the
    second's needed: the translation never showed)."""
    answered: list[str] = []
    stream, store, step = keys.inbound(0, 1), Store(redis, partitions=1), echo_job_step(answered)

    engine = make_engine([step], partitions=1, lease_ttl_s=30)
    await wait_for(lambda: stream in engine.leases.held, 10, "the partition's lease")
    await redis.set(keys.lease(stream), "another-worker", px=60_000)  # taken over while we stalled
    await engine.bus.publish(Message(kind="customer", channel="api", address="asks", text="hello"))
    await wait_for(lambda: stream not in engine.leases.held, 10, "the lost partition dropped")
    assert engine.processed == 0
    await asyncio.sleep(0.2)  # the first run's job has its result by now
    await redis.delete(keys.lease(stream))  # the other worker went: ours takes the partition back
    await wait_for(lambda: answered, 20, "the job's result answered")
    await asyncio.sleep(0.3)
    conversation = await store.for_address("api", "asks")
    assert conversation is not None and answered == [conversation.id]
    assert await engine.bus.dead_letters() == []


@pytest.fixture
async def answer_losing() -> AsyncIterator[Callable[..., Awaitable[tuple[AnswerLosingProxy, aioredis.Redis]]]]:
    """A client through an `AnswerLosingProxy` (requested before ``make_engine``, so the
    engines stop before the client and the proxy go)."""
    made: list[tuple[AnswerLosingProxy, aioredis.Redis]] = []

    async def make(redis_url: str, marker: bytes, losses: int, retries: int,
                   deliver: bool = True) -> tuple[AnswerLosingProxy, aioredis.Redis]:
        proxy = await AnswerLosingProxy(redis_url, marker, losses, deliver=deliver).__aenter__()
        made.append((proxy, connect(RedisSettings(url=proxy.url), retries=retries)))
        return made[-1]

    yield make
    for proxy, client in made:
        await close(client)
        await proxy.__aexit__()


@pytest.mark.parametrize("reached", [True, False], ids=["ran", "never-reached-redis"])
async def test_a_job_of_a_turn_whose_commit_got_no_answer_publishes_once_whether_it_ran_or_not(
        redis: aioredis.Redis, redis_url: str, answer_losing: Any, make_engine: Any, reached: bool) -> None:
    """A turn started a job, and every try of its batch's commit lost its answer (the
    connection cut after the send, or before Redis had it). Ran, the batch is never run
    again (its entries are acked), so the job's result must not be dropped with the batch's
    failure: once Redis answers, the engine asks whether the commit ran. Not ran, the batch
    runs again and its own job answers: one result either way."""
    answered: list[str] = []
    stream, store, step = keys.inbound(0, 1), Store(redis, partitions=1), echo_job_step(answered)
    proxy, client = await answer_losing(redis_url, b"EXEC", losses=2, retries=1, deliver=reached)  # two tries
    engine = make_engine([step], partitions=1, lease_ttl_s=30, client=client)
    await wait_for(lambda: stream in engine.leases.held, 10, "the partition's lease")
    await engine.bus.publish(Message(kind="customer", channel="api", address="asks", text="hello"))
    await wait_for(lambda: answered, 20, "the job's result answered")
    await asyncio.sleep(0.5)  # a second result would be in by now
    assert proxy.lost == 2  # the first commit's two tries
    conversation = await store.for_address("api", "asks")
    assert conversation is not None and answered == [conversation.id]
    assert conversation.messages == 1  # its turn was stored once
    assert await engine.bus.dead_letters() == []


async def test_a_batch_of_more_conversations_than_the_cache_holds_opens_none_anew(
        redis: aioredis.Redis, make_engine: Any) -> None:
    """A conversation the cache dropped before its message's turn (the batch loaded more
    conversations than ``engine.conversation_cache`` allows) must not be opened again."""
    engine = make_engine([Routing], partitions=1, conversation_cache=1, batch_size=100)
    customers = [f"c{i}" for i in range(60)]
    for round_ in (1, 2):
        await engine.bus.publish_many([Message(kind="customer", channel="api", address=c, text=f"hello {round_}")
                                       for c in customers])
        await wait_for(lambda n=round_: engine.processed >= 60 * n, 20, f"round {round_} handled")
    store = Store(redis, partitions=1)
    conversations = [await store.for_address("api", c) for c in customers]
    assert all(c is not None and c.id.endswith("-1") and c.messages == 2 for c in conversations), \
        [(c.id, c.messages) for c in conversations if c is not None and (not c.id.endswith("-1") or c.messages != 2)]


async def test_a_failing_step_is_retried_then_dead_lettered_and_others_go_on(
        redis: aioredis.Redis, make_engine: Any) -> None:
    """One partition: both messages are one stream entry (a publish batch). The good one is
    handled once, though the entry is read again for each retry of the other."""
    calls: list[str] = []

    def flaky(turn: Turn) -> None:
        calls.append(turn.message.text)
        if turn.message.text == "boom":
            raise ValueError("cannot handle boom")

    engine = make_engine([flaky, Routing], step_retry_window_s=1.0, partitions=1)
    bus = engine.bus
    await bus.publish_many([Message(kind="customer", channel="api", address="a", text="boom"),
                            Message(kind="customer", channel="api", address="b", text="fine")])
    assert await redis.xlen(keys.inbound(0, 1)) == 1
    (letter,) = await wait_for(lambda: bus.dead_letters(), 10, "the dead letter")
    assert letter["reason"].startswith("failed ") and letter["reason"].endswith("ValueError: cannot handle boom")
    # retried with backoff over the one-second window, not back to back
    assert 2 <= calls.count("boom") <= 10 and calls.count("fine") == 1
    assert len(await outbound_entries(redis, "api", engine.bus.partitions)) == 1  # only the good message was answered


async def test_a_step_failing_for_two_seconds_then_recovering_loses_nothing(redis: aioredis.Redis,
                                                                           make_engine: Any) -> None:
    """A dependency that blinks: the message is tried again with backoff until it works,
    its conversation's next message waits behind it, another conversation is not held."""
    clock = asyncio.get_running_loop().time
    down_until = clock() + 2.0
    handled: list[str] = []
    failures = 0

    def needs_the_dependency(turn: Turn) -> None:
        nonlocal failures
        if turn.message.address == "a" and clock() < down_until:
            failures += 1
            raise ConnectionRefusedError("the dependency is down")
        handled.append(turn.message.text)

    engine = make_engine([needs_the_dependency])
    await engine.bus.publish_many([Message(kind="customer", channel="api", address="a", text="a1"),
                                   Message(kind="customer", channel="api", address="a", text="a2"),
                                   Message(kind="customer", channel="api", address="b", text="b1")])
    await wait_for(lambda: "b1" in handled, 10, "the other conversation")
    assert "a1" not in handled  # b went on while a waited
    await wait_for(lambda: len(handled) == 3, 20, "a's messages once the dependency is back")
    assert handled.index("a1") < handled.index("a2")
    assert await engine.bus.dead_letters() == []
    assert 2 <= failures <= 20  # tried again with backoff, not hundreds of times in a spin


async def test_a_slow_step_in_one_partition_never_holds_another(redis: aioredis.Redis, make_engine: Any) -> None:
    """An order lookup waiting on a slow shop in partition A: partition B's customers are
    answered and committed meanwhile."""
    shop_answers = asyncio.Event()
    waiting: list[str] = []

    async def lookup(turn: Turn) -> None:
        if turn.message.address == "slow":
            waiting.append(turn.message.text)
            await shop_answers.wait()

    engine = make_engine([lookup, Routing], partitions=2)
    slow = Message(kind="customer", channel="api", address="slow", text="where is order 12345?")
    fast = next(m for m in (Message(kind="customer", channel="api", address=f"fast-{i}", text="hello")
                            for i in range(50))
                if partition_of(m.partition_key, 2) != partition_of(slow.partition_key, 2))
    await engine.bus.publish(slow)
    await wait_for(lambda: waiting, 10, "the slow lookup under way")
    await engine.bus.publish(fast)
    conversation = await wait_for(lambda: Store(redis, partitions=2).for_address("api", fast.address), 10,
                                  "the other partition's customer committed")
    assert conversation.urgency == "routine" and waiting == [slow.text]
    assert await Store(redis, partitions=2).for_address("api", "slow") is None  # still waiting, nothing half-written
    shop_answers.set()
    await wait_for(lambda: Store(redis, partitions=2).for_address("api", "slow"), 10, "the slow one committed after")


async def test_one_conversation_waits_behind_its_failing_message(redis: aioredis.Redis, make_engine: Any) -> None:
    seen: list[str] = []

    def fails_once(turn: Turn) -> None:
        if turn.message.text == "first" and "first" not in seen:
            seen.append("first")
            raise RuntimeError("transient")
        seen.append(turn.message.text)

    engine = make_engine([fails_once])
    await engine.bus.publish_many([Message(kind="customer", channel="api", address="same", text=t)
                                   for t in ("first", "second", "third")])
    await wait_for(lambda: len(seen) == 4, 10)
    assert seen == ["first", "first", "second", "third"]  # the later ones waited, order kept


async def test_timers_fire_through_the_engine_on_the_given_clock(redis: aioredis.Redis, make_engine: Any) -> None:
    clock = Clock()
    fired: list[str] = []

    def scheduler(turn: Turn) -> None:
        if turn.message.kind == "customer":
            turn.schedule(turn.now_ms + 60_000, "follow_up", {"why": "test"})
        elif turn.message.kind == "command" and turn.message.name == "follow_up":
            fired.append(turn.conversation.id)

    engine = make_engine([scheduler], clock=clock)
    await engine.bus.publish(Message(kind="customer", channel="api", address="t", text="hi"))
    conversation = await wait_for(lambda: Store(redis, partitions=2).for_address("api", "t"), 10)
    await asyncio.sleep(1.2)  # the engine checks timers every second; nothing is due yet
    assert fired == []
    clock.advance(minutes=1)
    await wait_for(lambda: fired, 10, "the timer")
    assert fired == [conversation.id]


class ContactEmails:
    """An engine whose one step notes the contact's email at each of the customer's messages."""

    def __init__(self, make_engine: Any, clock: Clock, address: str) -> None:
        self.address = address
        self.seen: list[str] = []
        self.engine = make_engine([self._record], clock=clock)

    def _record(self, turn: Turn) -> None:
        if turn.message.kind == "customer":
            self.seen.append(turn.contact.email if turn.contact else "?")

    async def say(self, text: str) -> str:
        """The customer writes; the email the engine's turn saw."""
        count = len(self.seen) + 1
        await self.engine.bus.publish(Message(kind="customer", channel="api", address=self.address, text=text))
        await wait_for(lambda: len(self.seen) == count, 10, f"message {text!r}")
        return self.seen[-1]

    async def contact(self, store: Store) -> Contact:
        conversation = await store.for_address("api", self.address)
        assert conversation is not None
        contact = await store.contact(conversation.contact_id)
        assert contact is not None
        return contact


async def test_a_contact_another_worker_changed_is_read_again(redis: aioredis.Redis, make_engine: Any) -> None:
    customer, store = ContactEmails(make_engine, Clock(), "k1"), Store(redis, partitions=2)
    assert [await customer.say("one"), await customer.say("two")] == ["", ""]  # cached, change counter read
    contact = await customer.contact(store)
    contact.email = "buyer@factory.example"  # linked by another worker, in another partition
    other, saves = Conversation(id="other-1", channel="email", address="b@f"), Saves(2)
    ops = store.effect_ops(Effects(conversation=other, previous_status="open", contact=contact, contact_shared=True),
                           saves)
    await store.write_contacts(saves.contacts)
    await commit(redis, ops + saves.ops())
    assert await customer.say("three") == "buyer@factory.example"  # at once: the other worker's commit said so


async def test_a_cached_contact_is_read_again_after_a_while(redis: aioredis.Redis, make_engine: Any) -> None:
    """A safety net for a change that did not say so (written by an older version)."""
    clock = Clock()
    customer, store = ContactEmails(make_engine, clock, "k2"), Store(redis, partitions=2)
    assert [await customer.say("one"), await customer.say("two")] == ["", ""]
    contact = await customer.contact(store)
    contact.email = "quiet@factory.example"
    quietly = ContactWrites()  # as an older version wrote it: no change counted
    quietly.save(contact, encode_record(contact.record()), shared=False)
    await store.write_contacts(quietly)
    assert await customer.say("three") == ""
    clock.advance(minutes=1.1)
    assert await customer.say("four") == "quiet@factory.example"


async def test_a_partition_waiting_on_a_lookup_does_not_hold_up_the_others(redis: aioredis.Redis,
                                                                              make_engine: Any) -> None:
    """The message in one partition waits for something only a message in another partition
    of the same batch provides: it is handled only if partitions go on side by side."""
    bus = Bus(redis, partitions=2)
    addresses = [f"p{i}" for i in range(20)]
    first = next(a for a in addresses if bus.inbound_stream(Message(kind="customer", channel="api", address=a))
                 == keys.inbound(0, 2))
    second = next(a for a in addresses if bus.inbound_stream(Message(kind="customer", channel="api", address=a))
                  == keys.inbound(1, 2))
    other_partition_seen = asyncio.Event()
    handled: list[str] = []
    timed_out: list[str] = []

    async def lookup(turn: Turn) -> None:
        if turn.message.kind != "customer":
            return
        if turn.message.address == first:
            try:  # e.g. a shop API taking its time
                await asyncio.wait_for(other_partition_seen.wait(), 5)
            except TimeoutError:
                timed_out.append(turn.message.address)
                raise
        else:
            other_partition_seen.set()
        handled.append(turn.message.address)

    # both are in the stream before the engine reads: they arrive in one batch
    await bus.publish(Message(kind="customer", channel="api", address=first, text="where is order 5521?"))
    await bus.publish(Message(kind="customer", channel="api", address=second, text="hello"))
    make_engine([lookup])
    await wait_for(lambda: len(handled) == 2, 20, "both messages")
    assert handled == [second, first] and timed_out == []


async def test_urgent_keywords_in_any_configured_language(redis: aioredis.Redis, make_engine: Any) -> None:
    engine = make_engine([KeywordTriage, Routing])
    await engine.bus.publish(Message(kind="customer", channel="api", address="u1", text="This is URGENT!!"))
    await engine.bus.publish(Message(kind="customer", channel="api", address="u2", text="no urgency here"))
    store = Store(redis, partitions=2)
    first = await wait_for(lambda: store.for_address("api", "u1"), 10)
    second = await wait_for(lambda: store.for_address("api", "u2"), 10)
    assert first.urgency == "urgent" and second.urgency == "routine"
    replies = [decode(f[b"m"]) for _, f in await wait_for(lambda: _entries(redis, 2), 10)]
    by_address = {r.address: r.text for r in replies}
    assert "minutes" in by_address["u1"] and "24 hours" in by_address["u2"]


async def _entries(redis: aioredis.Redis, n: int) -> list[tuple[bytes, dict[bytes, bytes]]] | None:
    entries = await outbound_entries(redis, "api", partitions=2)
    return entries if len(entries) >= n else None


async def test_after_a_dead_letter_its_conversation_goes_on_in_order(redis: aioredis.Redis, make_engine: Any) -> None:
    handled: list[str] = []

    def fails_on_boom(turn: Turn) -> None:
        if turn.message.text == "boom":
            raise ValueError("cannot handle boom")
        handled.append(turn.message.text)

    engine = make_engine([fails_on_boom], step_retry_window_s=1.0)
    await engine.bus.publish_many([Message(kind="customer", channel="api", address="same", text=t)
                                   for t in ("first", "boom", "after 1", "after 2")])
    await wait_for(lambda: len(handled) == 3, 20, "the messages behind the dead letter")
    assert handled == ["first", "after 1", "after 2"]  # they waited for it, then went on in order
    (letter,) = await engine.bus.dead_letters()
    assert "cannot handle boom" in letter["reason"]


async def test_a_batch_saves_each_conversation_as_its_last_turn_left_it(redis: aioredis.Redis) -> None:
    """One commit's conversations are written once each (one MSET, one ZADD per status):
    the status lists and the records show the last turn, also when a conversation left a
    status and came back to it within the batch, and for more conversations than one
    command carries."""
    store, saves = Store(redis, partitions=8), Saves(8)
    back = Conversation(id="back-1", channel="api", address="b", status="open", updated_ms=1)
    await commit(redis, store.save_ops(back, None))
    for status, updated_ms, previous in (("resolved", 10, "open"), ("open", 20, "resolved")):
        back.status, back.updated_ms = status, updated_ms
        store.effect_ops(Effects(conversation=back, previous_status=previous), saves)
    moved = Conversation(id="moved-1", channel="api", address="m", status="pending", updated_ms=1)
    await commit(redis, store.save_ops(moved, None))
    for status, updated_ms, previous in (("open", 10, "pending"), ("resolved", 30, "open")):
        moved.status, moved.updated_ms = status, updated_ms
        store.effect_ops(Effects(conversation=moved, previous_status=previous), saves)
    many = [Conversation(id=f"new-{n}", channel="api", address=f"n{n}", status="open", updated_ms=5)
            for n in range(1, MAX_VALUES * 2)]
    for conversation in many:
        store.effect_ops(Effects(conversation=conversation, previous_status=None), saves)
    await commit(redis, saves.ops())

    assert await store.ids_with_status("resolved") == ["moved-1"]
    assert await store.ids_with_status("pending") == []
    opened = await store.ids_with_status("open")
    assert opened[-1] == "back-1" and len(opened) == len(many) + 1  # back-1 last: updated at 20
    assert await redis.zscore(keys.status_index("back-1", "open", 8), "back-1") == 20
    saved = await store.get_many(["back-1", "moved-1", many[-1].id])
    assert [(c.status, c.updated_ms) for c in saved if c] == [("open", 20), ("resolved", 30), ("open", 5)]
    assert (await store.for_address("api", many[-1].address)) == many[-1]


async def test_a_busy_conversation_moves_in_the_status_lists_once_a_second(redis: aioredis.Redis) -> None:
    """A turn that keeps the status writes the conversation's place in its status list
    only when it was last updated in an earlier second (`keys.INDEX_GRAIN_MS`): the
    lists' order is at most that far behind, a status change shows at once, and the
    record always has the exact time."""
    store = Store(redis, partitions=8)
    second = keys.INDEX_GRAIN_MS
    busy = Conversation(id="busy-1", channel="api", address="b", status="open", updated_ms=50 * second + 100)
    await commit(redis, store.save_ops(busy, None))
    quiet = Conversation(id="quiet-1", channel="api", address="q", status="open", updated_ms=50 * second + 500)
    await commit(redis, store.save_ops(quiet, None))

    async def turn(status: str, at_ms: int) -> None:
        saves = Saves(8)
        before = (busy.status, busy.updated_ms)
        busy.status, busy.updated_ms = status, at_ms
        store.effect_ops(Effects(conversation=busy, previous_status=before[0], previous_updated_ms=before[1]), saves)
        await commit(redis, saves.ops())

    async def place(status: str) -> float | None:
        score: float | None = await redis.zscore(keys.status_index(busy.id, status, 8), busy.id)
        return score

    await turn("open", 50 * second + 900)  # the same second: its place stays, behind quiet-1's
    assert await place("open") == 50 * second + 100
    assert (await store.get(busy.id)) == busy  # the record is exact
    assert await store.ids_with_status("open") == ["busy-1", "quiet-1"]
    await turn("open", 51 * second + 50)  # a new second: it moves
    assert await place("open") == 51 * second + 50
    assert await store.ids_with_status("open") == ["quiet-1", "busy-1"]
    assert [c.id for c in await store.list()] == ["busy-1", "quiet-1"]
    await turn("pending", 51 * second + 60)  # a status change within the second shows at once
    assert (await place("open"), await place("pending")) == (None, 51 * second + 60)
    await turn("pending", 51 * second + 70)
    assert await place("pending") == 51 * second + 60
    assert await store.ids_with_status("pending") == ["busy-1"]
    saves = Saves(8)  # a turn whose conversation's time before is not known writes it
    busy.updated_ms = 51 * second + 80
    store.effect_ops(Effects(conversation=busy, previous_status="pending"), saves)
    await commit(redis, saves.ops())
    assert await place("pending") == 51 * second + 80


async def test_a_read_of_thousands_of_entries_commits(redis: aioredis.Redis, make_engine: Any) -> None:
    """engine.batch_size allows 10,000 entries per read; their commit acknowledges them
    all. Lua spreads a command's values with unpack(), which fails above about 8,000, so
    one XACK of them all would fail on every try and stall the partition."""
    bus = Bus(redis, partitions=1)
    await bus.ensure_group(keys.inbound(0, 1), keys.ENGINE_GROUP)
    for first in range(0, 9_000, 1_000):
        await bus.publish_many([Message(kind="customer", channel="api", address=f"a{n % 3}", text=f"m{n}")
                                for n in range(first, first + 1_000)])
    seen: list[str] = []
    engine = make_engine([lambda turn: seen.append(turn.message.text)], partitions=1, batch_size=10_000)
    await wait_for(lambda: engine.processed == 9_000, 60, "every entry handled and committed")
    assert seen[:3] == ["m0", "m1", "m2"] and len(seen) == 9_000
    assert (await redis.xpending(keys.inbound(0, 1), keys.ENGINE_GROUP))["pending"] == 0


async def test_new_addresses_of_a_known_person_in_one_batch_both_join_them(redis: aioredis.Redis,
                                                                             make_engine: Any) -> None:
    """A burst of new customers is looked up per batch (numbers, contacts); two new
    addresses of one person (linked by the email their channel vouches for) that arrive
    together both join that person, neither overwrites the other's link."""
    seen: list[str] = []
    make_engine([lambda turn: seen.append(turn.message.address)], partitions=1)
    bus, store = Bus(redis, partitions=1), Store(redis, partitions=1)
    buyer = Sender(email="buyer@factory.example")
    await bus.publish(Message(kind="customer", channel="api", address="desk", text="hello", sender=buyer))
    await wait_for(lambda: seen == ["desk"], 10, "the first conversation")
    await bus.publish_many([Message(kind="customer", channel="api", address=a, text="me again", sender=buyer)
                            for a in ("phone", "laptop")])
    await wait_for(lambda: len(seen) == 3, 10, "both new addresses")
    conversations = [await store.for_address("api", a) for a in ("desk", "phone", "laptop")]
    assert len({c.contact_id for c in conversations if c}) == 1 and None not in conversations
    contact = await store.contact(conversations[0].contact_id if conversations[0] else "")
    assert contact is not None and sorted(contact.addresses) == ["api:desk", "api:laptop", "api:phone"]


async def test_a_customer_writing_long_after_the_case_closed_opens_a_new_one_as_the_same_person(
        redis: aioredis.Redis, make_engine: Any) -> None:
    """Past engine.reopen_within_h a resolved conversation stays closed: the address's
    next message opens conversation 2, looked up on its own (not with a batch of new
    addresses), for the contact the address already has."""
    clock, seen = Clock(), []

    def step(turn: Turn) -> None:
        seen.append(turn.conversation.id)
        if turn.message.text == "thanks, solved":
            turn.conversation.status, turn.conversation.resolved_ms = "resolved", turn.now_ms

    make_engine([step], clock, partitions=1)
    bus, store = Bus(redis, partitions=1), Store(redis, partitions=1)
    for n, text in enumerate(("my order is late", "thanks, solved"), 1):
        await bus.publish(Message(kind="customer", channel="api", address="late", text=text))
        await wait_for(lambda n=n: len(seen) == n, 10, text)  # type: ignore[misc]
    first = await store.for_address("api", "late")
    assert first is not None and first.status == "resolved"
    clock.advance(hours=73)
    await bus.publish(Message(kind="customer", channel="api", address="late", text="it broke again"))
    await wait_for(lambda: len(seen) == 3, 10, "the new case")
    second = await store.for_address("api", "late")
    assert second is not None and second.id == f"{first.id.rsplit('-', 1)[0]}-2" and second.status == "open"
    assert second.contact_id == first.contact_id
