"""The contract suite's fixtures: a private redis-server per test (a case may stop it) and
one running driver per adapter (tests/contract/drivers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bridge.connection import close
from tests.contract.drivers import DRIVERS, Driver, EmailDriver
from tests.servers import RedisServer, free_port


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """This test's own redis-server, which the test may stop and start again (its data
    kept in an append-only file, as a production Redis keeps it)."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", port=free_port(), aof=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    # no retries of its own: a stopped Redis fails a publish at once, as the adapters must handle
    client = aioredis.Redis.from_url(redis_server.url, socket_connect_timeout=1, socket_timeout=5)
    try:
        yield client
    finally:
        await close(client)


@pytest.fixture(params=list(DRIVERS))
async def driver(request: pytest.FixtureRequest, redis: aioredis.Redis) -> AsyncIterator[Driver]:
    cls = DRIVERS[request.param]
    made = EmailDriver(redis, request.getfixturevalue("dovecot")) if cls is EmailDriver else cls(redis)
    await made.start()
    try:
        yield made
    finally:
        await made.stop()
