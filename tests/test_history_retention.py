"""Redis kept small: a conversation resolved longer ago than history.keep_in_redis_days
leaves Redis once it is in SQL, and comes back whole when its customer writes again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bridge import keys
from bridge.model import Conversation
from tests.harness import Clock, RunningBridge, running_bridge
from tests.test_api_e2e import AUTH, ENV
from tests.test_console_queue import rows
from tests.test_history import projected, with_history
from tests.test_widget_protocol import ENV as WIDGET_ENV
from tests.test_widget_protocol import console_login
from tests.webhook import WebhookReceiver


async def test_a_closed_conversation_leaves_redis_and_comes_back(redis_url: str, webhook: WebhookReceiver,
                                                                 tmp_path: Path) -> None:
    clock = Clock()
    async with running_bridge(redis_url, retention_config(tmp_path, webhook), env=ENV, clock_ms=clock) as b:
        await b.post("/api/v1/messages", headers=AUTH,
                     json={"customer_id": "ret-1", "text": "Is order 31 on its way?", "message_id": "r1"})
        await b.post("/api/v1/messages", headers=AUTH,
                     json={"customer_id": "ret-2", "text": "Still open, please", "message_id": "r2"})
        await b.wait_for(lambda: len(webhook.received) >= 2, what="both answered")
        conversation = await resolved_and_recorded(b, "ret-1")
        memory_before = await _keys(b.redis)

        clock.advance(days=2)
        await b.wait_for(lambda: _gone(b.redis, conversation.id), what="dropped from Redis")
        assert await _keys(b.redis) < memory_before
        other = await b.store.for_address("api", "ret-2")
        assert other is not None and other.status == "open"  # an open one stays, however old

        response = await b.http.get(f"{b.url}/api/v1/conversations/{conversation.id}", headers=AUTH)
        body = await response.json()  # read from the record, and not put back for a look
        assert body["conversation"]["status"] == "resolved"
        assert [m["text"] for m in body["transcript"] if m["kind"] == "customer"] == ["Is order 31 on its way?"]
        assert await _gone(b.redis, conversation.id)

        await b.post("/api/v1/messages", headers=AUTH,
                     json={"customer_id": "ret-1", "text": "It has not arrived yet", "message_id": "r3"})
        await b.wait_for(lambda: _status(b.redis, conversation.id, "open"), what="reopened from the record")
        response = await b.http.get(f"{b.url}/api/v1/conversations/{conversation.id}", headers=AUTH)
        body = await response.json()
        customer = [m["text"] for m in body["transcript"] if m["kind"] == "customer"]
        assert customer == ["Is order 31 on its way?", "It has not arrived yet"]
        assert body["conversation"]["status"] == "open"


def retention_config(tmp_path: Path, webhook: WebhookReceiver) -> dict[str, Any]:
    """History on a private SQLite file; resolved conversations leave Redis after a day."""
    return with_history(f"sqlite:///{tmp_path / 'history.sqlite3'}", webhook.url, keep_in_redis_days=1,
                        retention_interval_s=0.1)


async def resolved_and_recorded(b: RunningBridge, customer: str) -> Conversation:
    """An agent resolves the customer's conversation, and the projector records it in SQL."""
    conversation = await b.store.for_address("api", customer)
    assert conversation is not None
    r = await b.post(f"/api/v1/conversations/{conversation.id}/actions", headers=AUTH,
                     json={"action": "resolve", "agent": "ana", "message_id": f"resolve-{customer}"})
    assert r.status == 202
    await b.wait_for(lambda: _status(b.redis, conversation.id, "resolved"), what="resolved")
    await b.wait_for(lambda: projected(b.redis), what="projected")
    return conversation


async def _status(redis: aioredis.Redis, conversation_id: str, status: str) -> bool:
    return await redis.zscore(keys.CONVERSATIONS_BY_STATUS + status, conversation_id) is not None


async def _gone(redis: aioredis.Redis, conversation_id: str) -> bool:
    return not await redis.exists(keys.conversation(conversation_id), keys.transcript(conversation_id))


async def _keys(redis: aioredis.Redis) -> int:
    return int(await redis.dbsize())


async def test_the_console_finds_and_opens_a_case_only_the_record_holds(redis_url: str, webhook: WebhookReceiver,
                                                                        tmp_path: Path) -> None:
    clock = Clock()
    config = retention_config(tmp_path, webhook)
    config["channels"]["widget"] = {"secret": "${T_WIDGET_SECRET}", "console": {"token": "${T_CONSOLE_TOKEN}"}}
    async with running_bridge(redis_url, config, env={**ENV, **WIDGET_ENV}, clock_ms=clock) as b:
        await b.post("/api/v1/messages", headers=AUTH, json={
            "customer_id": "ret-9", "text": "The capacitors from lot 7731 are leaking", "message_id": "r9"})
        await b.wait_for(lambda: webhook.received, what="answered")
        conversation = await resolved_and_recorded(b, "ret-9")
        clock.advance(days=2)
        await b.wait_for(lambda: _gone(b.redis, conversation.id), what="dropped from Redis")

        agent = await console_login(b)
        found = await rows(b, agent, status="all", q="lot 7731")
        assert [x["id"] for x in found] == [conversation.id]  # found in the record alone
        assert found[0]["status"] == "resolved" and "lot 7731" in found[0]["snippet"]
        r = await b.get(f"/agent/api/conversations/{conversation.id}", headers=agent)
        assert r.status == 200
        said = [i["text"] for i in (await r.json())["transcript"] if i["who"] == "customer"]
        assert said == ["The capacitors from lot 7731 are leaking"]
        assert await _gone(b.redis, conversation.id)  # a look does not put it back
