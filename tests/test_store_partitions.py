"""A partition's conversations are indexed by status in its own slot; lists across
partitions read like one list: newest first for agents, oldest first for retention."""

from __future__ import annotations

import redis.asyncio as aioredis

from bridge.model import Conversation, address_hash, conversation_hash, partition_of
from bridge.store import Store
from tests.harness import commit

P = 4


def conversation(n: int, status: str) -> Conversation:
    address = f"customer-{n}"
    return Conversation(id=f"{address_hash('api', address)}-1", channel="api", address=address, status=status,
                        created_ms=n, updated_ms=1_000 + n)


async def test_lists_by_status_merge_every_partition_in_order(redis: aioredis.Redis) -> None:
    store = Store(redis, partitions=P)
    everyone = [conversation(n, "resolved" if n % 3 == 0 else "open") for n in range(24)]
    assert len({partition_of(conversation_hash(c.id), P) for c in everyone}) == P  # spread over all of them
    await commit(redis, [op for c in everyone for op in store.save_ops(c, None)])
    newest = await store.list(limit=5)
    assert [c.updated_ms for c in newest] == [1_023, 1_022, 1_021, 1_020, 1_019]
    assert [c.updated_ms for c in await store.list("resolved", limit=3)] == [1_021, 1_018, 1_015]
    open_ids = await store.ids_with_status("open")
    assert open_ids == [c.id for c in everyone if c.status == "open"]  # least recently updated first
    oldest = await store.resolved_before(cutoff_ms=1_012, limit=3)
    assert [i for i, _, _ in oldest] == [everyone[0].id, everyone[3].id, everyone[6].id]
    assert [await store.count_with_status(s) for s in ("open", "pending", "resolved")] == [16, 0, 8]


async def test_a_status_change_moves_the_conversation_between_its_partitions_lists(redis: aioredis.Redis) -> None:
    store = Store(redis, partitions=P)
    case = conversation(1, "open")
    await commit(redis, store.save_ops(case, None))
    case.status, case.updated_ms = "resolved", 5_000
    await commit(redis, store.save_ops(case, "open"))
    assert (await store.ids_with_status("open"), await store.ids_with_status("resolved")) == ([], [case.id])
