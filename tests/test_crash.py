"""Crashes: a process killed with SIGKILL at the worst moment loses nothing and doubles
nothing the customer sees. The bridge runs as a real process; a failpoint
(BRIDGE_FAILPOINTS) makes it kill itself at the named point."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge import keys
from bridge.bus import Bus
from tests.fakes.slack_api import FakeSlack
from tests.harness import wait_for
from tests.proc import BridgeProcess
from tests.test_api_e2e import AUTH, ENV, api_config
from tests.test_slack_e2e import AUTH as SLACK_AUTH
from tests.test_slack_e2e import config as slack_config
from tests.test_slack_e2e import env as slack_env
from tests.webhook import WebhookReceiver

pytestmark = pytest.mark.slow



async def post_message(url: str, customer_id: str, text: str, message_id: str) -> int:
    async with aiohttp.ClientSession() as http, http.post(
            url + "/api/v1/messages", headers=AUTH,
            json={"customer_id": customer_id, "text": text, "message_id": message_id}) as response:
        return response.status


@pytest.mark.parametrize("failpoint", ["engine.before_commit", "dispatch.after_record"])
async def test_killed_worker_restarts_and_the_customer_gets_one_reply(
        failpoint: str, redis_url: str, redis: object, webhook: WebhookReceiver, tmp_path: Path) -> None:
    bridge = BridgeProcess(tmp_path, redis_url, api_config(webhook.url), env=ENV)
    await bridge.start(failpoints=failpoint)
    assert await post_message(bridge.url, "crash-1", "Hello, is my order shipped?", "m-1") == 202
    assert await bridge.wait_exit(20) == -signal.SIGKILL  # died at the failpoint
    sent_before_restart = len(webhook.received)

    await bridge.start()  # no failpoint: the restarted process takes the partition over
    try:
        await wait_for(lambda: webhook.received, 20, "the reply after restart")
        await wait_for(lambda: bridge_idle(redis), 10, "all entries acknowledged")
    finally:
        assert await bridge.stop() == 0, bridge.log()
    texts = [m["text"] for m in webhook.received]
    assert len(texts) == 1, texts  # exactly one delivery, not merely one after dedupe
    assert "reference" in texts[0].lower()
    if failpoint == "dispatch.after_record":
        assert sent_before_restart == 1  # sent, recorded and acked at once; the restart sends nothing


async def bridge_idle(redis: Any, channels: tuple[str, ...] = ("api",)) -> bool:
    for stream in [keys.inbound(p, 8) for p in range(8)] + [s for c in channels for s in keys.outbound_streams(c, 8)]:
        if await redis.exists(stream):
            groups = await redis.xinfo_groups(stream)
            if any(g["pending"] or g["lag"] for g in groups):
                return False
    return True


async def test_killed_after_send_before_record_is_dropped_by_the_message_id(
        redis_url: str, redis: object, webhook: WebhookReceiver, tmp_path: Path) -> None:
    """The one window at-least-once leaves: the send happened, the record did not. The
    redelivery carries the same X-Bridge-Message-Id, so the receiver shows it once."""
    bridge = BridgeProcess(tmp_path, redis_url, api_config(webhook.url), env=ENV)
    await bridge.start(failpoints="dispatch.after_send")
    assert await post_message(bridge.url, "crash-2", "Question about invoice", "m-2") == 202
    assert await bridge.wait_exit(20) == -signal.SIGKILL
    await bridge.start()
    try:
        await wait_for(lambda: len(webhook.received) == 2, 20, "the redelivery")
    finally:
        await bridge.stop()
    assert webhook.received[0]["id"] == webhook.received[1]["id"]
    assert len(webhook.messages) == 1


async def test_a_slack_thread_posted_just_before_a_crash_is_neither_posted_again_nor_left_unknown(
        redis_url: str, redis: Any, webhook: WebhookReceiver, tmp_path: Path) -> None:
    """Killed between an urgent case's Slack post and its record: the restarted process
    finds the post done, posts nothing again (before, an "escalated" notice went into the
    thread) and records the thread, so the agents' replies in it reach the customer."""
    async with FakeSlack(channels={"C0AGENTS": "support", "C0URGENT": "support-urgent"}) as fake:
        bridge = BridgeProcess(tmp_path, redis_url, slack_config(fake, webhook), env=slack_env(fake))
        await bridge.start(failpoints="dispatch.after_send:slack")
        async with aiohttp.ClientSession() as http, http.post(
                bridge.url + "/api/v1/messages", headers=SLACK_AUTH,
                json={"customer_id": "crash-3", "text": "URGENT: production line stopped", "message_id": "m-3"}
        ) as response:
            assert response.status == 202
        assert await bridge.wait_exit(20) == -signal.SIGKILL  # posted, not recorded
        (root,) = fake.top_level("C0URGENT")
        await bridge.start()
        try:
            await wait_for(lambda: redis.get(keys.ref(f"slack:{root.channel}:{root.ts}")), 20, "the thread recorded")
            await wait_for(lambda: bridge_idle(redis, ("api", "slack")), 20, "all entries acknowledged")
        finally:
            assert await bridge.stop() == 0, bridge.log()
        assert fake.top_level("C0URGENT") == [root]
        assert fake.thread(root.channel, root.ts) == [root]


async def test_sigterm_finishes_in_flight_work_and_acks_nothing_unprocessed(
        redis_url: str, redis: object, webhook: WebhookReceiver, tmp_path: Path) -> None:
    bridge = BridgeProcess(tmp_path, redis_url, api_config(webhook.url), env=ENV)
    await bridge.start()
    for i in range(30):
        assert await post_message(bridge.url, f"term-{i}", "Hello there", f"t-{i}") == 202
    assert await bridge.stop(signal.SIGTERM) == 0
    assert "bridge stopped" in bridge.log()
    await bridge.start()
    try:
        await wait_for(lambda: len(webhook.messages) == 30, 20, "every acknowledgement")
    finally:
        await bridge.stop()
    assert sorted(m["customer_id"] for m in webhook.messages) == sorted(f"term-{i}" for i in range(30))
    assert len(webhook.received) == 30


async def test_logs_are_structured_and_never_contain_secrets(redis_url: str, redis: object,
                                                              webhook: WebhookReceiver, tmp_path: Path) -> None:
    config = api_config(webhook.url)
    config["log"] = {"level": "DEBUG", "format": "json"}
    bridge = BridgeProcess(tmp_path, redis_url, config, env=ENV)
    await bridge.start()
    try:
        wrong = {"Authorization": f"Bearer {ENV['T_API_TOKEN']}x"}
        async with aiohttp.ClientSession() as http, http.post(
                bridge.url + "/api/v1/messages", headers=wrong, json={"customer_id": "s-1", "text": "hi"}) as response:
            assert response.status == 401
        webhook.fail_next = [422]  # a permanent failure is logged with its reason
        assert await post_message(bridge.url, "s-1", "hello", "s-1") == 202
        await wait_for(lambda: "dead-lettered" in bridge.log(), 20, "the dead-letter log line")
    finally:
        await bridge.stop()
    log = tmp_path.joinpath("bridge.log").read_text()
    assert ENV["T_API_TOKEN"] not in log and ENV["T_WEBHOOK_SECRET"] not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    dead = next(line for line in lines if line["msg"] == "dead-lettered")
    assert dead["channel"] == "api" and dead["conversation"] and "422" in dead["reason"]


async def test_a_message_that_kills_every_worker_ends_in_the_dead_letters(
        redis_url: str, redis: object, webhook: WebhookReceiver, tmp_path: Path) -> None:
    """A poison message (here: the worker dies each time it handles it) is not retried
    forever: once delivered more than engine.max_deliveries times it is dead-lettered."""
    import redis.asyncio as aioredis

    assert isinstance(redis, aioredis.Redis)
    config = api_config(webhook.url)
    config["engine"] = {"max_deliveries": 2}
    bridge = BridgeProcess(tmp_path, redis_url, config, env=ENV)
    await bridge.start(failpoints="engine.before_commit")
    assert await post_message(bridge.url, "poison-1", "this one kills", "p-1") == 202
    for _ in range(2):  # first delivery, then one reclaim: both die
        assert await bridge.wait_exit(20) == -signal.SIGKILL
        await bridge.start(failpoints="engine.before_commit")
    try:
        rows = await wait_for(lambda: Bus(redis, partitions=8).dead_letters(), 20, "the dead letter")
        assert "delivered 3 times without being handled" in rows[0]["reason"]
    finally:
        await bridge.stop(signal.SIGKILL)
