"""Redis restarted and frozen under load, and two engine workers keeping each conversation in order."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import merged, running_bridge, wait_for
from tests.load import ConversationLoad, tally_under
from tests.proc import BridgeProcess
from tests.servers import RedisServer, free_port
from tests.test_api_e2e import AUTH, ENV, api_config
from tests.webhook import WebhookReceiver

pytestmark = pytest.mark.slow



def log_events(path: Path) -> list[dict[str, Any]]:
    """The bridge's JSON log lines, as an operator reads them."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def recoveries(events: list[dict[str, Any]]) -> set[str]:
    """Which recovery branches the log shows."""
    ran = set()
    for e in events:
        msg = e["msg"]
        if msg in ("publish failed", "conversation lookup failed"):
            ran.add("api: 503")
        elif msg == "redis unavailable, retrying":
            ran.add("dispatcher: read retried" if e.get("channel") else "engine: retried")
        elif msg == "the sent record waits":
            ran.add("dispatcher: record retried")
        elif (msg == "leases lost" and e.get("role") == "engine") or msg == "lease lost, dropping partition state":
            ran.add("engine: lease lost")
        elif (msg == "leases lost" and e.get("role") == "dispatch:api") or msg == "lease lost":
            ran.add("dispatcher: lease lost")
    return ran


FAULT_S = 3.0  # longer than the client's retries (~1.5 s), the publish timeout (1 s) and the leases (1 s)


@pytest.mark.parametrize("fault", ["restart", "freeze"])
async def test_redis_fault_under_load_loses_nothing_acknowledged(fault: str, tmp_path: Path,
                                                                  webhook: WebhookReceiver) -> None:
    """Redis stopped and started again (its append-only file kept), or frozen (SIGSTOP, then
    SIGCONT), while customers and agents write in six conversations through the HTTP API.
    The API answers 503 with Retry-After meanwhile, and what it accepted arrives once and
    in order: in the transcript (the engine) and at the customer's webhook (the dispatcher)."""
    server = RedisServer(tmp_path / "redis", free_port(), aof=True)
    server.start()
    config = merged(api_config(webhook.url), {"redis": {"publish_timeout_s": 1.0},
                                              "log": {"format": "json", "level": "WARNING"}})
    bridge = BridgeProcess(tmp_path, server.url, config, env=ENV)
    load = ConversationLoad(bridge.url, webhook, customers=6, prefix=fault)

    async def outage() -> None:
        await wait_for(lambda: load.sent >= 30, 20, "messages flowing")
        if fault == "restart":
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(FAULT_S)  # the outage itself
            await asyncio.to_thread(server.start)
        else:
            server.freeze()
            await asyncio.sleep(FAULT_S)
            server.thaw()

    try:
        tally, stopped = await tally_under(bridge, load, outage)
    finally:
        server.stop()
    assert not tally, tally
    assert stopped == 0, bridge.log()
    assert load.statuses[503] > 0 and load.retry_after == {"1"}, load.statuses
    ran = recoveries(log_events(tmp_path / "bridge.log"))
    expected = {"api: 503", "engine: lease lost", "dispatcher: lease lost"}
    if fault == "restart":
        expected |= {"engine: retried", "dispatcher: read retried"}
    assert expected <= ran, ran


async def test_two_engine_workers_keep_each_conversation_in_order(redis_url: str, redis: object,
                                                                   webhook: WebhookReceiver) -> None:
    customers = [f"o-{i}" for i in range(12)]
    replies_each = 8
    config = api_config(webhook.url)
    async with running_bridge(redis_url, config, env=ENV) as a, running_bridge(redis_url, config, env=ENV) as b:
        # the first one holds all 8, gives back what is above its share, the other takes it:
        # in between, fewer than 8 are held
        await wait_for(lambda: a.bridge.engine.leases.held and b.bridge.engine.leases.held
                       and len(a.bridge.engine.leases.held) + len(b.bridge.engine.leases.held) == 8, 10,
                       "both workers holding partitions, every partition held")
        async with aiohttp.ClientSession() as http:
            for i, customer in enumerate(customers):
                async with http.post((a, b)[i % 2].url + "/api/v1/messages", headers=AUTH,
                                     json={"customer_id": customer, "text": "hi"}) as response:
                    assert response.status == 202
            conversations = {}
            for customer in customers:
                conversation = await wait_for(lambda c=customer: a.store.for_address("api", c), 10)
                conversations[customer] = conversation.id

            async def agent_replies(customer: str) -> None:
                for n in range(replies_each):  # one after another, alternating processes
                    target = (a, b)[n % 2]
                    async with http.post(f"{target.url}/api/v1/conversations/{conversations[customer]}/messages",
                                         headers=AUTH, json={"text": f"reply {n}", "agent": "Ana"}) as response:
                        assert response.status == 202

            await asyncio.gather(*(agent_replies(c) for c in customers))
        total = len(customers) * (replies_each + 1)
        await wait_for(lambda: len(webhook.messages) == total, 30, "every reply")
        assert a.bridge.engine.processed > 0 and b.bridge.engine.processed > 0
    for customer in customers:
        texts = webhook.texts_for(customer)
        assert texts[1:] == [f"reply {n}" for n in range(replies_each)], (customer, texts)
