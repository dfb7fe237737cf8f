"""The SQL history: what a conversation leaves in SQL (PostgreSQL and the embedded SQLite
file), written by the projector from the engine's outbox, exactly once."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy.exc import ProgrammingError

from bridge import keys, status
from bridge.model import Message, address_hash, partition_of
from tests.harness import running_bridge
from tests.history_db import rows
from tests.pgserver import PostgresServer
from tests.proc import BridgeProcess
from tests.test_api_e2e import AUTH, ENV, api_config
from tests.webhook import WebhookReceiver


def with_history(url: str, webhook_url: str, **extra: Any) -> dict[str, Any]:
    return {**api_config(webhook_url), "history": {"enabled": True, "url": url, **extra}}


async def backlog(redis: aioredis.Redis) -> int:
    total = 0
    for p in range(8):
        stream = keys.outbox(p, 8)
        if await redis.exists(stream):
            groups = {g["name"].decode(): g for g in await redis.xinfo_groups(stream)}
            group = groups.get(keys.PROJECTOR_GROUP)
            total += int(await redis.xlen(stream)) if group is None else group["pending"] + (group["lag"] or 0)
    return total


async def projected(redis: aioredis.Redis) -> bool:
    """Every outbox record is in SQL (the outboxes exist once the engine wrote a turn)."""
    return bool(await redis.exists(*[keys.outbox(p, 8) for p in range(8)])) and await backlog(redis) == 0


async def test_a_conversation_is_recorded_in_sql(history_url: str, redis_url: str,
                                                 webhook: WebhookReceiver) -> None:
    config = with_history(history_url, webhook.url)
    config["engine"] = {"steps": ["triage", "routing", "dispute"]}
    async with running_bridge(redis_url, config, env=ENV) as b:
        await b.post("/api/v1/messages", headers=AUTH, json={
            "customer_id": "c-1", "name": "Maria Santos", "email": "maria@example.com", "message_id": "h1",
            "text": "URGENT: production line stopped, the boards fail"})
        await b.wait_for(lambda: webhook.texts_for("c-1"), what="the instant reply")
        await b.post("/api/v1/messages", headers=AUTH, json={
            "customer_id": "c-1", "text": "Order 4411, please hurry", "message_id": "h2",
            "attachments": [{"name": "photo.jpg", "mime": "image/jpeg", "size": 2048, "url": "http://x/p.jpg"}]})
        await b.wait_for(lambda: _messages(b, "c-1", 2), what="the engine kept the second message")
        conversation = await b.store.for_address("api", "c-1")
        assert conversation is not None
        actions = f"/api/v1/conversations/{conversation.id}/actions"
        await b.post(actions, headers=AUTH, json={"action": "urgency", "urgency": "routine", "agent": "Ana",
                                                  "message_id": "a1"})
        await b.post(actions, headers=AUTH, json={"action": "dispute", "step": "start", "agent": "Ana",
                                                  "claim": "boards fail", "message_id": "a2"})
        await b.wait_for(lambda: _dispute_started(b, "c-1"), what="the dispute started")
        await b.wait_for(lambda: projected(b.redis), what="the outbox projected")

    (row,) = [r for r in await rows(history_url, "conversations") if r["id"] == conversation.id]
    assert row["urgency"] == "routine" and row["status"] == "open" and row["contact_id"] == conversation.contact_id
    assert row["data"]["dispute"]["claim"] == "boards fail"
    messages = sorted((m for m in await rows(history_url, "messages") if m["conversation_id"] == conversation.id),
                      key=lambda m: m["seq"])
    customer = [m for m in messages if m["kind"] == "customer"]
    assert [m["text"] for m in customer] == ["URGENT: production line stopped, the boards fail",
                                             "Order 4411, please hurry"]
    assert customer[1]["attachments"][0]["name"] == "photo.jpg"
    assert any(m["kind"] == "reply" for m in messages)  # the bridge's answer is in the record too
    events = [e for e in await rows(history_url, "events") if e["conversation_id"] == conversation.id]
    urgency = sorted((e for e in events if e["name"] == "urgency"), key=lambda e: e["at_ms"])
    assert [(e["value"], e["previous"]) for e in urgency] == [("urgent", ""), ("routine", "urgent")]
    assert "urgent" in urgency[0]["reason"].lower()
    assert urgency[1]["by"] == "Ana"  # the agent's correction, and who made it
    assert any(e["name"] == "dispute_step" and e["by"] == "Ana" for e in events)
    assert any(e["name"] == "opened" for e in events)
    (contact,) = await rows(history_url, "contacts")
    assert contact["name"] == "Maria Santos" and contact["email"] == "maria@example.com"
    assert {r["address"] for r in await rows(history_url, "contact_links")} == {"api:c-1"}


async def test_a_commit_s_turns_go_as_one_outbox_entry_and_each_reaches_sql(
        history_url: str, redis_url: str, webhook: WebhookReceiver) -> None:
    """Twelve messages of one customer arrive at once: the engine handles them in one batch,
    its commit writes their turns as one outbox entry, and the projector, though it writes
    three records per transaction, puts each message in SQL once, in order."""
    texts = [f"Line {i} of my complaint" for i in range(12)]
    async with running_bridge(redis_url, with_history(history_url, webhook.url, batch_size=3), env=ENV) as b:
        await b.bus.publish_many([Message(kind="customer", channel="api", address="burst", text=text,
                                          dedupe_key=f"api:burst-{i}") for i, text in enumerate(texts)])
        await b.wait_for(lambda: _messages(b, "burst", 12), what="the engine kept the twelve messages")
        await b.wait_for(lambda: projected(b.redis), what="the outbox projected")
        outbox = keys.outbox(partition_of(address_hash("api", "burst"), 8), 8)
        assert await b.redis.xlen(outbox) == 1
    messages = sorted((m for m in await rows(history_url, "messages") if m["kind"] == "customer"),
                      key=lambda m: m["seq"])
    assert [m["text"] for m in messages] == texts


@pytest.mark.slow
async def test_projection_is_exactly_once_through_a_killed_projector(
        postgres_url: str, redis_url: str, redis: aioredis.Redis, webhook: WebhookReceiver, tmp_path: Path) -> None:
    """The projector dies (SIGKILL) after its SQL transaction committed and before it
    acknowledged the outbox: the next holder reads the same records and applies none twice."""
    desk = with_history(postgres_url, webhook.url)
    desk["roles"] = ["ingest", "engine", "dispatch", "web"]
    async with running_bridge(redis_url, desk, env=ENV) as b:
        projector = BridgeProcess(tmp_path, redis_url, {**with_history(postgres_url, webhook.url),
                                                        "roles": ["projector", "web"]}, env=ENV, name="projector")
        for i in range(5):
            await b.post("/api/v1/messages", headers=AUTH,
                         json={"customer_id": f"k-{i}", "text": f"Where is order {i}?", "message_id": f"k{i}"})
        await b.wait_for(lambda: len(webhook.received) >= 5, what="the desk answers without the projector")
        assert await backlog(b.redis) > 0
        await projector.start(failpoints="projector.after_sql")
        assert await projector.wait_exit(20) == -signal.SIGKILL, projector.log()
        assert await backlog(b.redis) > 0  # written to SQL, not acknowledged
        shown = status.render(await status.gather(b.redis, b.bridge.settings))  # what `bridge status` prints
        assert re.search(r"history: [1-9]\d* outbox entries not yet in SQL, the oldest \d+ s old", shown), shown
        await projector.start()
        try:
            await b.wait_for(lambda: projected(b.redis), 20, "the outbox projected after the restart")
        finally:
            assert await projector.stop() == 0, projector.log()
    messages = [m for m in await rows(postgres_url, "messages") if m["kind"] == "customer"]
    assert sorted(m["text"] for m in messages) == [f"Where is order {i}?" for i in range(5)]
    events = await rows(postgres_url, "events")
    assert sum(1 for e in events if e["name"] == "opened") == 5


@pytest.mark.slow
async def test_the_desk_answers_while_the_database_is_down_and_catches_up(
        postgres_server: PostgresServer, postgres_url: str, redis_url: str, webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, with_history(postgres_url, webhook.url, retry_cap_s=0.5), env=ENV) as b:
        await b.post("/api/v1/messages", headers=AUTH,
                     json={"customer_id": "d-0", "text": "First question", "message_id": "d0"})
        await b.wait_for(lambda: _customer_texts(postgres_url), 20, "the first message in SQL")
        await asyncio.to_thread(postgres_server.stop)
        try:
            for i in range(1, 4):
                await b.post("/api/v1/messages", headers=AUTH,
                             json={"customer_id": f"d-{i}", "text": f"Question {i}", "message_id": f"d{i}"})
            await b.wait_for(lambda: len(webhook.received) >= 4, what="answers while the database is down")
            status = await b.get("/metrics")
            assert status.status == 200
            await b.wait_for(lambda: _metric(b, "bridge_history_lag_entries", at_least=1), 10,
                             "the backlog in /metrics")
        finally:
            await asyncio.to_thread(postgres_server.start)
        await b.wait_for(lambda: projected(b.redis), 30, "the backlog projected after the restart")
    assert await _customer_texts(postgres_url) == ["First question", "Question 1", "Question 2", "Question 3"]


async def _customer_texts(url: str) -> list[str]:
    try:
        return sorted(m["text"] for m in await rows(url, "messages") if m["kind"] == "customer")
    except ProgrammingError:  # the projector has not created the tables yet
        return []


async def _dispute_started(b: Any, customer: str) -> bool:
    conversation = await b.store.for_address("api", customer)
    return conversation is not None and bool(conversation.data.get("dispute", {}).get("step"))


async def _messages(b: Any, customer: str, count: int) -> bool:
    conversation = await b.store.for_address("api", customer)
    return conversation is not None and conversation.messages >= count


async def _metric(b: Any, name: str, at_least: float) -> bool:
    response = await b.http.get(b.url + "/metrics")
    body = await response.text()
    values = [float(line.split()[-1]) for line in body.splitlines() if line.startswith(name + " ")]
    return bool(values) and values[0] >= at_least
