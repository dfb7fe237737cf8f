"""Redis restarting under load, and two engine workers keeping each conversation in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.harness import running_bridge, wait_for
from tests.servers import RedisServer, free_port
from tests.test_api_e2e import AUTH, ENV, api_config
from tests.webhook import WebhookReceiver

pytestmark = pytest.mark.slow



async def test_redis_restart_loses_nothing_acknowledged(tmp_path: Path, webhook: WebhookReceiver) -> None:
    server = RedisServer(tmp_path, free_port(), aof=True)
    server.start()
    accepted: list[str] = []
    try:
        async with running_bridge(server.url, api_config(webhook.url), env=ENV) as b, aiohttp.ClientSession() as http:

            async def send(i: int) -> None:
                body = {"customer_id": f"r-{i}", "text": "hello", "message_id": f"r-{i}"}
                for _ in range(200):  # a client retries until the bridge says it stored the message
                    try:
                        async with http.post(b.url + "/api/v1/messages", json=body, headers=AUTH) as response:
                            if response.status == 202:
                                accepted.append(body["customer_id"])
                                return
                            assert response.status == 503, await response.text()
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.05)
                raise AssertionError(f"message {i} never accepted")

            for i in range(20):
                await send(i)
            await asyncio.to_thread(server.restart)  # SIGTERM, then the same port and AOF directory
            for i in range(20, 40):
                await send(i)
            await wait_for(lambda: len(webhook.messages) == 40, 30, "a reply to every accepted message")
    finally:
        server.stop()
    assert sorted(m["customer_id"] for m in webhook.messages) == sorted(accepted)
    assert len(accepted) == 40


async def test_two_engine_workers_keep_each_conversation_in_order(redis_url: str, redis: object,
                                                                   webhook: WebhookReceiver) -> None:
    customers = [f"o-{i}" for i in range(12)]
    replies_each = 8
    config = api_config(webhook.url)
    async with running_bridge(redis_url, config, env=ENV) as a, running_bridge(redis_url, config, env=ENV) as b:
        await wait_for(lambda: a.bridge.engine.leases.held and b.bridge.engine.leases.held, 10,
                       "both workers holding partitions")
        assert len(a.bridge.engine.leases.held) + len(b.bridge.engine.leases.held) == 8
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
