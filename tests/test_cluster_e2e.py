"""The API channel's end-to-end tests (tests/test_api_e2e.py) again, on a Redis Cluster of
three primaries: the bridge configured with ``redis+cluster://`` (any node; it finds the
others), every part of it (ingest, engine, dispatch, web) against the cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from tests.servers import RedisClusterServers
from tests.test_api_e2e import (  # noqa: F401 - collected here, with this module's redis_url
    test_agent_reply_reaches_the_customer_webhook,
    test_disputes_are_driven_through_the_api,
    test_one_contact_owns_addresses_linked_by_email_or_by_command,
    test_resolve_and_reopen,
    test_routine_message_is_acknowledged_and_queued,
    test_urgent_message_gets_instant_reply_and_escalation,
)


@pytest.fixture
def redis_url(redis_cluster: RedisClusterServers) -> str:
    """The cluster, emptied: every test starts from nothing."""
    for node in redis_cluster.nodes:
        node.command("FLUSHALL")
    return redis_cluster.url.replace("redis://", "redis+cluster://")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(redis_url.replace("redis+cluster://", "redis://"))
    yield client
    await client.aclose()
