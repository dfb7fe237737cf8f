"""Contract, bridge -> platform, for every adapter over its fake platform: hostile text
shown as written, long text split at the platform's limit in order, platform answers
mapped to the same errors, files delivered, health reported."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bridge import keys
from bridge.adapter import HealthState
from bridge.dispatcher import ChannelDispatcher
from bridge.errors import PermanentError, TransientError
from bridge.model import Attachment, Message, decode, encode, now_ms
from tests.contract.cases import HOSTILE, pieces_of
from tests.contract.drivers import Driver
from tests.harness import wait_for


def units(text: str, driver: Driver) -> int:
    """A text's length in the platform's units (Telegram counts UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2 if driver.name == "telegram" else len(text)


async def test_hostile_text_is_shown_as_written(driver: Driver) -> None:
    if driver.name == "null":
        pytest.skip("the null channel shows nothing")
    await driver.before_send()
    problems = {}
    for name, text in HOSTILE:
        mark = driver.mark()
        await driver.adapter.send(driver.outbound(text))
        got = await driver.received(mark)
        problem = pieces_of(text, got.parts)
        if problem or got.markup:
            problems[name] = "; ".join(filter(None, [problem, *got.markup]))
    assert problems == {}


async def test_long_text_is_split_at_the_platforms_limit_in_order(driver: Driver) -> None:
    limit = driver.capabilities.max_text_length
    if limit is None:
        pytest.skip(f"{driver.name} declares no text length limit (capabilities.max_text_length)")
    await driver.before_send()
    text = "\n\n".join(" ".join(f"p{p}w{i}🙂" for i in range(limit // 8)) for p in range(7))
    mark = driver.mark()
    await driver.adapter.send(driver.outbound(text))
    parts = (await driver.received(mark)).parts
    assert len(parts) > 1
    assert all(units(part, driver) <= limit for part in parts)
    assert pieces_of(text, parts) == ""


async def test_a_redelivery_of_a_message_sent_whole_is_not_sent_again(driver: Driver) -> None:
    """The bridge stopped, or lost the stream to another process, between a send and its
    record: the redelivered message reaches the platform no second time, and its send
    answers as the first did (a Slack thread's ref, so the bridge still learns it)."""
    if driver.sends_again:
        pytest.skip(driver.sends_again)
    await driver.before_send()
    message = driver.outbound("your parcel left the warehouse")
    mark = driver.mark()
    first = await driver.adapter.send(message)
    assert await driver.adapter.send(message) == first
    assert (await driver.received(mark)).parts == ["your parcel left the warehouse"]


@pytest.mark.parametrize("failure", ["rate_limited", "server_error", "permanent", "gone"])
async def test_platform_answers_map_to_the_same_errors(driver: Driver, failure: str) -> None:
    """429: retry after what the platform said; 5xx: retry; a refusal: dead letter; a
    recipient gone for good: dead letter, and the conversation marked unreachable."""
    if driver.no_platform_errors:
        pytest.skip(driver.no_platform_errors)
    if failure == "gone" and driver.no_gone:
        pytest.skip(driver.no_gone)
    await driver.before_send()
    driver.fail_next(failure, retry_after_s=7)  # type: ignore[arg-type]
    mark = driver.mark()
    with pytest.raises((TransientError, PermanentError)) as raised:
        await driver.adapter.send(driver.outbound("your parcel left the warehouse"))
    error = raised.value
    if failure in ("permanent", "gone"):
        assert isinstance(error, PermanentError), f"{driver.permanent_example}: {error!r}"
        assert error.unreachable == (failure == "gone"), repr(error)
    else:
        assert isinstance(error, TransientError), repr(error)
        if failure == "rate_limited" and driver.retry_after_given:
            assert error.retry_after_s == 7
    assert (await driver.received(mark)).parts == []
    driver.recover()
    await driver.adapter.send(driver.outbound("your parcel left the warehouse"))  # the platform is back
    assert (await driver.received(mark)).parts == ["your parcel left the warehouse"]


PDF = b"%PDF-1.4 contract test file\n%%EOF\n"


@pytest.fixture
async def file_url() -> AsyncIterator[str]:
    """A file on a web server, as the bridge's signed file links serve them."""
    async def serve(_: web.Request) -> web.Response:
        return web.Response(body=PDF, content_type="application/pdf")

    app = web.Application()
    app.router.add_get("/files/invoice.pdf", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = (getattr(site._server, "sockets", None) or [])[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/files/invoice.pdf"
    await runner.cleanup()


async def test_a_file_reaches_the_platform(driver: Driver, file_url: str) -> None:
    if not driver.capabilities.files:
        pytest.skip(f"{driver.name} carries no files (capabilities.files)")
    await driver.before_send()
    attachment = Attachment(name="invoice 1042.pdf", mime="application/pdf", size=len(PDF), url=file_url)
    mark = driver.mark()
    await driver.adapter.send(driver.outbound("your invoice", [attachment]))
    files = (await driver.received(mark)).files
    assert [name for name, _ in files] == ["invoice 1042.pdf"]
    content = files[0][1]
    if isinstance(content, str):  # the platform shows a link: it must serve the file
        async with aiohttp.ClientSession() as http, http.get(content) as response:
            content = await response.read()
    assert content == PDF


async def test_health_is_reported_and_checked(driver: Driver) -> None:
    state, detail = await driver.adapter.check()
    assert state == "ok", detail


async def test_a_refused_credential_shows_as_broken(driver: Driver) -> None:
    if driver.no_credentials:
        pytest.skip(driver.no_credentials)
    state, detail = await driver.refused().check()
    assert state == "broken", detail
    assert f"channels.{driver.name}." in detail  # names the setting to fix


async def dispatched(driver: Driver, *messages: Message) -> tuple[ChannelDispatcher, asyncio.Task[None]]:
    """The channel's dispatcher, running, with ``messages`` in its own outbound stream."""
    for message in messages:
        await driver.redis.xadd(keys.channel_stream(driver.name), {keys.PAYLOAD_FIELD: encode(message)})

    async def report(state: HealthState, detail: str) -> None:
        driver.health.append((state, detail))

    dispatcher = ChannelDispatcher(bus=driver.bus, adapter=driver.adapter, worker_id="contract", lease_ttl_s=2.0,
                                   block_ms=100, batch_size=10, claim_min_idle_s=1.0, report_health=report)
    return dispatcher, asyncio.create_task(dispatcher.run())


async def test_through_the_dispatcher_a_429_waits_and_a_refusal_is_dead_lettered(driver: Driver) -> None:
    """The dispatcher's policy, the same for every channel: a rate-limited send is sent
    once the platform allows it; a refused one goes to the dead letters with the reason."""
    if driver.no_platform_errors:
        pytest.skip(driver.no_platform_errors)
    await driver.before_send()
    mark = driver.mark()
    driver.fail_next("rate_limited", retry_after_s=2)
    before_ms = now_ms()
    dispatcher, running = await dispatched(driver, driver.outbound("your parcel left the warehouse"))
    try:
        retry_due = keys.retry_due(keys.channel_stream(driver.name))
        ((_, due_ms),) = await wait_for(lambda: driver.redis.zrange(retry_due, 0, -1, withscores=True),
                                        what="the retry scheduled")
        if driver.retry_after_given:  # the platform's Retry-After, not the dispatcher's own backoff
            assert due_ms >= before_ms + 2000
        await wait_for(lambda: driver.mark() > mark, what="the rate-limited message sent after its wait")
        assert (await driver.received(mark)).parts == ["your parcel left the warehouse"]
        driver.fail_next("permanent")
        refused = driver.outbound("this one the platform refuses")
        await driver.redis.xadd(keys.channel_stream(driver.name), {keys.PAYLOAD_FIELD: encode(refused)})
        (letter,) = await wait_for(driver.bus.dead_letters, what="the refused message dead-lettered")
        assert decode(letter["payload"]).id == refused.id and letter["reason"]
        assert (await driver.received(mark)).parts == ["your parcel left the warehouse"]
    finally:
        dispatcher.stop()
        await running
        driver.recover()
