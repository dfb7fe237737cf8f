"""A Redis Cluster changing under load: a primary killed (its replica takes over) and a
primary's slots resharded to another, while customers and agents write through the HTTP
API channel. Nothing acknowledged is lost, nothing is doubled, each conversation keeps its
order.

Each test starts a cluster of its own (these tests break it), and the bridge as a real
process given the cluster as ``redis+cluster://``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from bridge import keys
from bridge.model import partition_of
from tests.harness import merged, wait_for
from tests.load import ConversationLoad, tally_under
from tests.proc import BridgeProcess
from tests.servers import RedisClusterServers, RedisServer
from tests.test_api_e2e import ENV, api_config
from tests.test_resilience import log_events, recoveries
from tests.webhook import WebhookReceiver

pytestmark = pytest.mark.slow

PARTITIONS = 8  # the engine's default
PACE_S = 0.2  # each side of a conversation writes ~5 messages a second: its whole transcript stays in the API's view


def bridge_on(cluster: RedisClusterServers, tmp_path: Path, webhook: WebhookReceiver,
              redis: dict[str, Any]) -> BridgeProcess:
    config = merged(api_config(webhook.url), {
        "redis": {"url": cluster.url.replace("redis://", "redis+cluster://"), **redis},
        "engine": {"partitions": PARTITIONS},
        "log": {"format": "json", "level": "WARNING"}})
    return BridgeProcess(tmp_path, "", config, env=ENV)


def partition_slot(partition: int) -> int:
    return key_slot(keys.inbound(partition, PARTITIONS).encode())


def holder(cluster: RedisClusterServers, conversation_id: str) -> RedisServer:
    """The primary that holds the conversation's partition."""
    slot = partition_slot(partition_of(conversation_id, PARTITIONS))
    node = cluster.primary_of(slot)
    assert node is not None, f"no node agreed on as slot {slot}'s primary"
    return node


async def test_a_primary_killed_under_load_loses_nothing_acknowledged(tmp_path: Path,
                                                                     webhook: WebhookReceiver) -> None:
    """``redis.wait_replicas: 1``: a write is confirmed once its primary's replica has it,
    so the replica that takes over holds everything the bridge said it stored."""
    cluster = RedisClusterServers(tmp_path / "cluster")
    await asyncio.to_thread(cluster.start)
    bridge = bridge_on(cluster, tmp_path, webhook, {"wait_replicas": 1, "wait_timeout_ms": 500,
                                                    "publish_timeout_s": 2.0})
    load = ConversationLoad(bridge.url, webhook, customers=12, prefix="failover", pace_s=PACE_S)
    killed: list[RedisServer] = []
    promoted: list[RedisServer] = []

    async def kill_a_primary() -> None:
        await wait_for(lambda: load.sent >= 30, 20, "messages flowing")
        # the primary of the first customer's conversation: the failover is on its way
        slot = partition_slot(partition_of(load.conversations[load.customers[0]], PARTITIONS))
        victim = holder(cluster, load.conversations[load.customers[0]])
        killed.append(victim)
        await asyncio.to_thread(victim.kill)

        async def taken_over() -> RedisServer | None:
            node = await asyncio.to_thread(cluster.primary_of, slot)
            return node if node is not None and node is not victim else None

        promoted.append(await wait_for(taken_over, 30, "the dead primary's replica to take over"))
        # the dead host's replacement joins the new primary: writes can wait for a replica again
        await asyncio.to_thread(cluster.add_replica, promoted[0])

    try:
        tally, stopped = await tally_under(bridge, load, kill_a_primary)
    finally:
        await asyncio.to_thread(cluster.stop)
    assert not tally, tally.summary()  # lost, doubled, out of order: all empty
    assert stopped == 0, bridge.log()
    assert promoted[0] in cluster.replicas[:3], "a replica of the dead primary took its slots"
    events = log_events(tmp_path / "bridge.log")
    ran = recoveries(events)
    assert {"api: 503", "engine: retried"} & ran, ran  # the outage was seen, and ridden out
    assert [e["msg"] for e in events if e["level"] == "error"] == []  # a failover is no error of the bridge's


async def test_slots_resharded_under_load_lose_nothing(tmp_path: Path, webhook: WebhookReceiver) -> None:
    """The slots of the partitions one primary holds move to another primary, key by key
    (`RedisClusterServers.migrate`, as ``redis-cli --cluster reshard`` moves them), while
    the bridge writes to them: ASK and TRYAGAIN while a slot moves, MOVED after."""
    cluster = RedisClusterServers(tmp_path / "cluster", replicas=0)
    await asyncio.to_thread(cluster.start)
    bridge = bridge_on(cluster, tmp_path, webhook, {})
    load = ConversationLoad(bridge.url, webhook, customers=12, prefix="reshard", pace_s=PACE_S)
    moved: list[int] = []

    async def reshard() -> None:
        await wait_for(lambda: load.sent >= 30, 20, "messages flowing")
        conversation = load.conversations[load.customers[0]]
        source = holder(cluster, conversation)
        target = next(node for node in cluster.primaries if node is not source)
        slots = sorted({slot for slot in (partition_slot(p) for p in range(PARTITIONS))
                        if cluster.primary_of(slot) is source})
        for slot in slots:
            moved.append(await asyncio.to_thread(cluster.migrate, slot, source, target))
        assert await asyncio.to_thread(holder, cluster, conversation) is target

    try:
        tally, stopped = await tally_under(bridge, load, reshard)
    finally:
        await asyncio.to_thread(cluster.stop)
    assert not tally, tally.summary()
    assert stopped == 0, bridge.log()
    assert min(moved) > 0, moved  # each moved slot held the partition's keys
