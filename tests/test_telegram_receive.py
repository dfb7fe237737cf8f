"""Receiving from Telegram: offset-owned long polling (also across a SIGKILL), webhook mode,
/start, inline buttons. Real python-telegram-bot, the fake_telegram Bot API over HTTP, real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from adapters.telegram.adapter import SECRET_HEADER, TelegramAdapter
from bridge import keys
from bridge.bus import entry_of
from bridge.context import RedisState
from bridge.model import Message, decode
from tests.fakes.telegram_api import TOKEN, FakeTelegram
from tests.servers import free_port
from tests.telegram_poller import make_config, make_context
from tests.test_telegram_translate import fixture

ROOT = Path(__file__).resolve().parent.parent



async def eventually(predicate: Callable[[], bool | Awaitable[bool]], timeout_s: float = 15.0) -> None:
    """Wait for a condition (not a timing assertion: the bound only stops a hung test)."""
    async with asyncio.timeout(timeout_s):
        while True:
            result = predicate()
            if await result if inspect.isawaitable(result) else result:
                return
            await asyncio.sleep(0.02)


async def inbound(redis: aioredis.Redis) -> list[Message]:
    out = []
    streams = {stream async for stream in redis.scan_iter(match=keys.PREFIX + "in:*")}  # (SCAN may repeat one)
    for stream in streams:
        for _id, fields in await redis.xrange(stream):
            out.extend(decode(entry.payload) for entry in entry_of(stream.decode(), _id.decode(), fields)
                       if entry.payload)
    return sorted(out, key=lambda m: m.dedupe_key)


def text_update(chat_id: int, text: str, message_id: int = 1) -> dict[str, Any]:
    user = {"id": chat_id, "is_bot": False, "first_name": "Maria", "language_code": "en"}
    return {"message": {"message_id": message_id, "from": user, "chat": {"id": chat_id, "type": "private"},
                        "date": 1763900000, "text": text}}


def polling_adapter(fake_telegram: FakeTelegram, redis: aioredis.Redis, health: list[tuple[str, str]] | None = None,
                    **config: Any) -> TelegramAdapter:
    ctx, _ = make_context(redis, health=health)
    return TelegramAdapter(make_config(fake_telegram.base_url, fake_telegram.base_file_url, TOKEN, **config), ctx)


async def test_updates_are_published_once_and_confirmed_after_storing(fake_telegram: FakeTelegram,
                                                                     redis: aioredis.Redis) -> None:
    ids = [await fake_telegram.push_update(text_update(100 + i, f"question {i}")) for i in range(3)]
    adapter = polling_adapter(fake_telegram, redis)
    await adapter.start()
    try:
        await eventually(lambda: _count(redis, 3))
        await eventually(lambda: fake_telegram.confirmed_below == ids[-1] + 1)
    finally:
        await adapter.stop()
    assert await RedisState(redis, "telegram").get("offset") == str(ids[-1] + 1)

    # Restart: the stored offset is the first thing Telegram hears; new updates only.
    more = [await fake_telegram.push_update(text_update(200 + i, f"follow-up {i}")) for i in range(2)]
    adapter = polling_adapter(fake_telegram, redis)
    await adapter.start()
    try:
        await eventually(lambda: _count(redis, 5))
        await eventually(lambda: fake_telegram.confirmed_below == more[-1] + 1)
    finally:
        await adapter.stop()
    messages = await inbound(redis)
    assert [m.dedupe_key for m in messages] == [f"telegram:{i}" for i in ids + more]
    assert [m.text for m in messages] == [f"question {i}" for i in range(3)] + [f"follow-up {i}" for i in range(2)]
    offsets = [r.params.get("offset") for r in fake_telegram.requests["getUpdates"]]
    assert str(ids[-1] + 1) in offsets  # the second run started from the stored offset
    assert fake_telegram.webhook == {} and fake_telegram.requests["deleteWebhook"]  # polling removed any webhook


async def test_a_redelivered_update_is_dropped(fake_telegram: FakeTelegram, redis: aioredis.Redis) -> None:
    """An earlier run appended the update but died before storing the offset."""
    _ctx, bus = make_context(redis)
    update = fixture("private_text")
    from adapters.telegram.translate import update_to_message

    earlier = update_to_message(update)
    assert earlier is not None and await bus.publish(earlier)
    await fake_telegram.push_update(update)
    await fake_telegram.push_update(text_update(300, "next one"))
    adapter = polling_adapter(fake_telegram, redis)
    await adapter.start()
    try:
        await eventually(lambda: fake_telegram.confirmed_below == 910000002 + 1)
        await eventually(lambda: _count(redis, 2))
    finally:
        await adapter.stop()
    messages = await inbound(redis)
    assert Counter(m.dedupe_key for m in messages) == {"telegram:910000001": 1, "telegram:910000002": 1}


async def test_start_is_greeted_in_the_customers_language(fake_telegram: FakeTelegram, redis: aioredis.Redis) -> None:
    await fake_telegram.push_update(fixture("start_ru"))
    last = await fake_telegram.push_update(text_update(777000111, "У меня вопрос по заказу"))
    adapter = polling_adapter(fake_telegram, redis)
    await adapter.start()
    try:
        await eventually(lambda: _count(redis, 1))
        await eventually(lambda: fake_telegram.confirmed_below == last + 1)
    finally:
        await adapter.stop()
    assert fake_telegram.texts(777000111)[0].startswith("Здравствуйте!")
    assert [m.text for m in await inbound(redis)] == ["У меня вопрос по заказу"]  # /start opens no case


async def test_inline_button_press_is_published_and_answered(fake_telegram: FakeTelegram,
                                                             redis: aioredis.Redis) -> None:
    await fake_telegram.push_update(fixture("callback_query"))
    adapter = polling_adapter(fake_telegram, redis)
    await adapter.start()
    try:
        await eventually(lambda: _count(redis, 1))
        await eventually(lambda: bool(fake_telegram.requests["answerCallbackQuery"]))
    finally:
        await adapter.stop()
    [message] = await inbound(redis)
    assert message.data["callback"] == "survey:5" and message.text == "😀 Great"
    assert fake_telegram.requests["answerCallbackQuery"][0].params["callback_query_id"] == "4382bfdwdsb323b2d9"


async def test_poller_waits_out_429_and_500(fake_telegram: FakeTelegram, redis: aioredis.Redis) -> None:
    fake_telegram.fail("getUpdates", 429, retry_after=1)
    fake_telegram.fail("getUpdates", 500)
    await fake_telegram.push_update(text_update(400, "still arrives"))
    health: list[tuple[str, str]] = []
    adapter = polling_adapter(fake_telegram, redis, health=health)
    await adapter.start()
    try:
        await eventually(lambda: _count(redis, 1))
        await eventually(lambda: health[-1][0] == "ok")
    finally:
        await adapter.stop()
    statuses = [r.status for r in fake_telegram.requests["getUpdates"]]
    assert statuses[:3] == [429, 500, 200]
    states = [state for state, _ in health]
    assert states == ["starting", "degraded", "degraded", "ok", "stopped"]
    assert [m.text for m in await inbound(redis)] == ["still arrives"]


async def test_a_rejected_token_marks_the_adapter_broken(fake_telegram: FakeTelegram, redis: aioredis.Redis) -> None:
    health: list[tuple[str, str]] = []
    ctx, _ = make_context(redis, health=health)
    wrong_token = "123456789:AAWrongTokenxxxxxxxxxxxxxxxxxx"
    adapter = TelegramAdapter(make_config(fake_telegram.base_url, fake_telegram.base_file_url, wrong_token), ctx)
    await adapter.start()
    try:
        await eventually(lambda: bool(health) and health[-1][0] == "broken")
    finally:
        await adapter.stop()
    assert [state for state, _ in health] == ["starting", "broken", "stopped"]
    assert "channels.telegram.token" in health[1][1]
    assert not any("AAWrong" in d for _, d in health)


async def test_an_update_nobody_can_parse_does_not_stall_the_others(fake_telegram: FakeTelegram,
                                                                   redis: aioredis.Redis) -> None:
    """python-telegram-bot rejects a chat without "type"; our translator does not need it.
    A message without a chat at all cannot be read by anyone: it is skipped, not retried forever."""
    await fake_telegram.push_update(text_update(700, "before"))
    odd = text_update(701, "chat type missing")
    del odd["message"]["chat"]["type"]
    await fake_telegram.push_update(odd)
    unreadable = text_update(702, "no chat")
    del unreadable["message"]["chat"]
    await fake_telegram.push_update(unreadable)
    last = await fake_telegram.push_update(text_update(703, "after"))
    adapter = polling_adapter(fake_telegram, redis)
    await adapter.start()
    try:
        await eventually(lambda: fake_telegram.confirmed_below == last + 1)
    finally:
        await adapter.stop()
    assert [m.text for m in sorted(await inbound(redis), key=lambda m: m.dedupe_key)] == [
        "before", "chat type missing", "after"]


# -- webhook mode ---------------------------------------------------------------------------


async def test_webhook_checks_the_secret_and_publishes_once(fake_telegram: FakeTelegram, redis: aioredis.Redis) -> None:
    port = free_port()
    ctx, _ = make_context(redis)
    ctx = dataclasses.replace(ctx, public_url=f"http://127.0.0.1:{port}")
    adapter = TelegramAdapter(make_config(fake_telegram.base_url, fake_telegram.base_file_url, TOKEN, mode="webhook",
                                          webhook_secret="Wh-secret_123"), ctx)
    app = web.Application()
    app.add_routes(adapter.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await adapter.start()
    url = f"http://127.0.0.1:{port}/telegram/webhook"
    body = json.dumps(fixture("group_text"))
    try:
        await eventually(lambda: bool(fake_telegram.webhook))
        assert fake_telegram.webhook["url"] == url and fake_telegram.webhook["secret_token"] == "Wh-secret_123"
        async with aiohttp.ClientSession() as http:
            async def post(headers: dict[str, str], data: str = body) -> int:
                async with http.post(url, data=data, headers={"Content-Type": "application/json", **headers}) as r:
                    return r.status

            assert await post({}) == 403
            assert await post({SECRET_HEADER: "Wh-secret_12"}) == 403
            assert await post({SECRET_HEADER: "wrong"}) == 403
            assert await _count(redis, 0)
            assert await post({SECRET_HEADER: "Wh-secret_123"}) == 200
            assert await post({SECRET_HEADER: "Wh-secret_123"}) == 200  # Telegram retried
            assert await post({SECRET_HEADER: "Wh-secret_123"}, data="{not json") == 400
    finally:
        await adapter.stop()
        await runner.cleanup()
    [message] = await inbound(redis)
    assert message.address == "-1001234567890" and message.text == "Где наш заказ #4411?"
    assert message.sender is not None and message.sender.name == "Иван Петров"


# -- a crash between fetching and storing ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("failpoint", ["ingest.after_fetch", "telegram.after_publish"])
async def test_sigkill_between_fetch_and_confirm_loses_and_doubles_nothing(
        fake_telegram: FakeTelegram, redis: aioredis.Redis, redis_url: str, failpoint: str) -> None:
    ids = [await fake_telegram.push_update(text_update(500 + i, f"order question {i}")) for i in range(5)]
    argv = [sys.executable, "-m", "tests.telegram_poller", redis_url, fake_telegram.base_url,
            fake_telegram.base_file_url, TOKEN]

    env = {**os.environ, "BRIDGE_FAILPOINTS": failpoint}
    first = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL)
    async with asyncio.timeout(30):
        assert await first.wait() == -signal.SIGKILL
    assert fake_telegram.served[0] == ids  # Telegram handed the batch out ...
    assert fake_telegram.confirmed_below == 0  # ... and never heard it was stored
    appended = len(await inbound(redis))
    assert appended == (0 if failpoint == "ingest.after_fetch" else 1)
    assert await RedisState(redis, "telegram").get("offset") is None

    env.pop("BRIDGE_FAILPOINTS")
    second = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL)
    try:
        await eventually(lambda: fake_telegram.confirmed_below == ids[-1] + 1, timeout_s=30)
        later = await fake_telegram.push_update(text_update(600, "after the restart"))
        await eventually(lambda: fake_telegram.confirmed_below == later + 1, timeout_s=30)
    finally:
        second.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await second.wait() == 0
    counts = Counter(m.dedupe_key for m in await inbound(redis))
    assert counts == {f"telegram:{i}": 1 for i in [*ids, later]}


async def _count(redis: aioredis.Redis, n: int) -> bool:
    return len(await inbound(redis)) == n



async def test_a_webhook_url_telegram_refuses_marks_the_adapter_broken(fake_telegram: FakeTelegram,
                                                                       redis: aioredis.Redis) -> None:
    fake_telegram.require_https_webhook = True
    health: list[tuple[str, str]] = []
    ctx, _ = make_context(redis, health=health)
    ctx = dataclasses.replace(ctx, public_url="http://localhost:8080")
    adapter = TelegramAdapter(make_config(fake_telegram.base_url, fake_telegram.base_file_url, TOKEN, mode="webhook",
                                          webhook_secret="abc"), ctx)
    await adapter.start()
    try:
        await eventually(lambda: bool(health) and health[-1][0] == "broken")
    finally:
        await adapter.stop()
    assert "http://localhost:8080/telegram/webhook" in health[-2][1] and "http.public_url" in health[-2][1]
