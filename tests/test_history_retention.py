"""Redis kept small: a conversation resolved longer ago than history.keep_in_redis_days
leaves Redis once it is in SQL, and comes back whole when its customer writes again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import event

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
    return await redis.zscore(keys.status_index(conversation_id, status, 8), conversation_id) is not None


async def _gone(redis: aioredis.Redis, conversation_id: str) -> bool:
    return not await redis.exists(keys.conversation(conversation_id, 8), keys.transcript(conversation_id, 8))


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


async def customer_keys(redis: aioredis.Redis, *names: str) -> list[str]:
    """Keys that name the customer (in their name, or as a string value: a pointer or an
    index) and do not expire by themselves (a dedupe key goes after its TTL)."""
    found: list[str] = []
    async for raw in redis.scan_iter(count=1000):
        key = raw.decode()
        value = (await redis.get(key) or b"").decode(errors="replace") if await redis.type(key) == b"string" else ""
        if any(n in key or n in value for n in names) and await redis.ttl(key) < 0:
            found.append(key)
    return found


async def dropped(b: RunningBridge, clock: Clock, customer: str, days: float = 2) -> Conversation:
    """The customer's conversation resolved, recorded, and everything of them gone from Redis."""
    conversation = await resolved_and_recorded(b, customer)
    clock.advance(days=days)
    await b.wait_for(lambda: _no_keys(b.redis, customer, conversation.id, conversation.contact_id),
                     what="the customer dropped from Redis")
    return conversation


async def _no_keys(redis: aioredis.Redis, *names: str) -> bool:
    return not await customer_keys(redis, *names)


async def writes(b: RunningBridge, webhook: WebhookReceiver, customer: str, text: str, message_id: str,
                 answers: int = 1, **fields: str) -> None:
    """The customer writes over the API and has had ``answers`` replies."""
    await b.post("/api/v1/messages", headers=AUTH, json={
        "customer_id": customer, "text": text, "message_id": message_id, **fields})
    await b.wait_for(lambda: len(webhook.texts_for(customer)) >= answers, what=f"{customer} answered")


async def test_redis_keeps_nothing_of_a_closed_customer_who_comes_back_whole(
        redis_url: str, webhook: WebhookReceiver, tmp_path: Path) -> None:
    clock = Clock()
    async with running_bridge(redis_url, retention_config(tmp_path, webhook), env=ENV, clock_ms=clock) as b:
        await writes(b, webhook, "ret-20", "Order 77 arrived broken", "r20", name="Lena Park", email="lena@example.com")
        first = await dropped(b, clock, "ret-20", days=5)  # beyond engine.reopen_within_h: a new case
        assert await b.store.contact(first.contact_id, archive=False) is None

        await writes(b, webhook, "ret-20", "And order 78 too", "r21", answers=2, name="Lena Park",
                     email="lena@example.com")
        second = await b.store.for_address("api", "ret-20")
        assert second is not None and second.id != first.id
        assert second.id.rsplit("-", 1)[1] == "2"  # numbered after the one the record holds
        assert second.contact_id == first.contact_id  # the same customer, found in the record
        contact = await b.store.contact(first.contact_id, archive=False)
        assert contact is not None and contact.name == "Lena Park" and contact.addresses == ["api:ret-20"]
        await b.wait_for(lambda: projected(b.redis), what="projected")
        response = await b.get(f"/api/v1/conversations?contact={first.contact_id}", headers=AUTH)
        listed = [c["conversation"]["id"] for c in (await response.json())["conversations"]]
        assert sorted(listed) == sorted([first.id, second.id])
        old = await b.get(f"/api/v1/conversations/{first.id}", headers=AUTH)
        said = [m["text"] for m in (await old.json())["transcript"] if m["kind"] == "customer"]
        assert said == ["Order 77 arrived broken"]


async def test_a_customer_linked_by_email_stays_linked_after_retention(
        redis_url: str, webhook: WebhookReceiver, tmp_path: Path) -> None:
    clock = Clock()
    async with running_bridge(redis_url, retention_config(tmp_path, webhook), env=ENV, clock_ms=clock) as b:
        await writes(b, webhook, "ret-30", "Invoice 12 is wrong", "r30", email="omar@example.com")
        first = await dropped(b, clock, "ret-30")

        # the same person, from another address
        await writes(b, webhook, "ret-31", "About invoice 12", "r31", email="omar@example.com")
        other = await b.store.for_address("api", "ret-31")
        assert other is not None and other.contact_id == first.contact_id
        contact = await b.store.contact(first.contact_id, archive=False)
        assert contact is not None and sorted(contact.addresses) == ["api:ret-30", "api:ret-31"]


async def test_an_erased_customer_does_not_come_back_from_the_record(
        redis_url: str, webhook: WebhookReceiver, tmp_path: Path) -> None:
    clock = Clock()
    async with running_bridge(redis_url, retention_config(tmp_path, webhook), env=ENV, clock_ms=clock) as b:
        await writes(b, webhook, "ret-40", "My parcel 55 is lost", "r40", name="Ivo Horvat")
        first = await dropped(b, clock, "ret-40")
        response = await b.post(f"/api/v1/contacts/{first.contact_id}/erase", headers=AUTH)
        assert response.status == 200, await response.text()

        await writes(b, webhook, "ret-40", "Hello again", "r41", answers=2)
        again = await b.store.for_address("api", "ret-40")
        assert again is not None and again.contact_id != first.contact_id
        said = [m.text for m in await b.store.transcript(again.id) if m.kind == "customer"]
        assert said == ["Hello again"]
        assert await b.store.contact(first.contact_id) is None


async def test_conversations_only_the_record_holds_are_read_in_one_query(
        redis_url: str, webhook: WebhookReceiver, tmp_path: Path) -> None:
    clock = Clock()
    async with running_bridge(redis_url, retention_config(tmp_path, webhook), env=ENV, clock_ms=clock) as b:
        for n in range(3):
            await b.post("/api/v1/messages", headers=AUTH, json={
                "customer_id": f"ret-5{n}", "text": f"Question {n}", "message_id": f"r5{n}"})
        await b.wait_for(lambda: len(webhook.received) >= 3, what="answered")
        ids = [(await dropped(b, clock, f"ret-5{n}")).id for n in range(3)]
        assert b.bridge.history is not None
        statements: list[str] = []
        event.listen(b.bridge.history.sync_engine, "before_cursor_execute",
                     lambda *args: statements.append(args[2]))
        found = await b.store.get_many([*ids, "nowhere-1"])
        assert [c.id if c else None for c in found] == [*ids, None]
        assert len(statements) == 1
