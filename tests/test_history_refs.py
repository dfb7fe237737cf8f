"""Thread references (a Slack thread, an email Message-ID) under retention: the SQL record
keeps them, Redis lets them go with their conversation, and an agent's reply in an old
thread still reaches the customer."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from sqlalchemy import event

from bridge import keys
from bridge.history.record import TurnRecord, decode_records
from bridge.model import Conversation, Message, Sender, encode_record
from tests.fakes.slack_api import FakeSlack, Post, sign
from tests.harness import Clock, RunningBridge, running_bridge
from tests.history_db import rows
from tests.pgserver import PostgresServer
from tests.proc import BridgeProcess
from tests.test_history import backlog, projected, with_history
from tests.test_history_retention import dropped
from tests.test_slack_e2e import AUTH, SLACK_SECRET, config, customer_writes, env, fake, replies
from tests.webhook import WebhookReceiver

__all__ = ["fake"]  # the Slack fixture, used by name


def desk(fake: FakeSlack, webhook: WebhookReceiver, url: str) -> dict[str, Any]:
    """Customers on the API, agents in Slack, history on ``url``; resolved cases leave Redis after a day."""
    return {**config(fake, webhook),
            "history": {"enabled": True, "url": url, "keep_in_redis_days": 1, "retention_interval_s": 0.1}}


async def thread_of(b: RunningBridge, fake: FakeSlack, customer: str, text: str) -> tuple[Post, str]:
    """The customer writes; the case's Slack thread, and its ref once the bridge recorded it."""
    await customer_writes(b, customer, text, f"{customer}-1")
    root = await b.wait_for(lambda: [p for p in fake.posts if not p.thread_ts and text in p.text],
                            what="the case's thread")
    ref = f"slack:{root[0].channel}:{root[0].ts}"
    await b.wait_for(lambda: b.redis.get(keys.ref(ref)), what="the thread ref recorded")
    return root[0], ref


async def agent_replies(b: RunningBridge, root: Post, text: str) -> None:
    """An agent writes in the thread; Slack posts the signed event to the bridge."""
    ts = f"{time.time():.6f}"
    body = json.dumps({"type": "event_callback", "team_id": "T0001", "api_app_id": "A0001",
                       "event_id": f"Ev{ts.replace('.', '')}", "event_time": int(time.time()),
                       "event": {"type": "message", "user": "U0ALICE", "text": text, "ts": ts,
                                 "thread_ts": root.ts, "channel": root.channel, "event_ts": ts,
                                 "channel_type": "channel", "parent_user_id": "UBOT"}})
    response = await b.post("/slack/events", data=body.encode(), headers=sign(SLACK_SECRET, body))
    assert response.status == 200


def said(webhook: WebhookReceiver, customer: str, text: str) -> bool:
    """The customer received ``text`` as a reply."""
    return any(m["text"] == text for m in replies(webhook, customer))


async def unknown_replies(b: RunningBridge) -> list[dict[str, Any]]:
    """Agents' messages that found no conversation (`bridge dlq list`)."""
    return [d for d in await b.bridge.bus.dead_letters() if "no conversation for agent message" in d["reason"]]


async def forget_threads(redis: aioredis.Redis) -> None:
    """What the Slack channel remembers of its threads by itself expires (slack.thread_ttl_days);
    a test cannot wait that long, so it goes now."""
    async for key in redis.scan_iter(match=keys.adapter_state("slack", "*"), count=1000):
        if await redis.ttl(key) > 0:
            await redis.delete(key)


async def ref_keys(redis: aioredis.Redis) -> list[str]:
    """Thread refs and ref sets that stay in Redis (a ref loaded back from SQL expires)."""
    found = []
    for pattern in (keys.ref("*"), keys.PREFIX + "refs:*"):
        async for key in redis.scan_iter(match=pattern, count=1000):
            if await redis.ttl(key) < 0:
                found.append(key.decode())
    return found


async def test_an_agent_reply_in_the_thread_of_a_dropped_case_reaches_the_customer(
        history_url: str, redis_url: str, fake: FakeSlack, webhook: WebhookReceiver) -> None:
    clock = Clock()
    async with running_bridge(redis_url, desk(fake, webhook, history_url), env=env(fake), clock_ms=clock) as b:
        root, ref = await thread_of(b, fake, "ref-1", "My order 4411 never arrived")
        await b.wait_for(lambda: replies(webhook, "ref-1"), what="the first answer")

        conversation = await dropped(b, clock, "ref-1")  # no key naming it is left, its ref included
        assert await ref_keys(b.redis) == []
        assert await rows(history_url, "refs") == [{"ref": ref, "conversation_id": conversation.id}]

        await forget_threads(b.redis)  # 180 days on (slack.thread_ttl_days): the channel's own memory is gone
        await agent_replies(b, root, "Found it: order 4411 ships again today")
        await b.wait_for(lambda: said(webhook, "ref-1", "Found it: order 4411 ships again today"),
                         what="the agent's reply delivered")
        (delivered,) = [m for m in replies(webhook, "ref-1") if "4411" in m["text"]]
        assert delivered["conversation_id"] == conversation.id  # the same case, loaded back from the record
        assert 0 < await b.redis.ttl(keys.ref(ref)) <= keys.REF_CACHE_S  # found in the record, kept for a while


async def test_refs_of_a_publish_batch_are_looked_up_in_one_query(
        redis_url: str, fake: FakeSlack, webhook: WebhookReceiver, tmp_path: Path) -> None:
    """Replies whose thread only the record knows, published together: one query for all,
    and each reaches its customer; a thread nobody knows stays unresolved."""
    clock = Clock()
    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    async with running_bridge(redis_url, desk(fake, webhook, url), env=env(fake), clock_ms=clock) as b:
        refs = {}
        for customer in ("ref-2", "ref-3"):
            _, refs[customer] = await thread_of(b, fake, customer, f"Where is the invoice of {customer}?")
            await b.wait_for(lambda: replies(webhook, customer), what="the first answer")  # noqa: B023
        for customer in refs:
            await dropped(b, clock, customer)
        assert await ref_keys(b.redis) == []
        await forget_threads(b.redis)

        assert b.bridge.history is not None
        statements: list[str] = []
        event.listen(b.bridge.history.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        agent = Sender(id="U0ALICE", name="Alice", is_agent=True)
        replies_ = [Message(kind="agent", channel="slack", ref=ref, text=f"The invoice for {customer} is attached",
                            sender=agent, dedupe_key=f"ref-batch:{customer}") for customer, ref in refs.items()]
        stray = Message(kind="agent", channel="slack", ref="slack:C0AGENTS:1.000001", text="lost",
                        sender=agent, dedupe_key="ref-batch:stray")
        assert await b.bridge.bus.publish_many([*replies_, stray]) == [True, True, True]
        assert len(statements) == 1
        assert stray.conversation_id == ""
        for customer in refs:
            await b.wait_for(lambda: said(webhook, customer, f"The invoice for {customer} is attached"),  # noqa: B023
                             what=f"the reply to {customer}")
        (lost,) = await b.wait_for(lambda: unknown_replies(b), what="the stray reply dead-lettered")
        assert "slack:C0AGENTS:1.000001" in lost["reason"]


@pytest.mark.slow
async def test_a_database_that_does_not_answer_leaves_the_reply_unresolved(
        postgres_server: PostgresServer, postgres_url: str, redis_url: str, fake: FakeSlack,
        webhook: WebhookReceiver) -> None:
    clock = Clock()
    async with running_bridge(redis_url, desk(fake, webhook, postgres_url), env=env(fake), clock_ms=clock) as b:
        _, ref = await thread_of(b, fake, "ref-5", "The shipment 808 is late")
        await b.wait_for(lambda: replies(webhook, "ref-5"), what="the first answer")
        await dropped(b, clock, "ref-5")
        agent = Sender(id="U0ALICE", name="Alice", is_agent=True)
        await asyncio.to_thread(postgres_server.stop)
        try:
            early = Message(kind="agent", channel="slack", ref=ref, text="Shipment 808 left today", sender=agent,
                            dedupe_key="ref-down:1")
            started = time.monotonic()
            assert await b.bridge.bus.publish_many([early]) == [True]
            assert early.conversation_id == "" and time.monotonic() - started < 10  # as an unknown thread
            await b.wait_for(lambda: unknown_replies(b), what="the reply dead-lettered")
        finally:
            await asyncio.to_thread(postgres_server.start)
        again = Message(kind="agent", channel="slack", ref=ref, text="Shipment 808 left today", sender=agent,
                        dedupe_key="ref-down:2")
        assert await b.bridge.bus.publish_many([again]) == [True]
        await b.wait_for(lambda: said(webhook, "ref-5", "Shipment 808 left today"), what="the reply once it answers")


@pytest.mark.slow
async def test_thread_refs_are_recorded_once_through_a_killed_projector(
        history_url: str, redis_url: str, fake: FakeSlack, webhook: WebhookReceiver, tmp_path: Path) -> None:
    """The projector dies after its SQL commit and before its ack: the next one reads the
    same records (the dispatcher's refs among them) and the record holds each ref once."""
    config_ = desk(fake, webhook, history_url)
    config_["roles"] = ["ingest", "engine", "dispatch", "web"]
    async with running_bridge(redis_url, config_, env=env(fake)) as b:
        refs = [(await thread_of(b, fake, f"ref-k{i}", f"Question number {i} about my order"))[1] for i in range(3)]
        await b.wait_for(lambda: len(webhook.received) >= 3, what="the desk answers without the projector")
        projector = BridgeProcess(tmp_path, redis_url, {**with_history(history_url, webhook.url),
                                                        "roles": ["projector", "web"]}, env=env(fake), name="projector")
        await projector.start(failpoints="projector.after_sql")
        assert await projector.wait_exit(20) == -signal.SIGKILL, projector.log()
        assert await backlog(b.redis) > 0  # written to SQL, not acknowledged
        await projector.start()
        try:
            await b.wait_for(lambda: projected(b.redis), 20, "the outbox projected after the restart")
        finally:
            assert await projector.stop() == 0, projector.log()
        recorded = await rows(history_url, "refs")
        assert sorted(r["ref"] for r in recorded) == sorted(refs)  # each once (the ref is the key)
        for r in recorded:
            assert (await b.redis.get(keys.ref(r["ref"]))).decode() == r["conversation_id"]


async def test_export_lists_the_refs_and_erase_removes_them_from_the_record(
        redis_url: str, fake: FakeSlack, webhook: WebhookReceiver, tmp_path: Path) -> None:
    clock = Clock()
    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    async with running_bridge(redis_url, desk(fake, webhook, url), env=env(fake), clock_ms=clock) as b:
        root, ref = await thread_of(b, fake, "ref-4", "Please delete my data after this")
        await b.wait_for(lambda: replies(webhook, "ref-4"), what="the first answer")
        conversation = await dropped(b, clock, "ref-4")

        exported = await (await b.get(f"/api/v1/contacts/{conversation.contact_id}/export", headers=AUTH)).json()
        assert exported["history"]["refs"] == {conversation.id: [ref]}
        response = await b.post(f"/api/v1/contacts/{conversation.contact_id}/erase", headers=AUTH)
        assert response.status == 200, await response.text()
        assert await rows(url, "refs") == []

        await forget_threads(b.redis)
        await agent_replies(b, root, "Anything else?")  # the thread no longer leads to anyone
        await b.wait_for(lambda: unknown_replies(b), what="the reply dead-lettered, as to an unknown thread")
        assert not said(webhook, "ref-4", "Anything else?")


def test_an_outbox_record_written_before_refs_existed_still_reads() -> None:
    conversation = Conversation(id="h-1", channel="api", address="a", status="open", created_ms=1, updated_ms=1)
    old = msgspec.msgpack.encode([1, "rec-1", 5, msgspec.Raw(encode_record(conversation)), [], [], None, "", ""])
    (record,) = decode_records(old)
    assert isinstance(record, TurnRecord) and record.refs == [] and record.id == "rec-1"
