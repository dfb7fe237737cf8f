"""Contract, platform -> bridge, for every adapter over its fake platform: a platform id
is stored once, an event is confirmed only once it is stored, and what a person wrote
arrives unchanged."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.contract.cases import HOSTILE, skip_unless_receives
from tests.contract.drivers import Driver
from tests.harness import wait_for
from tests.servers import RedisServer


async def texts(driver: Driver, count: int) -> list[str]:
    async def enough() -> list[str] | None:
        stored = [m.text for m in await driver.stored()]
        return stored if len(stored) >= count else None

    found: list[str] = await wait_for(enough, what=f"{count} stored messages")
    return found


async def test_a_platform_event_delivered_twice_is_stored_once(driver: Driver) -> None:
    skip_unless_receives(driver)
    await driver.deliver_twice("ev-1", "where is my order?")
    await wait_for(lambda: driver.confirmed("ev-1"), what="ev-1 confirmed")
    await driver.inject("ev-2", "it was due on Monday")  # after the double: everything before it is read
    await wait_for(lambda: driver.confirmed("ev-2"), what="ev-2 confirmed")
    assert await texts(driver, 2) == ["where is my order?", "it was due on Monday"]
    first, second = await driver.stored()
    assert first.dedupe_key and first.dedupe_key != second.dedupe_key
    assert first.channel == driver.name


async def test_an_event_is_confirmed_only_once_it_is_stored(driver: Driver, redis_server: RedisServer) -> None:
    skip_unless_receives(driver)
    redis_server.stop()  # publish fails: nothing may tell the platform the message is stored
    await driver.inject("ev-1", "the controller is dead")
    await wait_for(lambda: driver.attempted("ev-1"), what="the adapter tried to store ev-1")
    assert not await driver.confirmed("ev-1")
    redis_server.start()
    last_try = [asyncio.get_running_loop().time()]

    async def stored_and_confirmed() -> bool:
        if await driver.confirmed("ev-1"):
            return True
        now = asyncio.get_running_loop().time()
        if driver.platform_retries and now - last_try[0] > 0.5:  # the platform's own retry
            last_try[0] = now
            await driver.redeliver("ev-1", "the controller is dead")
        return False

    await wait_for(stored_and_confirmed, timeout_s=15, what="ev-1 stored and confirmed after Redis returned")
    assert await texts(driver, 1) == ["the controller is dead"]


async def test_hostile_text_arrives_unchanged(driver: Driver) -> None:
    skip_unless_receives(driver)
    limit = driver.capabilities.max_text_length
    table = [(name, text) for name, text in HOSTILE if limit is None or len(text.encode("utf-16-le")) // 2 <= limit]
    for name, text in table:
        await driver.inject(name, text)
        await wait_for(lambda n=name: driver.confirmed(n), what=f"{name} confirmed")  # type: ignore[misc]
    stored = await texts(driver, len(table))
    got = dict(zip([name for name, _ in table], stored, strict=True))
    assert got == dict(table)


PNG = b"\x89PNG\r\n\x1a\n" + b"a photo of the burnt board" * 10


async def test_a_file_arrives_with_a_link_that_serves_it(driver: Driver) -> None:
    skip_unless_receives(driver)
    if not driver.capabilities.files:
        pytest.skip(f"{driver.name} carries no files (capabilities.files)")
    await driver.inject_file("ev-file", "burnt board.png", "image/png", PNG)
    await wait_for(lambda: driver.confirmed("ev-file"), what="the file's event confirmed")
    (message,) = await driver.stored()
    (attachment,) = message.attachments
    assert (attachment.name, attachment.mime) == ("burnt board.png", "image/png")
    async with aiohttp.ClientSession() as http, http.get(attachment.url) as response:
        assert response.status == 200
        assert await response.read() == PNG
