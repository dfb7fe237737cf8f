"""Order status from a shop endpoint served by a local aiohttp server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from bridge.errors import ConfigError
from bridge.jobs import Jobs
from bridge.model import Message
from flows import language, order_status, topics, urgency
from flows.order_status import OrderClient, OrderStatusSettings, refused
from tests.harness import running_bridge, wait_for
from tests.test_api_e2e import AUTH, ENV, api_config
from tests.test_flows_helpers import Chat, make_config, replies
from tests.webhook import WebhookReceiver


@dataclass
class Shop:
    """A fake shop API: GET /orders/{order} answers from ``orders``; ``fail`` 500s come first."""

    orders: dict[str, dict[str, str]] = field(default_factory=dict)
    fail: int = 0
    hang: bool = False
    requests: list[str] = field(default_factory=list)
    url: str = ""
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.path_qs)
        if self.hang:
            await self.released.wait()
        if self.fail:
            self.fail -= 1
            return web.Response(status=500)
        order = self.orders.get(request.match_info["order"])
        if order is None:
            return web.json_response({"error": "not found"}, status=404)
        if request.headers.get("Authorization") != "Bearer t0ken":
            return web.Response(status=401)
        return web.json_response(order)


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    shop = Shop(orders={"48213": {"status": "shipped", "carrier": "DHL", "tracking": "JD0146", "eta": "2026-11-25"},
                        "55120": {"status": "packing"}})
    app = web.Application()
    app.router.add_get("/orders/{order}", shop.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    shop.url = f"http://127.0.0.1:{port}"
    try:
        yield shop
    finally:
        shop.released.set()
        await runner.cleanup()


def chat(shop: Shop, **options: object) -> Chat:
    settings = {"url": shop.url + "/orders/{order}?lang={language}", "allow_private": True, "backoff_s": 0,
                "headers": {"Authorization": "Bearer t0ken"}, **options}
    config = make_config({"order_status": settings})
    return Chat(config, [language.build(config), urgency.build(config), topics.build(config),
                         order_status.build(config)])


async def test_where_is_my_order_is_answered_with_tracking(shop: Shop) -> None:
    turn = await chat(shop).say("Hi, where is my order 48213? It should have shipped by now.")
    (reply,) = replies(turn)
    assert reply.text == ("Order 48213: shipped. Carrier: DHL, tracking number: JD0146. "
                          "Expected delivery: 2026-11-25.")
    assert turn.stopped
    assert shop.requests == ["/orders/48213?lang=en"]


async def test_status_command_and_other_languages(shop: Shop) -> None:
    turn = await chat(shop).say("/status 55120")
    assert [r.text for r in replies(turn)] == ["Order 55120: packing."]
    turn = await chat(shop).say("Где мой заказ 48213?")
    assert replies(turn)[0].text.startswith("Заказ 48213: shipped. Перевозчик: DHL")
    assert shop.requests[-1] == "/orders/48213?lang=ru"
    turn = await chat(shop).say("/status")
    assert replies(turn)[0].text == "Please send your order number, for example: /status 12345."


async def test_unknown_order_and_retries(shop: Shop) -> None:
    turn = await chat(shop).say("Nasaan na ang order ko 99999?")
    assert replies(turn)[0].text.startswith("Hindi namin makita ang order 99999")
    assert not turn.stopped  # a person looks too

    shop.fail = 2
    shop.requests.clear()
    turn = await chat(shop, retries=2).say("/status 55120")
    assert [r.text for r in replies(turn)] == ["Order 55120: packing."]
    assert len(shop.requests) == 3

    shop.fail = 5
    turn = await chat(shop, retries=1).say("/status 55120")
    assert replies(turn)[0].text.startswith("Order status is not available right now")
    assert turn.notes["order_status"]["detail"] == "HTTP 500"
    assert not turn.stopped


async def test_a_hanging_endpoint_times_out(shop: Shop) -> None:
    shop.hang = True
    turn = await chat(shop, timeout_s=0.2, retries=1).say("/status 48213")
    assert replies(turn)[0].text.startswith("Order status is not available right now")
    assert turn.notes["order_status"]["outcome"] == "unavailable"
    assert len(shop.requests) == 2


async def test_a_failing_endpoint_is_paused_so_customers_are_not_kept_waiting(shop: Shop) -> None:
    shop.hang = True
    c = chat(shop, timeout_s=0.2, retries=0, pause_after_failures=2, pause_s=0.5)
    for _ in range(2):
        turn = await c.say("/status 48213")
        assert turn.notes["order_status"]["outcome"] == "unavailable"
    assert len(shop.requests) == 2
    # paused: the customer hears at once that a person will check, the endpoint is not asked
    turn = await c.say("/status 55120")
    assert replies(turn)[-1].text.startswith("Order status is not available right now")
    assert turn.notes["order_status"]["detail"].startswith("not asked: the endpoint failed 2 times in a row")
    assert len(shop.requests) == 2
    # after the pause it is asked again, and an answer ends the pause
    shop.hang = False
    shop.released.set()
    c.clock.advance(minutes=0.01)  # 0.6 s later
    turn = await c.say("/status 48213")
    assert replies(turn)[-1].text.startswith("Order 48213: shipped")
    assert len(shop.requests) == 3


async def test_private_addresses_are_refused_unless_allowed(shop: Shop) -> None:
    port = shop.url.rsplit(":", 1)[1]
    for url in (shop.url, f"http://localhost:{port}", f"http://[::1]:{port}", "http://169.254.169.254",
                "http://10.0.0.7:8080", "http://[::ffff:127.0.0.1]:" + port):
        client = OrderClient(OrderStatusSettings(url=url + "/orders/{order}", backoff_s=0))
        result = await client.lookup("48213")
        assert result.outcome == "unavailable"
        assert "private or local address" in result.detail, (url, result.detail)
    assert shop.requests == []  # nothing reached the server
    turn = await chat(shop, allow_private=False).say("/status 48213")
    assert replies(turn)[0].text.startswith("Order status is not available right now")
    assert shop.requests == []


def test_address_classes() -> None:
    assert refused("127.0.0.1") and refused("10.1.2.3") and refused("192.168.1.1") and refused("172.16.0.1")
    assert refused("169.254.1.1") and refused("100.64.0.1") and refused("::1") and refused("fe80::1")
    assert refused("fd00::1") and refused("224.0.0.1") and refused("0.0.0.0") and refused("::ffff:10.0.0.1")
    assert not refused("8.8.8.8") and not refused("2606:4700:4700::1111")


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        order_status.build(make_config({"order_status": {"url": "ftp://x/{order}"}}))
    assert "flows.order_status.url" in str(err.value)
    with pytest.raises(ConfigError) as err:
        order_status.build(make_config({"order_status": {"url": "http://x/{order}", "order_pattern": "\\d+"}}))
    assert "flows.order_status.order_pattern" in str(err.value)


async def test_a_slow_shop_does_not_hold_the_partition(shop: Shop, redis_url: str, webhook: WebhookReceiver) -> None:
    """The lookup waits at most hold_s, then goes on as a job: a customer behind it in the
    same partition is answered first, and the status follows when the shop answers."""
    shop.hang = True
    config = api_config(webhook.url)
    config["engine"] = {"partitions": 1, "steps": ["triage", "order_status", "routing"]}
    config["flows"] = {"order_status": {"url": shop.url + "/orders/{order}", "allow_private": True, "hold_s": 0.2,
                                        "headers": {"Authorization": "Bearer ${T_SHOP}"}, "timeout_s": 30}}
    async with running_bridge(redis_url, config, env={**ENV, "T_SHOP": "t0ken"}) as b:
        for customer, text in (("waiting", "/status 48213"), ("behind", "Do you ship to Cebu?")):
            r = await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": customer, "text": text})
            assert r.status == 202
        await wait_for(lambda: webhook.texts_for("behind"), 10, "the customer behind the slow lookup")
        assert not any(t.startswith("Order 48213") for t in webhook.texts_for("waiting"))
        shop.released.set()
        await wait_for(lambda: any(t.startswith("Order 48213: shipped") for t in webhook.texts_for("waiting")), 10,
                       "the status once the shop answers")
        conversation = await b.store.for_address("api", "waiting")
        assert conversation is not None and "order_lookups" not in conversation.data


async def test_a_lookup_lost_with_its_process_is_answered_by_its_timer(shop: Shop) -> None:
    shop.hang = True
    lost: list[Message] = []

    async def publish_nowhere(message: Message) -> bool:  # the process died before the result came back
        lost.append(message)
        return True

    c = chat(shop, hold_s=0.1, timeout_s=0.3, retries=0)
    c.config.jobs = Jobs(publish_nowhere)
    turn = await c.say("/status 48213")
    assert not any(r.text.startswith("Order 48213") for r in replies(turn))
    assert c.conversation is not None and list(c.conversation.data["order_lookups"].values()) == ["48213"]
    c.clock.advance(minutes=1)
    (fired,) = await c.fire_due()
    assert replies(fired)[0].text.startswith("Order status is not available right now")
    assert "order_lookups" not in c.conversation.data
