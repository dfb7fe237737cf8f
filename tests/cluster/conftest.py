"""The tests in this directory run on a Redis Cluster of three primaries, each with a replica, on loopback
(`tests.servers.RedisClusterServers`): most of them are other modules' end-to-end tests
again, the bridge given the cluster as ``redis+cluster://`` (any node: it finds the
others), the tests' own client a redis-py cluster client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from tests.servers import RedisClusterServers


@pytest.fixture
def redis_url(redis_cluster: RedisClusterServers) -> str:
    """The cluster, emptied: every test starts from nothing."""
    for node in redis_cluster.primaries:
        node.command("FLUSHALL")
    return redis_cluster.url.replace("redis://", "redis+cluster://")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(redis_url.replace("redis+cluster://", "redis://"))
    yield client
    await client.aclose()
