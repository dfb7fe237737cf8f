"""Redis' failures reach the bridge as its own errors: `StoreUnavailable` (try again) and
`StorageFull` (refuse, lose nothing), from the bus, the store and adapters' state alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bridge import keys
from bridge.bus import Bus
from bridge.connection import close
from bridge.context import RedisState
from bridge.errors import BridgeError, StorageFull, StoreUnavailable
from bridge.model import Message
from bridge.store import Store
from tests.harness import wait_for
from tests.servers import RedisServer, free_port


def _client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)


async def test_a_stopped_redis_is_store_unavailable_everywhere(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, port=free_port(), aof=True)
    server.start()
    client = _client(server.url)
    bus, store = Bus(client, partitions=4), Store(client, partitions=4)
    message = Message(kind="customer", channel="api", address="c1", text="hello", dedupe_key="k1")
    assert await bus.publish(message) is True
    server.stop()
    try:
        for call in (lambda: bus.publish(message), lambda: bus.commit([["SET", "x", "1"]]),
                     lambda: store.get("abc-1"), lambda: RedisState(client, "api").get("offset")):
            with pytest.raises(StoreUnavailable) as caught:
                await call()
            assert isinstance(caught.value, BridgeError) and "Redis unavailable" in str(caught.value)
        server.start()  # back: the same objects work again, and the first publish was kept
        assert await bus.publish(message) is False
    finally:
        await close(client)
        server.stop()


async def test_a_full_redis_refuses_with_storage_full(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, port=free_port())
    server.start()
    client = _client(server.url)
    try:
        await client.set("ballast", b"x" * 2_000_000)
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", "1mb")  # below what is held: further writes are refused
        bus = Bus(client, partitions=4)
        message = Message(kind="customer", channel="api", address="c", text="hi", dedupe_key="api:m-1")
        with pytest.raises(StorageFull):
            await bus.publish(message)
        with pytest.raises(StorageFull):
            await RedisState(client, "api").set("offset", "1")
        with pytest.raises(StorageFull):  # a commit is refused whole: none of its writes is kept
            await bus.commit([("RPUSH", "t:list", "a"), ("SET", "t:key", "b")])
        await client.config_set("maxmemory", "0")  # room again: the platform's retry is stored, once
        assert await client.exists("t:list", "t:key") == 0
        assert not [key async for key in client.scan_iter(match=keys.commit_once("*"))]  # nor its once-mark
        assert await bus.publish(message) is True
        assert await bus.publish(message) is False
        assert await client.xlen(bus.inbound_stream(message)) == 1
    finally:
        await close(client)
        server.stop()


async def test_a_replica_cut_off_from_its_primary_is_store_unavailable(tmp_path: Path) -> None:
    """A client still on a server that became a replica in a failover, while its link to the
    new primary is down, gets MASTERDOWN (with replica-serve-stale-data no): Redis is
    unavailable for now, as with READONLY, not a failure of the bridge."""
    primary = RedisServer(tmp_path / "primary", free_port())
    primary.start()
    replica = RedisServer(tmp_path / "replica", free_port(), replica_of=primary.port)
    replica.start()
    client = _client(replica.url)
    try:
        await client.config_set("replica-serve-stale-data", "no")
        primary.stop()
        await wait_for(lambda: _link_down(client), 10, "the replica to lose its primary")
        for call in (lambda: Store(client, partitions=4).get("abc-1"), lambda: RedisState(client, "api").get("offset")):
            with pytest.raises(StoreUnavailable) as caught:
                await call()
            assert "Redis unavailable" in str(caught.value)
    finally:
        await close(client)
        replica.stop()
        primary.stop()


async def _link_down(client: aioredis.Redis) -> bool:
    return (await client.info("replication")).get("master_link_status") == "down"
