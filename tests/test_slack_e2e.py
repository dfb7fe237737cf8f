"""End to end: customers on the HTTP API channel, agents in (fake) Slack, the whole bridge
in between (real Redis, engine, dispatchers, slack-bolt and slack-sdk over real HTTP)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.slack_api import FakeSlack, Post, sign
from tests.harness import RunningBridge, running_bridge
from tests.webhook import WEBHOOK_SECRET, WebhookReceiver

API_TOKEN = "test-api-token-123"
SLACK_SECRET = "slack-signing-secret-789"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
MENTION = "<!subteam^S0ONCALL>"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(channels={"C0AGENTS": "support", "C0URGENT": "support-urgent"}) as server:
        server.add_user("U0ALICE", name="Alice Agent", email="alice@example.com", display_name="alice")
        server.add_user("U0BOB", name="Bob Builder", email="bob@example.com", display_name="bob")
        yield server



def config(fake: FakeSlack, webhook: WebhookReceiver, **slack: Any) -> dict[str, Any]:
    return {
        "channels": {
            "api": {"token": "${T_API_TOKEN}", "webhook_url": webhook.url, "webhook_secret": "${T_WEBHOOK_SECRET}"},
            "slack": {"bot_token": "${T_SLACK_BOT_TOKEN}", "signing_secret": "${T_SLACK_SIGNING_SECRET}",
                      "base_url": fake.base_url, "agents_channel": "C0AGENTS", "urgent_channel": "C0URGENT",
                      "rate_per_address_per_s": 100, "agents": {"U0ALICE": "Alice", "bob@example.com": "Bob"},
                      **slack},
        },
        "agents": {"channels": ["slack"], "urgent_mention": MENTION},
        "triage": {"urgent_keywords": {"en": ["urgent", "production line stopped"]}},
    }


def env(fake: FakeSlack) -> dict[str, str]:
    return {"T_API_TOKEN": API_TOKEN, "T_WEBHOOK_SECRET": WEBHOOK_SECRET, "T_SLACK_BOT_TOKEN": fake.bot_token,
            "T_SLACK_SIGNING_SECRET": SLACK_SECRET}


_event_ids = iter(range(1, 1_000_000))


async def agent_writes(b: RunningBridge, root: Post, text: str, *, user: str = "U0ALICE",
                       event_id: str | None = None, retry: int = 0) -> int:
    """An agent writes in the conversation's thread; Slack posts the signed event to the bridge."""
    await b.wait_for(lambda: b.store.by_ref(f"slack:{root.channel}:{root.ts}"), what="the thread known to the bridge")
    ts = f"{time.time():.6f}"
    payload = {"type": "event_callback", "team_id": "T0001", "api_app_id": "A0001",
               "event_id": event_id or f"Ev{next(_event_ids):08d}", "event_time": int(time.time()),
               "event": {"type": "message", "user": user, "text": text, "ts": ts, "thread_ts": root.ts,
                         "channel": root.channel, "event_ts": ts, "channel_type": "channel",
                         "parent_user_id": "UBOT"}}
    body = json.dumps(payload)
    extra = {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"} if retry else None
    response = await b.post("/slack/events", data=body.encode(), headers=sign(SLACK_SECRET, body, extra=extra))
    return response.status


async def customer_writes(b: RunningBridge, customer: str, text: str, message_id: str) -> None:
    response = await b.post("/api/v1/messages", headers=AUTH,
                            json={"customer_id": customer, "name": "Maria", "text": text, "message_id": message_id})
    assert response.status == 202


def replies(webhook: WebhookReceiver, customer: str) -> list[dict[str, Any]]:
    return [m for m in webhook.messages if m["customer_id"] == customer and m["kind"] == "reply"]


async def test_urgent_case_agent_reply_note_and_delivery(redis_url: str, fake: FakeSlack,
                                                         webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, config(fake, webhook), env=env(fake)) as b:
        await customer_writes(b, "cust-1", "URGENT: production line stopped <!channel>", "m1")
        (root,) = await b.wait_for(lambda: fake.top_level("C0URGENT"), what="the urgent thread")
        assert root.text.startswith(f"{MENTION} ")
        assert "production line stopped &lt;!channel&gt;" in root.text  # the customer pings nobody
        assert fake.top_level("C0AGENTS") == []
        await b.wait_for(lambda: replies(webhook, "cust-1"), what="the instant reply")

        assert await agent_writes(b, root, "note: call the plant manager first") == 200
        assert await agent_writes(b, root, "Hi Maria, a technician is on the way &amp; arrives at 3pm") == 200
        await b.wait_for(lambda: len(replies(webhook, "cust-1")) == 2, what="the agent's reply")
        _instant, reply = replies(webhook, "cust-1")
        assert reply["text"] == "Hi Maria, a technician is on the way & arrives at 3pm"
        assert reply["sender"]["name"] == "Alice"
        assert all("plant manager" not in m["text"] for m in webhook.messages)

        await b.wait_for(lambda: any("sent to customer" in p.text for p in fake.thread("C0URGENT", root.ts)),
                         what="the delivery report in the thread")
        conversation = await b.store.for_address("api", "cust-1")
        assert conversation is not None and conversation.urgency == "urgent"
        assert conversation.assignee == "Alice" and conversation.status == "pending"


async def test_routine_case_follow_up_buttons_and_commands(redis_url: str, fake: FakeSlack,
                                                           webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, config(fake, webhook), env=env(fake)) as b:
        await customer_writes(b, "cust-2", "Could you send me the invoice for May?", "m1")
        (root,) = await b.wait_for(lambda: fake.top_level("C0AGENTS"), what="the routine thread")
        assert MENTION not in root.text and "invoice for May" in root.text
        await customer_writes(b, "cust-2", "and for June, please", "m2")
        await b.wait_for(lambda: any("and for June" in p.text for p in fake.thread("C0AGENTS", root.ts)),
                         what="the follow-up in the thread")

        assert await click(b, root, "Claim", user="U0BOB") == 200
        await b.wait_for(lambda: any("assigned to Bob" in p.text for p in fake.thread("C0AGENTS", root.ts)),
                         what="the claim shown in the thread")
        await b.wait_for(lambda: "Assigned to:* Bob" in json.dumps(root.blocks), what="the first post updated")

        assert await agent_writes(b, root, "!resolve", user="U0BOB") == 200
        await b.wait_for(lambda: any("resolved by Bob" in p.text for p in fake.thread("C0AGENTS", root.ts)),
                         what="the resolution shown in the thread")
        conversation = await b.store.for_address("api", "cust-2")
        assert conversation is not None
        assert (conversation.status, conversation.assignee) == ("resolved", "Bob")
        assert len(replies(webhook, "cust-2")) == 1  # the acknowledgement only: commands never reach the customer

        await b.wait_for(lambda: "Reopen" in json.dumps(root.blocks), what="the Reopen button")
        assert await click(b, root, "Reopen", user="U0ALICE") == 200
        await b.wait_for(lambda: any("reopened by Alice" in p.text for p in fake.thread("C0AGENTS", root.ts)),
                         what="the reopening shown in the thread")
        conversation = await b.store.for_address("api", "cust-2")
        assert conversation is not None and conversation.status == "open"


async def click(b: RunningBridge, root: Post, label: str, *, user: str) -> int:
    """An agent clicks a button on the thread's first post; Slack posts the signed payload."""
    await b.wait_for(lambda: b.store.by_ref(f"slack:{root.channel}:{root.ts}"), what="the thread known to the bridge")
    (actions,) = [block for block in root.blocks if block["type"] == "actions"]
    (button,) = [e for e in actions["elements"] if e["text"]["text"] == label]
    payload = {"type": "block_actions", "user": {"id": user, "team_id": "T0001"}, "api_app_id": "A0001",
               "trigger_id": f"{time.time():.6f}.{label}", "team": {"id": "T0001"},
               "container": {"type": "message", "message_ts": root.ts, "channel_id": root.channel},
               "channel": {"id": root.channel}, "message": {"ts": root.ts, "text": root.text},
               "actions": [dict(button, action_ts=f"{time.time():.6f}")]}
    body = "payload=" + urllib.parse.quote(json.dumps(payload))
    response = await b.post("/slack/events", data=body.encode(), headers=sign(SLACK_SECRET, body))
    return response.status


async def test_slack_retries_reach_the_customer_once(redis_url: str, fake: FakeSlack,
                                                     webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, config(fake, webhook), env=env(fake)) as b:
        await customer_writes(b, "cust-3", "URGENT: shipment lost", "m1")
        (root,) = await b.wait_for(lambda: fake.top_level("C0URGENT"), what="the urgent thread")
        for retry in (0, 1, 2):
            assert await agent_writes(b, root, "We found it, it ships today", event_id="EvSAME", retry=retry) == 200
        await b.wait_for(lambda: any("sent to customer" in p.text for p in fake.thread("C0URGENT", root.ts)),
                         what="the delivery report")
        assert [m["text"] for m in replies(webhook, "cust-3")][1:] == ["We found it, it ships today"]


async def test_explicit_mode_keeps_unmarked_talk_internal(redis_url: str, fake: FakeSlack,
                                                          webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, config(fake, webhook, replies="explicit"), env=env(fake)) as b:
        await customer_writes(b, "cust-4", "URGENT: production line stopped", "m1")
        (root,) = await b.wait_for(lambda: fake.top_level("C0URGENT"), what="the urgent thread")
        assert await agent_writes(b, root, "I think it is the PLC again, ugh") == 200
        assert await agent_writes(b, root, "&gt;&gt; We are sending a technician.") == 200
        await b.wait_for(lambda: len(replies(webhook, "cust-4")) == 2, what="the marked reply")
        assert replies(webhook, "cust-4")[1]["text"] == "We are sending a technician."
        assert all("PLC" not in m["text"] for m in webhook.messages)


async def test_a_failed_delivery_is_shown_in_the_thread(redis_url: str, fake: FakeSlack,
                                                        webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, config(fake, webhook), env=env(fake)) as b:
        await customer_writes(b, "cust-5", "URGENT: production line stopped", "m1")
        (root,) = await b.wait_for(lambda: fake.top_level("C0URGENT"), what="the urgent thread")
        await b.wait_for(lambda: replies(webhook, "cust-5"), what="the instant reply")
        webhook.fail_next = [400]
        assert await agent_writes(b, root, "Please restart the line") == 200
        post = await b.wait_for(lambda: [p for p in fake.thread("C0URGENT", root.ts) if "not delivered" in p.text],
                                what="the failure in the thread")
        assert "webhook answered 400" in post[0].text


async def test_slack_rate_limits_are_waited_out(redis_url: str, fake: FakeSlack, webhook: WebhookReceiver) -> None:
    fake.fail("chat.postMessage", status=429, retry_after_s=1)
    async with running_bridge(redis_url, config(fake, webhook), env=env(fake)) as b:
        await customer_writes(b, "cust-6", "URGENT: production line stopped", "m1")
        await b.wait_for(lambda: fake.top_level("C0URGENT"), what="the thread after the 429")
        assert len(fake.calls["chat.postMessage"]) == 2 and len(fake.top_level("C0URGENT")) == 1


async def test_a_missing_channel_breaks_the_integration(redis_url: str, fake: FakeSlack,
                                                        webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, config(fake, webhook, urgent_channel="C0DELETED"), env=env(fake)) as b:
        await customer_writes(b, "cust-7", "URGENT: production line stopped", "m1")
        health = await b.wait_for(lambda: b.bridge.health.local.get("slack", ("", ""))[0] == "broken"
                                  and b.bridge.health.local["slack"], what="slack shown as broken")
        assert "channel_not_found" in health[1]
        assert fake.posts == []


async def test_socket_mode_through_the_whole_bridge(redis_url: str, fake: FakeSlack,
                                                    webhook: WebhookReceiver) -> None:
    settings = config(fake, webhook, mode="socket", app_token="${T_SLACK_APP_TOKEN}", signing_secret=None)
    async with running_bridge(redis_url, settings, env={**env(fake), "T_SLACK_APP_TOKEN": fake.app_token}) as b:
        await fake.wait_socket()
        await customer_writes(b, "cust-8", "URGENT: production line stopped", "m1")
        (root,) = await b.wait_for(lambda: fake.top_level("C0URGENT"), what="the urgent thread")
        await b.wait_for(lambda: b.store.by_ref(f"slack:{root.channel}:{root.ts}"), what="the thread recorded")
        ts = f"{time.time():.6f}"
        payload = {"type": "event_callback", "team_id": "T0001", "api_app_id": "A0001", "event_id": "EvSOCKET1",
                   "event_time": int(time.time()),
                   "event": {"type": "message", "user": "U0ALICE", "text": "On our way", "ts": ts,
                             "thread_ts": root.ts, "channel": root.channel, "event_ts": ts,
                             "parent_user_id": "UBOT"}}
        assert await fake.socket_send(payload) is not None
        assert await fake.socket_send(payload, retry_attempt=1) is not None
        await b.wait_for(lambda: any("sent to customer" in p.text for p in fake.thread("C0URGENT", root.ts)),
                         what="the delivery report")
        assert [m["text"] for m in replies(webhook, "cust-8")][1:] == ["On our way"]
        response = await b.post("/slack/events", data=b"{}", headers={"Content-Type": "application/json"})
        assert response.status == 404  # no HTTP endpoint in socket mode


async def test_a_burst_of_replies_with_retries_reaches_the_customer_once_each(redis_url: str, fake: FakeSlack,
                                                                               webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, config(fake, webhook), env=env(fake)) as b:
        await customer_writes(b, "cust-9", "URGENT: production line stopped", "m1")
        (root,) = await b.wait_for(lambda: fake.top_level("C0URGENT"), what="the urgent thread")
        texts = [f"update {i}" for i in range(30)]
        statuses = await asyncio.gather(*(agent_writes(b, root, text, event_id=f"EvBURST{i}", retry=copy)
                                          for i, text in enumerate(texts) for copy in (0, 1)))
        assert set(statuses) == {200}
        await b.wait_for(lambda: len(replies(webhook, "cust-9")) == 31, what="every reply")
        sent = [m["text"] for m in webhook.received if m["customer_id"] == "cust-9" and m["kind"] == "reply"][1:]
        assert sorted(sent) == sorted(texts)  # each once: no doubles even before the receiver's own dedupe


async def test_a_reopened_urgent_case_continues_in_its_original_thread(redis_url: str, fake: FakeSlack,
                                                                        webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, config(fake, webhook), env=env(fake)) as b:
        await customer_writes(b, "cust-10", "URGENT: production line stopped", "m1")
        (root,) = await b.wait_for(lambda: fake.top_level("C0URGENT"), what="the urgent thread")
        assert await agent_writes(b, root, "!resolve") == 200
        await b.wait_for(lambda: "Reopen" in json.dumps(root.blocks), what="the case resolved")

        await customer_writes(b, "cust-10", "it stopped again", "m2")
        await b.wait_for(lambda: any("it stopped again" in p.text for p in fake.thread("C0URGENT", root.ts)),
                         what="the customer's words in the original thread")
        reopened = [p for p in fake.thread("C0URGENT", root.ts) if "it stopped again" in p.text]
        assert reopened[0].text.startswith(f"{MENTION} :rotating_light: *reopened by the customer (urgent)*")
        await b.wait_for(lambda: "Claim" in json.dumps(root.blocks), what="the first post open again")
        assert fake.top_level("C0AGENTS") == [] and len(fake.top_level("C0URGENT")) == 1
        assert all("continues in a new thread" not in p.text for p in fake.posts)
        await b.wait_for(lambda: len(replies(webhook, "cust-10")) == 2, what="the instant reply to the reopening")
        assert replies(webhook, "cust-10")[1]["text"] == replies(webhook, "cust-10")[0]["text"]  # the urgent reply


async def test_healthz_says_degraded_while_a_channel_is_degraded(redis_url: str, fake: FakeSlack,
                                                                 webhook: WebhookReceiver) -> None:
    fake.fail("auth.test", status=500, times=1_000_000)  # Slack answers, badly: worth retrying, not broken
    async with running_bridge(redis_url, config(fake, webhook), env=env(fake)) as b:
        await b.wait_for(lambda: b.bridge.health.local.get("slack", ("", ""))[0] == "degraded",
                         what="slack shown as degraded")
        response = await b.get("/healthz")
        health = await response.json()
        assert response.status == 200 and health["status"] == "degraded"
        assert health["adapters"]["slack"]["state"] == "degraded" and health["adapters"]["api"]["state"] == "ok"
