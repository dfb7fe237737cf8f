"""Bad input gets a clear error and loses nothing."""

from __future__ import annotations

from typing import Any

from bridge import keys
from bridge.model import Message, encode
from tests.harness import running_bridge, wait_for
from tests.test_api_e2e import AUTH, ENV, api_config
from tests.webhook import WebhookReceiver


async def error_of(response: Any) -> str:
    return str((await response.json())["error"])


async def test_http_api_rejects_bad_requests_clearly(redis_url: str, webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        r = await b.post("/api/v1/messages", headers=AUTH, data=b"{not json")
        assert r.status == 400 and "invalid JSON" in await error_of(r)
        r = await b.post("/api/v1/messages", headers=AUTH, json={"text": "no customer"})
        assert r.status == 400 and "customer_id" in await error_of(r)
        r = await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "c", "text": 5})
        assert r.status == 400 and "text" in await error_of(r)
        r = await b.post("/api/v1/messages", json={"customer_id": "c", "text": "hi"})
        assert r.status == 401 and "Bearer" in await error_of(r)
        r = await b.post("/api/v1/messages", headers={"Authorization": "Bearer wrong"},
                         json={"customer_id": "c", "text": "hi"})
        assert r.status == 401
        r = await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "c", "text": "x" * 5000})
        assert r.status == 413 and "limit 4096" in await error_of(r)
        r = await b.post("/api/v1/conversations/nope-1/messages", headers=AUTH, json={"text": "hi"})
        assert r.status == 404
        r = await b.post("/api/v1/conversations/nope-1/actions", headers=AUTH, json={"action": "explode"})
        assert r.status == 400 and "unknown action" in await error_of(r)
        for stream in [keys.inbound(p, 8) for p in range(8)]:
            assert await b.redis.xlen(stream) == 0  # nothing half-accepted


async def test_malformed_stream_entry_is_dead_lettered_and_the_engine_goes_on(
        redis_url: str, webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        ok = Message(kind="customer", channel="api", address="after-poison", text="hello")
        stream = b.bus.inbound_stream(ok)
        await b.redis.xadd(stream, {"m": b"\xc1\xc1 definitely not msgpack"})
        await b.redis.xadd(stream, {"other": b"no payload field"})
        await b.redis.xadd(stream, {"m": encode(ok)})
        await wait_for(lambda: webhook.texts_for("after-poison"), 10, "the good message's reply")
        letters = await b.bus.dead_letters()
        assert len(letters) == 2
        assert all(row["reason"].startswith("malformed entry") for row in letters)
        assert all(row["stream"] == stream for row in letters)


async def test_agent_message_for_an_unknown_thread_is_dead_lettered_with_the_reason(
        redis_url: str, webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        await b.bus.publish(Message(kind="agent", channel="slack", ref="slack:C9:123.456", text="hello?"))
        (letter,) = await wait_for(lambda: b.bus.dead_letters(), 10, "the dead letter")
        assert "slack:C9:123.456" in letter["reason"] and "no conversation" in letter["reason"]


async def test_unreachable_webhook_retries_then_dead_letters(redis_url: str, webhook: WebhookReceiver) -> None:
    config = api_config(webhook.url, max_attempts=3)
    async with running_bridge(redis_url, config, env=ENV) as b:
        webhook.fail_next = [500, 500, 500]
        await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "d-1", "text": "hello"})
        (letter,) = await wait_for(lambda: b.bus.dead_letters(), 20, "the dead letter")
        assert "gave up after 3 attempts" in letter["reason"] and "500" in letter["reason"]
        assert webhook.texts_for("d-1") == []
        # the operator fixes the receiver and replays
        assert await b.bus.replay() == 1
        await wait_for(lambda: webhook.texts_for("d-1"), 10, "the replayed reply")


async def test_rate_limited_webhook_is_retried_after_what_it_asks(redis_url: str, webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        webhook.fail_next = [429, 503]
        webhook.retry_after = "0.2"
        await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "d-2", "text": "hello"})
        await wait_for(lambda: webhook.texts_for("d-2"), 15, "the reply after 429 and 503")
        assert len(webhook.received) == 1 and await b.bus.dead_letters() == []


async def test_a_client_error_from_the_webhook_is_a_permanent_failure(redis_url: str,
                                                                       webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        webhook.fail_next = [422]
        await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "d-3", "text": "hello"})
        (letter,) = await wait_for(lambda: b.bus.dead_letters(), 10, "the dead letter")
        assert "422" in letter["reason"]
        assert len(webhook.fail_next) == 0 and webhook.received == []  # tried once, not retried
