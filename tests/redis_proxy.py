"""TCP proxies to a real Redis that lose, hold back or rewrite what passes, for the
recovery paths: a reply that never comes, a send cut in two, a Redis still loading."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Self
from urllib.parse import urlparse

import hiredis


class RedisProxy:
    """A TCP proxy to Redis on a port of its own (``url``) while entered. What the client
    sends goes through `_from_client` (passed on unless a subclass says otherwise); what
    Redis answers is passed on, and shown to `_from_server`."""

    def __init__(self, redis_url: str) -> None:
        target = urlparse(redis_url)
        self.target = (target.hostname or "127.0.0.1", target.port or 6379)
        self.db = target.path
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}{self.db}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)

        async def to_server() -> None:
            while data := await client_r.read(1 << 20):
                await self._from_client(data, client_w, server_w)
                await server_w.drain()
            server_w.close()

        async def to_client() -> None:
            while data := await server_r.read(65536):
                self._pass_back(data, client_w)
                self._from_server(data)
            client_w.close()

        tasks = {asyncio.create_task(to_server()), asyncio.create_task(to_client())}
        self._tasks |= tasks
        await asyncio.gather(*tasks, return_exceptions=True)
        server_w.close()
        client_w.close()

    async def _from_client(self, data: bytes, client_w: asyncio.StreamWriter, server_w: asyncio.StreamWriter) -> None:
        server_w.write(data)

    def _pass_back(self, data: bytes, client_w: asyncio.StreamWriter) -> None:
        client_w.write(data)

    def _from_server(self, data: bytes) -> None:
        pass


class AnswerLosingProxy(RedisProxy):
    """Passes the first ``losses`` sends holding ``marker`` on to Redis, then cuts the
    client's connection instead of passing Redis' answer back: the client cannot tell
    whether they ran (they did). With ``deliver=False`` they never reach Redis."""

    def __init__(self, redis_url: str, marker: bytes, losses: int, *, deliver: bool = True) -> None:
        super().__init__(redis_url)
        self.marker, self.losses, self.deliver = marker, losses, deliver
        self.lost = 0
        self._cut: set[asyncio.StreamWriter] = set()

    async def _from_client(self, data: bytes, client_w: asyncio.StreamWriter, server_w: asyncio.StreamWriter) -> None:
        if self.lost >= self.losses or self.marker not in data:
            server_w.write(data)
            return
        self.lost += 1
        self._cut.add(client_w)
        if self.deliver:
            server_w.write(data)  # its answer is cut off (`_pass_back`)
        else:
            client_w.close()

    def _pass_back(self, data: bytes, client_w: asyncio.StreamWriter) -> None:
        if client_w in self._cut:
            client_w.close()
            return
        client_w.write(data)


class SplittingProxy(RedisProxy):
    """A TCP proxy to Redis that, ``splits`` times, holds a client's bytes back just after
    ``at``: once Redis has answered what came before (ending in the +OK of a MULTI), it runs
    ``between`` (another client's command), then lets the rest go. (One client connection
    at a time: a commit's.)"""

    def __init__(self, redis_url: str, at: bytes, between: Callable[[], Awaitable[None]]) -> None:
        super().__init__(redis_url)
        self.at, self.between = at, between
        self.splits = 0
        self._answered = bytearray()
        self._answer = asyncio.Event()

    async def _from_client(self, data: bytes, client_w: asyncio.StreamWriter, server_w: asyncio.StreamWriter) -> None:
        if self.splits and self.at in data:
            self.splits -= 1
            cut = data.index(self.at) + len(self.at)
            self._answered.clear()
            self._answer.clear()
            server_w.write(data[:cut])
            await asyncio.wait_for(self._answer.wait(), 10)  # Redis ran what came before
            await self.between()
            data = data[cut:]
        server_w.write(data)

    def _from_server(self, data: bytes) -> None:
        self._answered.extend(data)
        if self._answered.endswith(b"+OK\r\n+OK\r\n") or self._answered.endswith(b":0\r\n+OK\r\n"):
            self._answer.set()


class LoadingProxy(RedisProxy):
    """A TCP proxy to Redis that answers the first ``refusals`` sends holding ``marker`` as
    a restarting Redis does while it reads its data back: every command refused with
    LOADING, none run."""

    def __init__(self, redis_url: str, marker: bytes, refusals: int) -> None:
        super().__init__(redis_url)
        self.marker, self.refusals, self.refused = marker, refusals, 0

    async def _from_client(self, data: bytes, client_w: asyncio.StreamWriter, server_w: asyncio.StreamWriter) -> None:
        if self.refused >= self.refusals or self.marker not in data:
            server_w.write(data)
            return
        self.refused += 1
        reader, commands = hiredis.Reader(), 0
        reader.feed(data)
        while reader.gets() is not False:
            commands += 1
        client_w.write(b"-LOADING Redis is loading the dataset in memory\r\n" * commands)
