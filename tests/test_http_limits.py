"""The HTTP server against slow clients and connection floods: a real bridge, raw sockets as
the attacker, aiohttp and the widget's WebSocket as the customers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.harness import RunningBridge, running_bridge, wait_for
from tests.timing import scaled
from tests.widget_client import Tab

ENV = {"T_WIDGET_SECRET": "widget-test-secret-0123456789", "T_CONSOLE_TOKEN": "console-token-xyz"}


def config(**http: Any) -> dict[str, Any]:
    widget = {"secret": "${T_WIDGET_SECRET}", "console": {"token": "${T_CONSOLE_TOKEN}"}}
    return {"http": http, "agents": {"channels": ["widget"]}, "channels": {"widget": widget}}


class Attacker:
    """One raw TCP connection to the bridge that writes what it is told, as slowly as it likes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, b: RunningBridge) -> Attacker:
        reader, writer = await asyncio.open_connection("127.0.0.1", b.bridge.port)
        return cls(reader, writer)

    async def trickle(self, data: bytes, every_s: float = 0.1) -> None:
        """Send ``data`` a byte at a time (the attack's pace), until the server hangs up."""
        with contextlib.suppress(ConnectionError):
            for i in range(len(data)):
                self.writer.write(data[i:i + 1])
                await self.writer.drain()
                await asyncio.sleep(every_s)

    async def everything_until_closed(self) -> bytes:
        """All the server sends until it closes the connection (a reset counts as closed)."""
        chunks = []
        with contextlib.suppress(ConnectionError):
            while chunk := await asyncio.wait_for(self.reader.read(65536), scaled(15)):
                chunks.append(chunk)
        return b"".join(chunks)

    async def get(self, path: str) -> bytes:
        """One complete keep-alive request; the whole response."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bridge\r\n\r\n".encode())
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), scaled(15))
        length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                      if line.startswith(b"content-length:"))
        return head + await asyncio.wait_for(self.reader.readexactly(length), scaled(15))

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def attackers() -> AsyncIterator[list[Attacker]]:
    opened: list[Attacker] = []
    yield opened
    for attacker in opened:
        attacker.close()


async def metric(b: RunningBridge, line_start: str) -> float:
    text = await (await b.http.get(b.url + "/metrics")).text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


async def served(b: RunningBridge) -> bool:
    """Whether a fresh connection gets an answer from /healthz."""
    try:
        async with aiohttp.ClientSession() as session, session.get(b.url + "/healthz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def test_a_client_slow_with_its_headers_is_cut_off_while_others_are_served(
        redis_url: str, attackers: list[Attacker]) -> None:
    async with running_bridge(redis_url, config(header_timeout_s=0.5), env=ENV) as b:
        attacker = await Attacker.connect(b)
        attackers.append(attacker)
        sending = asyncio.create_task(attacker.trickle(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n" + b"X" * 200))
        assert (await b.get("/healthz")).status == 200  # served while the attacker dribbles

        answer = await attacker.everything_until_closed()
        sending.cancel()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert await metric(b, 'bridge_http_timeouts_total{phase="header"}') >= 1
        assert (await b.get("/healthz")).status == 200


async def test_a_connection_that_never_sends_a_request_is_closed(redis_url: str,
                                                                 attackers: list[Attacker]) -> None:
    async with running_bridge(redis_url, config(header_timeout_s=0.5), env=ENV) as b:
        attacker = await Attacker.connect(b)
        attackers.append(attacker)
        assert (await attacker.everything_until_closed()).startswith(b"HTTP/1.1 408 ")


async def test_a_body_sent_too_slowly_gets_408(redis_url: str, attackers: list[Attacker]) -> None:
    async with running_bridge(redis_url, config(body_timeout_s=0.5, body_min_rate_bytes_s=1000), env=ENV) as b:
        attacker = await Attacker.connect(b)
        attackers.append(attacker)
        attacker.writer.write(b"POST /agent/login HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
                              b"Content-Length: 1000\r\n\r\n")
        sending = asyncio.create_task(attacker.trickle(b"{" + b" " * 998 + b"}"))
        answer = await attacker.everything_until_closed()
        sending.cancel()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert answer.endswith(b"request body not received in time\n")
        assert await metric(b, 'bridge_http_timeouts_total{phase="body"}') >= 1


async def test_a_slow_body_that_keeps_the_minimum_pace_is_read(redis_url: str, attackers: list[Attacker]) -> None:
    async with running_bridge(redis_url, config(body_timeout_s=1.0, body_min_rate_bytes_s=100), env=ENV) as b:
        client = await Attacker.connect(b)
        attackers.append(client)
        body = b'{"token": "wrong"' + b" " * 982 + b"}"
        client.writer.write(b"POST /agent/login HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 1000\r\nConnection: close\r\n\r\n")
        for i in range(0, len(body), 100):  # 500 bytes/s for 2 s: longer than body_timeout_s, above the pace
            client.writer.write(body[i:i + 100])
            await asyncio.sleep(0.2)
        assert (await client.everything_until_closed()).startswith(b"HTTP/1.1 401 ")


async def test_connections_over_the_per_address_cap_are_closed_at_once(
        redis_url: str, attackers: list[Attacker], caplog: pytest.LogCaptureFixture) -> None:
    async with running_bridge(redis_url, config(max_connections_per_ip=5), env=ENV) as b:
        for _ in range(5):
            attacker = await Attacker.connect(b)
            attackers.append(attacker)
            assert (await attacker.get("/healthz")).startswith(b"HTTP/1.1 200 ")  # served, then kept open

        for _ in range(2):
            excess = await Attacker.connect(b)
            attackers.append(excess)
            excess.writer.write(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
            assert await excess.everything_until_closed() == b""  # closed unanswered
        for attacker in attackers[:5]:  # the first five are still served
            assert (await attacker.get("/healthz")).startswith(b"HTTP/1.1 200 ")

        for attacker in attackers:
            attacker.close()
        await wait_for(lambda: served(b), what="a normal request served once the attackers left")
        assert await metric(b, 'bridge_http_connections_rejected_total{limit="per_ip"}') >= 2
        warnings = [r.getMessage() for r in caplog.records if r.name == "bridge.http"]
        assert warnings == ["127.0.0.1 holds http.max_connections_per_ip (5) connections; refusing more from it "
                            "(logged once a minute)"]


async def test_connections_over_the_total_cap_are_closed_at_once(redis_url: str,
                                                                  attackers: list[Attacker]) -> None:
    async with running_bridge(redis_url, config(max_connections=3, max_connections_per_ip=0), env=ENV) as b:
        for _ in range(3):
            attacker = await Attacker.connect(b)
            attackers.append(attacker)
            assert (await attacker.get("/healthz")).startswith(b"HTTP/1.1 200 ")
        excess = await Attacker.connect(b)
        attackers.append(excess)
        assert await excess.everything_until_closed() == b""
        for attacker in attackers:
            attacker.close()
        await wait_for(lambda: served(b), what="a request served once the connections were freed")
        assert await metric(b, 'bridge_http_connections_rejected_total{limit="total"}') >= 1


async def test_a_widget_socket_outlives_every_http_deadline(redis_url: str, attackers: list[Attacker]) -> None:
    short = {"header_timeout_s": 0.5, "body_timeout_s": 0.5, "keepalive_timeout_s": 0.5}
    async with running_bridge(redis_url, config(**short), env=ENV) as b:
        tab = await Tab.connect(b.url, hello={"language": "en-US"})
        try:
            await tab.welcome()
            # a silent client opened after the socket is cut (by whichever deadline comes first):
            # by then the socket is older than every deadline
            attacker = await Attacker.connect(b)
            attackers.append(attacker)
            await attacker.everything_until_closed()

            await tab.say("c1", "Where is my order 1234?")
            await wait_for(lambda: any(f["type"] == "ack" for f in tab.frames), what="the ack on the old socket")
            assert tab.close_code is None and not tab.ws.closed
        finally:
            await tab.close()
