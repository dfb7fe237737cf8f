"""Isolation in delivery: one address that fails or hangs waits alone, a dead-lettered
reply holds the later ones to its address in order until replayed, and a dispatcher killed
mid-send re-sends at most what was in flight. Real Redis, the real HTTP API channel, a real
webhook server on loopback."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bridge import keys
from bridge.model import Message, encode, now_ms
from bridge.store import Saves
from tests.harness import RunningBridge, commit, outbound_of, running_bridge, wait_for
from tests.proc import BridgeProcess
from tests.test_api_e2e import AUTH, ENV, api_config
from tests.webhook import WebhookReceiver

pytestmark = pytest.mark.slow


async def write(b: RunningBridge, customer: str, text: str) -> str:
    r = await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": customer, "text": text})
    assert r.status == 202
    return customer


async def agent_reply(b: RunningBridge, conversation_id: str, text: str) -> None:
    r = await b.post(f"/api/v1/conversations/{conversation_id}/messages", headers=AUTH,
                     json={"text": text, "agent": "Ana"})
    assert r.status == 202


async def test_a_failing_and_a_hanging_address_wait_alone_while_a_hundred_others_flow(
        redis_url: str, webhook: WebhookReceiver) -> None:
    webhook.fail_for["stuck"] = 500
    webhook.hang_for.add("hung")
    config = api_config(webhook.url, max_attempts=1000, webhook_timeout_s=2)
    async with running_bridge(redis_url, config, env=ENV) as b:
        for customer in ("stuck", "hung"):
            await write(b, customer, "Where is my order?")
            await write(b, customer, "Hello?")  # waits behind the first, in its own lane
        await wait_for(lambda: webhook.tries["stuck"] >= 2 and webhook.tries["hung"] >= 1, 20,
                       "the failing address retried and the hanging one tried")
        others = [await write(b, f"flow-{i}", "Do you ship to Penang?") for i in range(100)]
        await wait_for(lambda: all(webhook.texts_for(c) for c in others), 30, "an answer to each of the 100")
        assert webhook.texts_for("stuck") == [] and webhook.texts_for("hung") == []
        assert webhook.tries["stuck"] >= 2  # retried on a schedule while the others went out
        assert await b.bus.dead_letters() == []  # still waiting its turn, not given up


async def test_a_channel_set_to_a_high_rate_keeps_sending_while_more_sends_hang_than_the_default_allows(
        redis_url: str, webhook: WebhookReceiver) -> None:
    """A send holds its slot until its outcome is recorded, a hung one until the timeout:
    a channel configured for 10,000 sends a second gets the slots of 50 ms of them (500),
    not the API's default 128, so 150 hung sends do not hold up the next customer."""
    hung = [f"hung-{i}" for i in range(150)]
    webhook.hang_for.update(hung)
    async with running_bridge(redis_url, api_config(webhook.url, rate_per_s=10_000, webhook_timeout_s=20),
                              env=ENV) as b:
        for customer in hung:
            await write(b, customer, "Where is my order?")
        await wait_for(lambda: all(webhook.tries[c] for c in hung), 20, "every hung customer's answer under way")
        await write(b, "fresh", "Do you ship to Penang?")
        await wait_for(lambda: webhook.texts_for("fresh"), 20, "the next customer answered")
        assert all(webhook.tries[c] == 1 for c in hung)  # none timed out yet: no slot was freed by a timeout
        webhook.hang_for.clear()
        webhook.release_hung()  # the bridge stops without waiting out their timeout


async def test_an_address_held_to_its_pace_waits_alone(redis_url: str, webhook: WebhookReceiver) -> None:
    """Sends to one address are spaced by its rate; while its next send waits for its
    turn, the other addresses' messages go out."""
    async with running_bridge(redis_url, api_config(webhook.url, rate_per_address_per_s=2.0), env=ENV) as b:
        await write(b, "paced", "Can you quote 300 pcs?")
        conversation = await wait_for(lambda: b.store.for_address("api", "paced"), 10, "the conversation")
        for n in (1, 2, 3):
            await agent_reply(b, conversation.id, f"reply {n}")
        others = [await write(b, f"other-{i}", "Do you ship to Penang?") for i in range(20)]
        await wait_for(lambda: len(webhook.texts_for("paced")) == 4, 20, "the paced address's four messages")
        await wait_for(lambda: all(webhook.texts_for(c) for c in others), 20, "an answer to each of the others")
        paced = [t for c, t in webhook.arrivals if c == "paced"]
        assert all(later - earlier >= 0.45 for earlier, later in itertools.pairwise(paced)), paced
        assert webhook.texts_for("paced")[1:] == ["reply 1", "reply 2", "reply 3"]
        last_other = max(t for c, t in webhook.arrivals if c in others)
        assert last_other < paced[-1]  # none of the others waited for the paced address's turns


async def test_a_dead_lettered_reply_holds_the_later_ones_until_replayed_in_order(
        redis_url: str, webhook: WebhookReceiver) -> None:
    webhook.fail_for["late"] = 422  # the receiver refuses: a permanent failure
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        await write(b, "late", "Can you quote 300 pcs?")
        conversation = await wait_for(lambda: b.store.for_address("api", "late"), 10, "the conversation")
        for n in (1, 2, 3):
            await agent_reply(b, conversation.id, f"reply {n}")
        letters = await wait_for(lambda: _when(b.bus.dead_letters(), 4), 20, "the failed ack and the held replies")
        assert "422" in letters[0]["reason"] and all("held behind" in x["reason"] for x in letters[1:])
        assert webhook.texts_for("late") == []

        async def agents_told() -> bool:  # the agents' transcript shows the failure and the hold
            return any(m.name == "delivery" and "wait" in m.text for m in await b.store.transcript(conversation.id))

        await wait_for(agents_told, 10, "the agents told")

        del webhook.fail_for["late"]  # the receiver is fixed; the operator replays the first letter
        assert await b.bus.replay([letters[0]["dlq_id"]]) == 4
        texts = await wait_for(lambda: len(webhook.texts_for("late")) == 4 and webhook.texts_for("late"), 20,
                               "the replayed lane")
        assert texts[0].startswith("Thank you") and texts[1:] == ["reply 1", "reply 2", "reply 3"]
        await agent_reply(b, conversation.id, "reply 4")  # the lane goes on as before
        await wait_for(lambda: webhook.texts_for("late")[4:] == ["reply 4"], 20, "the next reply")
        assert await b.bus.dead_letters() == []
        assert [await b.redis.hlen(keys.parked(s)) for s in keys.outbound_streams("api", 8)] == [0] * 9


async def test_dropping_the_dead_letters_lets_the_address_go_on(redis_url: str, webhook: WebhookReceiver) -> None:
    webhook.fail_for["gone"] = 422
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        await write(b, "gone", "Hello")
        conversation = await wait_for(lambda: b.store.for_address("api", "gone"), 10, "the conversation")
        await agent_reply(b, conversation.id, "first answer")
        letters = await wait_for(lambda: _when(b.bus.dead_letters(), 2), 20, "the ack and the held reply")
        del webhook.fail_for["gone"]
        assert await b.bus.drop([letters[0]["dlq_id"]]) == 1
        await agent_reply(b, conversation.id, "second answer")  # still held: a letter of the lane is left
        await wait_for(lambda: _when(b.bus.dead_letters(), 2), 20, "the second reply held")
        assert await b.bus.drop([x["dlq_id"] for x in await b.bus.dead_letters()]) == 2
        await agent_reply(b, conversation.id, "third answer")
        await wait_for(lambda: webhook.texts_for("gone") == ["third answer"], 20, "the lane released")


async def test_a_dispatcher_killed_mid_send_resends_at_most_what_was_in_flight(
        redis_url: str, redis: object, webhook: WebhookReceiver, tmp_path: Path) -> None:
    in_flight = 8
    bridge = BridgeProcess(tmp_path, redis_url, api_config(webhook.url, max_in_flight=in_flight), env=ENV)
    await bridge.start(failpoints="dispatch.after_send@40")
    customers = [f"k-{i}" for i in range(120)]
    async with __import__("aiohttp").ClientSession() as http:
        for customer in customers:
            async with http.post(bridge.url + "/api/v1/messages", headers=AUTH,
                                 json={"customer_id": customer, "text": "Invoice copy please"}) as r:
                if r.status != 202:  # the process died mid-way: the rest go to the restarted one
                    break
    assert await bridge.wait_exit(20) == -signal.SIGKILL
    await bridge.start()
    try:
        async with __import__("aiohttp").ClientSession() as http:
            for customer in customers:
                async with http.post(bridge.url + "/api/v1/messages", headers=AUTH,
                                     json={"customer_id": customer, "text": "Invoice copy please",
                                           "message_id": f"{customer}-1"}) as r:
                    assert r.status == 202
        await wait_for(lambda: {m["customer_id"] for m in webhook.messages} >= set(customers), 30,
                       "a reply to every customer")
    finally:
        await bridge.stop()
    doubles = len(webhook.received) - len(webhook.messages)
    # sends in flight when it died, plus those done and not yet recorded (also at most in_flight)
    assert doubles <= 2 * in_flight, doubles


async def _when(rows_coro: object, count: int) -> list[dict[str, object]] | None:
    rows = await rows_coro  # type: ignore[misc]
    return rows if len(rows) == count else None


async def test_a_scheduled_retry_is_kept_across_a_restart(redis_url: str, webhook: WebhookReceiver) -> None:
    """A 429 asking for 30 s: the due time is written to Redis, and a restarted dispatcher
    waits for it instead of sending at once."""
    webhook.fail_next = [429]
    webhook.retry_after = "30"
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        await write(b, "patient", "Hello")
        stream = outbound_of("api", "patient")
        due = await wait_for(lambda: b.redis.zrange(keys.retry_due(stream), 0, -1, withscores=True),
                             10, "the retry scheduled")
        (entry_id, due_ms), = due
        assert due_ms - time.time() * 1000 > 20_000  # Retry-After honoured
        assert await b.redis.hget(keys.attempts(stream), entry_id) == b"1"
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        await asyncio.sleep(1.5)  # a restart that forgot the due time would send at once
        assert webhook.texts_for("patient") == []
        assert await b.redis.zscore(keys.retry_due(stream), entry_id) == due_ms


async def test_what_an_older_bridge_left_in_a_channel_s_own_stream_is_delivered_once(
        redis_url: str, webhook: WebhookReceiver) -> None:
    """Bridges before 2026-12 wrote a channel's replies to one stream, `bridge:out:<channel>`;
    today each partition has its own. After an upgrade the dispatcher drains the old stream
    too: a reply an old dispatcher sent and recorded but never acknowledged is not sent
    again (its sent record keeps the old name), the others are sent once."""
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        await write(b, "upgraded", "Hello")
        await wait_for(lambda: webhook.texts_for("upgraded"), 10, "the acknowledgement")
        conversation = await b.store.for_address("api", "upgraded")
        assert conversation is not None
    stream = keys.channel_stream("api")
    assert stream == "bridge:out:api"  # the old name, kept

    def reply(text: str) -> Message:
        return Message(kind="reply", channel="api", address="upgraded", conversation_id=conversation.id, text=text)

    sent, unsent, unread = reply("sent before the upgrade"), reply("read, not sent"), reply("never read")
    redis = aioredis.Redis.from_url(redis_url)
    try:
        for message in (sent, unsent):
            await redis.xadd(stream, {keys.PAYLOAD_FIELD: encode(message)})
        await redis.xreadgroup(keys.DISPATCH_GROUP, "old-dispatcher", {stream: ">"}, count=2)  # it died
        await redis.hset(f"bridge:sent:api:{now_ms() // 86_400_000}", sent.id, "platform-id-1")
        await redis.xadd(stream, {keys.PAYLOAD_FIELD: encode(unread)})
    finally:
        await redis.aclose()
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        await wait_for(lambda: len(webhook.texts_for("upgraded")) >= 3, 20, "the old stream drained")

        async def acknowledged() -> bool:
            return int((await b.redis.xpending(stream, keys.DISPATCH_GROUP))["pending"]) == 0

        await wait_for(acknowledged, 10, "every entry of the old stream acknowledged")
        await asyncio.sleep(0.5)  # nothing more comes
        assert webhook.texts_for("upgraded")[1:] == ["read, not sent", "never read"]


async def test_a_failing_address_in_a_commit_s_outbound_entry_holds_no_other_and_none_is_sent_twice(
        redis_url: str, webhook: WebhookReceiver) -> None:
    """An engine commit's replies to one channel's stream are one entry. The reply whose
    address fails waits alone: the others are sent, and noted as sent; a restarted
    dispatcher reads the entry again and sends only that reply, once its address answers;
    then the entry is acknowledged."""
    webhook.fail_for["stuck"] = 500
    config = api_config(webhook.url, max_attempts=1000)
    stream = outbound_of("api", "ok-1")
    saves = Saves(8)
    for address in ("ok-1", "stuck", "ok-2"):
        saves.send(stream, encode(Message(kind="reply", channel="api", address=address, text=f"Reply to {address}")))
    redis = aioredis.Redis.from_url(redis_url)
    try:
        await commit(redis, saves.ops())
        ((entry_id, _),) = await redis.xrange(stream)
    finally:
        await redis.aclose()
    async with running_bridge(redis_url, config, env=ENV) as b:
        await wait_for(lambda: webhook.texts_for("ok-1") and webhook.texts_for("ok-2") and webhook.tries["stuck"] >= 2,
                       20, "the two others sent while the third is retried")
        await wait_for(lambda: b.redis.hget(keys.parts_done(stream), entry_id), 10, "the two noted as sent")
        assert await b.redis.hget(keys.parts_done(stream), entry_id) == b"0,2"
    async with running_bridge(redis_url, config, env=ENV) as b:
        del webhook.fail_for["stuck"]
        await wait_for(lambda: webhook.texts_for("stuck"), 30, "the third sent once its address answers")

        async def acknowledged() -> bool:
            return int((await b.redis.xpending(stream, keys.DISPATCH_GROUP))["pending"]) == 0

        await wait_for(acknowledged, 10, "the entry acknowledged")
        assert not await b.redis.exists(keys.parts_done(stream))
    assert [webhook.texts_for(a) for a in ("ok-1", "stuck", "ok-2")] == [
        ["Reply to ok-1"], ["Reply to stuck"], ["Reply to ok-2"]]
