"""Shared fixtures: a real redis-server per test session, flushed per test.

When REDIS_URL is set the tests use that server (and flush its db 15); otherwise a
private redis-server is started on a free port in a temp directory.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis as sync_redis
import redis.asyncio as aioredis

from bridge.connection import close
from tests.fakes.telegram_api import FakeTelegram
from tests.mailservers import Dovecot
from tests.pgserver import PostgresServer, find_binaries
from tests.servers import RedisClusterServers, RedisServer, free_port
from tests.webhook import WEBHOOK_SECRET, WebhookReceiver


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | None]:
    if os.environ.get("REDIS_URL"):
        yield None
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"), port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A Redis Cluster of three primaries, each with a replica (tests/cluster/)."""
    # (a node stalled for node_timeout_ms by a busy machine would be failed over: not here)
    servers = RedisClusterServers(tmp_path_factory.mktemp("cluster"), node_timeout_ms=5000)
    servers.start()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer | None) -> str:
    """The test Redis, flushed: every test starts from an empty database."""
    if redis_server is None:
        base = os.environ["REDIS_URL"].rstrip("/")
        url = base.rsplit("/", 1)[0] + "/15" if base.count("/") > 2 else base + "/15"
    else:
        url = redis_server.url
    client = sync_redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await close(client)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookReceiver]:
    """A customer system's webhook: checks signatures, records replies."""
    receiver = WebhookReceiver(WEBHOOK_SECRET)
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    """A fake Telegram Bot API on loopback, driven through python-telegram-bot."""
    server = FakeTelegram()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A private Dovecot IMAP server on loopback (Debian's dovecot-imapd)."""
    server = Dovecot(free_port())
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL on a Unix socket in a temp dir (skipped, saying why, without one)."""
    binaries = find_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin; "
                    "apt-get install -y postgresql")
    server = PostgresServer(binaries)
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
async def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the test PostgreSQL server."""
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(host=str(postgres_server.dir), port=postgres_server.port, user="bridge",
                                       database="postgres")
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return postgres_server.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The SQL history's URL, once an SQLite file, once a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))
