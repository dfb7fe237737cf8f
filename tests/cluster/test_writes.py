"""The bridge's atomic writes on a real Redis Cluster (tests/cluster/conftest.py),
through redis-py's cluster client: publishing, an engine's fenced commit and its contact
changes, leases, and an erasure each keep to one hash slot, so the cluster runs them
(docs/cluster.md, slices 2 to 10)."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from bridge import keys
from bridge.bus import Bus, LeaseLost, StaleCache
from bridge.effects import Effects
from bridge.errors import NotReplicated
from bridge.model import Contact, Conversation, Message, address_hash, partition_of
from bridge.store import Saves, Store
from tests.servers import RedisClusterServers, RedisServer

P = 6  # two partitions per primary


def customer(address: str, text: str = "Where is my order?", dedupe: str = "") -> Message:
    return Message(kind="customer", channel="api", address=address, text=text, dedupe_key=dedupe)


async def test_a_batch_is_published_into_every_partition_once(redis: RedisCluster) -> None:
    bus = Bus(redis, partitions=P)
    batch = [customer(f"pub-{n}", dedupe=f"api:m{n}") for n in range(60)]
    assert await bus.publish_many(batch) == [True] * 60
    assert await bus.publish_many([*batch[:5], customer("pub-new", dedupe="api:new")]) == [False] * 5 + [True]
    lengths = [len(await bus.entries(keys.inbound(p, P))) for p in range(P)]
    assert sum(lengths) == 61 and all(lengths), lengths
    assert sum([await redis.xlen(keys.inbound(p, P)) for p in range(P)]) == P + 1  # a batch entry a partition
    holders = {redis.get_node_from_key(keys.inbound(p, P)).port for p in range(P)}  # type: ignore[union-attr]
    assert len(holders) == 3  # the partitions spread over the primaries


async def opened(store: Store, bus: Bus, address: str, owner: str) -> tuple[Conversation, Contact, str]:
    """What an engine commits for a new customer: the conversation, its transcript and
    reply in the partition's slot, the contact before it in the contacts' slot."""
    p = partition_of(address_hash("api", address), P)
    lease = keys.lease(keys.inbound(p, P))
    await store.redis.set(lease, owner)
    contact = Contact(id=f"contact-{address}", name="Ana", email=f"{address}@example.com",
                      addresses=[f"api:{address}"])
    conversation = Conversation(id=f"{address_hash('api', address)}-1", channel="api", address=address,
                                contact_id=contact.id, messages=1)
    message = customer(address)
    reply = Message(kind="reply", channel="api", address=address, conversation_id=conversation.id, text="Got it")
    saves = Saves(P)
    ops = store.effect_ops(Effects(conversation=conversation, previous_status=None, kept=[message, reply],
                                   outbound=[reply], contact=contact, cause=message), saves)
    await store.write_contacts(saves.contacts)
    await bus.commit(ops + saves.ops(), leases=[lease], owner=owner,
                     guards=[(keys.erasures_rev(p, P), "")])
    return conversation, contact, lease


async def test_an_engine_commit_and_its_contact_land_and_a_lost_lease_refuses_it(redis: RedisCluster) -> None:
    bus, store = Bus(redis, partitions=P), Store(redis, partitions=P)
    conversation, contact, lease = await opened(store, bus, "commit-1", "engine-1")
    found = await store.for_address("api", "commit-1")
    assert found is not None and found.contact_id == contact.id
    assert [m.text for m in await store.transcript(conversation.id)] == ["Where is my order?", "Got it"]
    assert await store.contact_id_by_email("commit-1@example.com") == contact.id
    assert (await store.contact_ids_for([("api", "commit-1")])) == [contact.id]
    assert len(await redis.xrange(keys.outbound("api", partition_of(address_hash("api", "commit-1"), P), P))) == 1
    await redis.set(lease, "engine-2")  # another engine took the partition
    with pytest.raises(LeaseLost):
        await bus.commit([("SET", keys.conversation(conversation.id, P), b"stale")], leases=[lease], owner="engine-1")
    assert (await store.get(conversation.id)) == found


async def test_an_erasure_runs_slot_by_slot_and_refuses_a_batch_read_before_it(redis: RedisCluster) -> None:
    bus, store = Bus(redis, partitions=P), Store(redis, partitions=P)
    conversation, contact, lease = await opened(store, bus, "erase-1", "engine-1")
    kept, _, _ = await opened(store, bus, "erase-2", "engine-1")
    p = partition_of(address_hash("api", "erase-1"), P)
    revs = await store.cache_revs()  # as an engine reads them with a batch
    assert await store.erase_contact(contact, [conversation.id]) >= 5
    assert await store.for_address("api", "erase-1") is None
    assert await store.get(conversation.id) is None and await store.transcript(conversation.id) == []
    assert await store.contact(contact.id, archive=False) is None
    assert await store.contact_id_by_email("erase-1@example.com") is None
    assert await store.erased([contact.id]) == {contact.id}
    assert all([await redis.exists(keys.erased_in(contact.id, q, P)) for q in range(P)])
    with pytest.raises(StaleCache):  # a batch read before the erasure writes nothing back
        await bus.commit([("SET", keys.conversation(conversation.id, P), b"back")], leases=[lease], owner="engine-1",
                         guards=[(keys.erasures_rev(p, P), str(revs[1][p]) if revs[1][p] else "")])
    assert await store.get(conversation.id) is None
    assert await store.get(kept.id) is not None  # another customer's conversation stays


async def test_leases_are_taken_renewed_and_given_back_on_their_own_slots(redis: RedisCluster) -> None:
    bus = Bus(redis, partitions=P)
    streams = [keys.inbound(p, P) for p in range(P)]
    leases = bus.leases("engine-1", streams, ttl_s=5, role="engine", fair_share=False)
    gained, lost = await leases.tick()
    assert sorted(gained) == sorted(streams) and lost == []
    assert (await leases.tick())[1] == []  # renewed, none lost
    await leases.give_back(streams)
    assert [await redis.get(keys.lease(s)) for s in streams] == [None] * P


async def test_a_write_waits_for_the_replica_of_its_own_primary(redis: RedisCluster,
                                                                redis_cluster: RedisClusterServers) -> None:
    """With ``wait_replicas`` each primary a batch wrote to WAITs on the connection it wrote
    on: a primary whose replica is stalled refuses to confirm (NotReplicated); the others
    confirm, in the same batch's round trip and alone."""
    bus = Bus(redis, partitions=P, wait_replicas=1, wait_timeout_ms=200)
    batch = [customer(f"wait-{n}", dedupe=f"api:w{n}") for n in range(30)]
    assert await bus.publish_many(batch) == [True] * 30

    def primary(message: Message) -> RedisServer:
        node = redis_cluster.primary_of(key_slot(bus.inbound_stream(message).encode()))
        assert node is not None
        return node

    stalled_primary = primary(batch[0])
    replica = redis_cluster.replicas[redis_cluster.primaries.index(stalled_primary)]
    elsewhere = next(m for m in batch if primary(m) is not stalled_primary)
    replica.freeze()
    try:
        with pytest.raises(NotReplicated, match="0 of 1 replica"):
            await bus.publish_many([customer("wait-0", text="again", dedupe="api:w0-again"), elsewhere])
        assert await bus.publish_many([customer(elsewhere.address, dedupe="api:elsewhere-2")]) == [True]
    finally:
        replica.thaw()
    # the refused write is on the primary: its retry is deduplicated, and confirmed now
    assert await bus.publish_many([customer("wait-0", text="again", dedupe="api:w0-again")]) == [False]
