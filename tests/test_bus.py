"""The streams bus against a real Redis: dedupe, groups, reclaim, dead letters, safe trims."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from bridge import keys
from bridge.bus import Bus, CommitUncertain, LeaseLost, entry_of
from bridge.config import RedisSettings
from bridge.connection import close, connect
from bridge.cursor import GroupCursor
from bridge.errors import StoreUnavailable
from bridge.model import Message, decode, encode
from bridge.store import Saves
from bridge.transaction import fenced, packed
from tests.redis_proxy import AnswerLosingProxy, LoadingProxy, SplittingProxy


def customer(address: str, text: str, dedupe: str = "") -> Message:
    return Message(kind="customer", channel="api", address=address, text=text, dedupe_key=dedupe)


async def test_publish_is_idempotent_on_the_dedupe_key(redis: aioredis.Redis) -> None:
    bus = Bus(redis, partitions=4)
    first = customer("c1", "hello", dedupe="api:m1")
    assert await bus.publish(first) is True
    assert await bus.publish(customer("c1", "hello again", dedupe="api:m1")) is False
    assert await bus.publish_many([customer("c1", "x", "api:m2"), customer("c1", "y", "api:m2"),
                                   customer("c1", "z")]) == [True, False, True]
    entries = await bus.entries(bus.inbound_stream(first))
    assert [decode(e.payload).text for e in entries if e.payload] == ["hello", "x", "z"]


async def test_publishers_racing_with_the_same_platform_ids_store_each_once(redis_url: str) -> None:
    """Two ingest processes given the same platform retries at the same moment: each
    message is stored by one of them, the other is told it is a duplicate; a batch with
    one seen id among new ones stores the new ones."""
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    try:
        buses = [Bus(client, partitions=2) for client in clients]
        for round_ in range(40):
            batch = [customer(f"r{n % 3}", f"round {round_} message {n}", dedupe=f"api:race-{round_}-{n}")
                     for n in range(6)]
            results = await asyncio.gather(*(bus.publish_many(batch) for bus in buses))
            assert [a + b for a, b in zip(*results, strict=True)] == [1] * 6, results
        stored = [decode(e.payload).text for p in range(2) for e in await buses[0].entries(keys.inbound(p, 2))
                  if e.payload]
        assert sorted(stored) == sorted(f"round {r} message {n}" for r in range(40) for n in range(6))
        mixed = [customer("r0", "seen", "api:race-0-0"), customer("r0", "new one", "api:race-new"),
                 customer("r0", "no id")]
        assert await buses[0].publish_many(mixed) == [False, True, True]
    finally:
        for client in clients:
            await client.aclose()

async def test_one_conversation_always_lands_in_one_partition(redis: aioredis.Redis) -> None:
    bus = Bus(redis, partitions=8)
    streams = {bus.inbound_stream(customer("same-customer", str(i))) for i in range(20)}
    assert len(streams) == 1
    spread = {bus.inbound_stream(customer(f"customer-{i}", "x")) for i in range(200)}
    assert len(spread) == 8


async def test_thread_refs_route_agent_messages_to_the_conversation(redis: aioredis.Redis) -> None:
    bus = Bus(redis, partitions=8)
    first = customer("c9", "help")
    conversation_id = f"{first.partition_key}-1"
    await redis.set(keys.ref("slack:C1:1700.1"), conversation_id)
    agent = Message(kind="agent", channel="slack", ref="slack:C1:1700.1", text="on it")
    await bus.publish(agent)
    assert agent.conversation_id == conversation_id
    assert bus.inbound_stream(agent) == bus.inbound_stream(first)


async def test_entries_of_a_dead_consumer_are_reclaimed(redis: aioredis.Redis) -> None:
    bus = Bus(redis, partitions=1)
    stream = keys.inbound(0, 1)
    await bus.ensure_group(stream, "g")
    await bus.ensure_group(stream, "g")  # BUSYGROUP is ignored
    await bus.publish_many([customer("c", f"m{i}") for i in range(3)])
    taken = await bus.read([stream], "g", "dead-worker", count=10, block_ms=None)
    assert len(taken) == 3  # read, never acked: the worker died
    assert await bus.reclaim(stream, "g", "new-worker", min_idle_ms=60_000, count=10) == []  # not idle long enough
    reclaimed = await bus.reclaim(stream, "g", "new-worker", min_idle_ms=0, count=10)
    assert [e.id for e in reclaimed] == [e.id for e in taken]
    await bus.commit(bus.ack_ops(stream, "g", reclaimed))
    assert await bus.pending_count(stream, "g") == 0


async def test_our_trim_never_deletes_pending_entries_but_redis_xtrim_does(redis: aioredis.Redis) -> None:
    bus = Bus(redis, partitions=1)
    ours, theirs = "t:ours", "t:theirs"
    for stream in (ours, theirs):
        await bus.ensure_group(stream, "g")
        for i in range(10):
            await redis.xadd(stream, {"m": f"{i}"})
        read = await bus.read([stream], "g", "w", count=6, block_ms=None)
        await redis.xack(stream, "g", *[e.id for e in read[:3]])  # 0-2 acked, 3-5 pending, 6-9 undelivered

    removed = await bus.trim(ours, max_len=0)
    assert removed == 3
    left = [f[b"m"] for _, f in await redis.xrange(ours)]
    assert left == [str(i).encode() for i in range(3, 10)]
    claimed = await redis.xautoclaim(ours, "g", "w2", 0, "0-0")
    assert len(claimed[1]) == 3 and claimed[2] == []  # every pending entry still there

    await redis.xtrim(theirs, maxlen=2, approximate=False)  # plain Redis 7 trimming
    claimed = await redis.xautoclaim(theirs, "g", "w2", 0, "0-0")
    assert claimed[1] == [] and len(claimed[2]) == 3  # pending entries deleted


async def test_trim_keeps_short_streams_and_undelivered_entries(redis: aioredis.Redis) -> None:
    bus = Bus(redis, partitions=1)
    await bus.ensure_group("t:s", "a")
    await bus.ensure_group("t:s", "b")
    for i in range(5):
        await redis.xadd("t:s", {"m": f"{i}"})
    assert await bus.trim("t:s", max_len=100) == 0
    read = await bus.read(["t:s"], "a", "w", count=5, block_ms=None)
    await redis.xack("t:s", "a", *[e.id for e in read])
    assert await bus.trim("t:s", max_len=0) == 0  # group b has not read anything yet
    assert await redis.xlen("t:s") == 5


async def test_dead_letters_keep_the_reason_and_can_be_replayed(redis: aioredis.Redis) -> None:
    bus = Bus(redis, partitions=1)
    stream = keys.inbound(0, 1)
    await bus.ensure_group(stream, "g")
    await bus.publish(customer("c", "poison"))
    (entry,) = await bus.read([stream], "g", "w", count=1, block_ms=None)
    await bus.commit([*bus.dead_letter_ops(stream, "g", entry, "step failed 5 times: KeyError"),
                      *bus.ack_ops(stream, "g", [entry])])
    assert await bus.pending_count(stream, "g") == 0
    (row,) = await bus.dead_letters()
    assert row["reason"] == "step failed 5 times: KeyError" and row["stream"] == stream
    assert decode(row["payload"]).text == "poison"
    assert await bus.replay([row["dlq_id"]]) == 1
    assert await bus.dead_letters() == []
    (again,) = await bus.read([stream], "g", "w", count=1, block_ms=None)
    assert decode(again.payload or b"").text == "poison"


async def test_dead_letters_sit_beside_their_streams_and_list_together_oldest_first(redis: aioredis.Redis) -> None:
    """Each stream's dead letters are kept in its slot (Redis Cluster: a replay is one
    transaction); a list shows every stream's, oldest first, each id naming its stream."""
    bus = Bus(redis, partitions=4)
    messages = [customer(f"c{i}", f"poison {i}") for i in range(12)]
    streams = sorted({bus.inbound_stream(m) for m in messages})
    assert len(streams) > 1
    for stream in streams:
        await bus.ensure_group(stream, "g")
    for message in messages:
        await bus.publish(message)
        stream = bus.inbound_stream(message)
        (entry,) = await bus.read([stream], "g", "w", count=1, block_ms=None)
        await bus.commit([*bus.dead_letter_ops(stream, "g", entry, f"failed: {message.text}"),
                          *bus.ack_ops(stream, "g", [entry])])
        await asyncio.sleep(0.002)  # oldest first to the millisecond: ids of two streams tie within one
    rows = await bus.dead_letters()
    assert [r["reason"] for r in rows] == [f"failed: poison {i}" for i in range(12)]
    assert all(r["dlq_id"].startswith(r["stream"].removeprefix(keys.PREFIX) + "/") for r in rows)
    assert sorted(await bus.dead_letter_streams()) == [keys.dead_letters(s) for s in streams]
    assert [r["reason"] for r in await bus.dead_letters(count=2)] == ["failed: poison 0", "failed: poison 1"]
    assert await bus.replay([rows[0]["dlq_id"], rows[5]["dlq_id"]]) == 2
    for i in (0, 5):
        stream = bus.inbound_stream(messages[i])
        (back,) = await bus.read([stream], "g", "w", count=1, block_ms=None)
        assert decode(back.payload or b"").text == f"poison {i}"
    assert await bus.drop([r["dlq_id"] for r in rows[1:3]]) == 2
    assert len(await bus.dead_letters()) == 8


async def test_a_retried_commit_is_applied_once(redis: aioredis.Redis) -> None:
    """The reply of a commit can be lost after Redis ran it (a restart, a cut connection);
    the commit then runs again. The second run must change nothing."""
    once, writes = keys.commit_once("batch-1"), packed([["RPUSH", "t:list", "x"]])
    assert (await fenced(redis, [], once, writes, 1))[0] is True
    assert (await fenced(redis, [], once, writes, 1))[0] is False  # the retry
    assert await redis.lrange("t:list", 0, -1) == [b"x"]


@pytest.mark.parametrize("reached", [True, False])
async def test_a_commit_that_no_try_got_an_answer_for_says_so_and_redis_tells_if_it_ran(
        redis: aioredis.Redis, redis_url: str, reached: bool) -> None:
    """Every try's answer lost (the connection cut after the send, or before it): the
    caller cannot know whether the commit ran, and is told so (`CommitUncertain`, a
    `StoreUnavailable`), with what to ask Redis once it answers."""
    async with AnswerLosingProxy(redis_url, b"EXEC", losses=2, deliver=reached) as proxy:
        client = connect(RedisSettings(url=proxy.url), retries=1)  # two tries
        bus = Bus(client, partitions=1)
        try:
            await redis.set(keys.lease("s"), "me")
            with pytest.raises(CommitUncertain) as uncertain:
                await bus.commit([("RPUSH", "t:list", "x")], leases=[keys.lease("s")], owner="me")
            assert isinstance(uncertain.value, StoreUnavailable) and proxy.lost == 2
            assert await bus.commit_applied(uncertain.value.once) is reached
            assert await redis.lrange("t:list", 0, -1) == ([b"x"] if reached else [])  # once, for two tries
        finally:
            await close(client)


async def test_a_commit_writes_large_and_small_arguments_as_given(redis: aioredis.Redis) -> None:
    """A command ending in a large argument (an outbox entry of many turns) is framed apart
    from hiredis; Redis must read it, and the commands around it, byte for byte."""
    large = bytes(range(256)) * 200 + b"\r\n*3\r\n$4\r\n"  # 51 KB, protocol bytes inside
    writes = packed([("SET", "t:small", "x"), ("XADD", "t:stream", "MAXLEN", "~", 100, "*", "m", large),
                     ["RPUSH", "t:list", b"y" * 20_000, large], ("SET", "t:after", 7)])
    assert (await fenced(redis, [], keys.commit_once("batch-large"), writes, 4))[0] is True
    assert [fields for _, fields in await redis.xrange("t:stream")] == [{b"m": large}]
    assert await redis.lrange("t:list", 0, -1) == [b"y" * 20_000, large]
    assert await redis.mget("t:small", "t:after") == [b"x", b"7"]


async def test_a_commit_whose_lease_is_renewed_before_its_exec_runs_again_and_lands_once(
        redis: aioredis.Redis, redis_url: str) -> None:
    """A commit WATCHes and checks its lease, then writes in MULTI/EXEC, in one round trip; a
    renewal that comes between the two (PEXPIRE, as the lease keeper renews; here through a
    proxy that holds each commit's first send back at its MULTI until the renewal is done)
    makes Redis refuse the EXEC, and the commit runs again. Each lands once, in order; a
    lease taken by another worker writes nothing and says which."""
    lease = keys.lease(keys.inbound(0, 1))
    await redis.set(lease, "me", px=60_000)

    async def renew() -> None:
        await redis.pexpire(lease, 60_000)

    async with SplittingProxy(redis_url, at=b"*1\r\n$5\r\nMULTI\r\n", between=renew) as proxy:
        client = aioredis.Redis.from_url(proxy.url)
        try:
            bus = Bus(client, partitions=1)
            execs_before = await exec_calls(redis)
            for i in range(3):
                proxy.splits += 1  # this commit's first try, not its second
                await bus.commit([("RPUSH", "t:list", str(i)), ("INCR", "t:count")], leases=[lease], owner="me")
            assert proxy.splits == 0
            assert await exec_calls(redis) - execs_before == 6  # each refused once, then applied
            assert await redis.lrange("t:list", 0, -1) == [b"0", b"1", b"2"]
            assert await redis.get("t:count") == b"3"
            await redis.set(lease, "another worker")
            with pytest.raises(LeaseLost) as lost:
                await bus.commit([("RPUSH", "t:list", "late")], leases=[lease], owner="me")
            assert lost.value.lease_key == lease
            assert await redis.llen("t:list") == 3
        finally:
            await client.aclose()


async def exec_calls(redis: aioredis.Redis) -> int:
    return int((await redis.info("commandstats")).get("cmdstat_exec", {}).get("calls", 0))


async def test_a_cursor_reads_its_own_unacked_then_the_previous_owners_then_new(redis: aioredis.Redis) -> None:
    bus = Bus(redis, partitions=1)
    stream = keys.inbound(0, 1)
    await bus.ensure_group(stream, "g")
    for i in range(3):  # an entry each
        await bus.publish(customer("c", f"m{i}"))
    (old_owners,) = await bus.read([stream], "g", "dead-worker", count=1, block_ms=None)
    (ours,) = await bus.read([stream], "g", "me", count=1, block_ms=None)  # its reply was lost, say
    await bus.publish(customer("c", "m3"))
    cursor = GroupCursor(bus, "g", "me", count=10, block_ms=10, min_idle_ms=0, sleep=asyncio.sleep)
    cursor.reread()
    cursor.gained([stream])

    async def texts() -> list[str]:
        entries = await cursor.next([stream])
        if entries:
            await bus.commit(bus.ack_ops(stream, "g", entries))
        return [decode(e.payload).text for e in entries if e.payload]

    assert (await texts(), cursor.replayed) == ([decode(ours.payload or b"").text], True)
    assert (await texts(), cursor.replayed) == ([decode(old_owners.payload or b"").text], True)
    # no other consumer holds any: the take-over is done, and new entries follow at once
    assert (await texts(), cursor.replayed) == (["m2", "m3"], False)
    assert await bus.pending_count(stream, "g") == 0


async def test_stopped_lease_keepers_end_and_give_their_leases_back(redis: aioredis.Redis) -> None:
    """Shutdown never waits on a keeper that goes on renewing: stopped at any moment (often
    mid-command), each keeper ends at once and its leases are free for the next worker."""
    bus = Bus(redis, partitions=8)
    streams = [keys.inbound(p, 8) for p in range(8)]
    for i in range(60):
        leases = bus.leases(f"worker-{i}", streams, ttl_s=0.05, role="engine")
        leases.start(f"keeper-{i}")
        await asyncio.sleep(random.random() * 0.03)
        await asyncio.wait_for(leases.stop(), 2)
        assert [k for k in await redis.keys("bridge:lease:*") if await redis.get(k) == f"worker-{i}".encode()] == []
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("keeper-")] == []


async def test_a_keeper_on_a_busy_event_loop_keeps_every_lease(redis: aioredis.Redis) -> None:
    """A process whose event loop is crowded (each turn of it takes 30 ms here) keeps the
    sixteen leases it holds: they are renewed (and taken) in one round trip a tick, so a
    tick costs a few turns of the loop, not a few per lease. A lease lapsing under load
    handed a dispatcher's stream to the next owner, which sent again what had been sent
    (a Slack thread posted twice)."""
    bus = Bus(redis, partitions=16)
    streams = [keys.inbound(p, 16) for p in range(16)]
    leases = bus.leases("busy", streams, ttl_s=1.5, role="engine", fair_share=False)
    assert (await leases.tick())[0] == streams
    leases.changes()
    crowded = asyncio.Event()

    async def crowding() -> None:
        while not crowded.is_set():
            time.sleep(0.01)  # noqa: ASYNC251 (a step's CPU work, say: it holds the loop)
            await asyncio.sleep(0)

    crowd = [asyncio.create_task(crowding()) for _ in range(3)]
    leases.start("keeper-busy")
    try:
        await asyncio.sleep(5)
        held = [await redis.get(keys.lease(s)) for s in streams]
    finally:
        crowded.set()
        await asyncio.gather(*crowd)
        await leases.stop()
    assert held == [b"busy"] * 16
    assert leases.changes() == (set(), set())  # nothing lost (and so nothing taken again)


async def test_a_channel_s_outbound_streams_go_to_the_holder_of_its_own_stream_only(redis: aioredis.Redis) -> None:
    """Two dispatchers of one channel: the first to hold the channel's own stream takes
    the partitions' streams too, the other takes none (so one process paces the channel);
    once the first loses the channel's lease it gives the others back at once, and whoever
    holds the channel next takes them all."""
    bus = Bus(redis, partitions=8)
    streams = keys.outbound_streams("api", 8)
    first = bus.leases("first", streams, ttl_s=30, role="dispatch:api", fair_share=False, leader=True)
    second = bus.leases("second", streams, ttl_s=30, role="dispatch:api", fair_share=False, leader=True)
    assert await first.tick() == (streams, [])
    assert await second.tick() == ([], [])
    await redis.set(keys.lease(streams[0]), "third", px=30_000)  # the first stalled past its TTL, say
    gained, lost = await first.tick()
    assert (gained, sorted(lost)) == ([], sorted(streams))
    assert [await redis.get(keys.lease(s)) for s in streams[1:]] == [None] * 8  # given back at once
    await redis.delete(keys.lease(streams[0]))  # the third process died
    assert await second.tick() == (streams, [])


async def test_a_group_redis_lost_is_made_again_and_read_from_the_start(redis: aioredis.Redis,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A restart without data or a failover to a replica that had not got it can leave a
    stream without its consumer group: a read makes the group again (from the stream's
    start, as at a first start) instead of failing, and so does a read of pending entries.
    Each says in an error what was lost: the group alone, or the stream (Redis' data)."""
    caplog.set_level(logging.ERROR, logger="bridge.bus")
    bus = Bus(redis, partitions=1)
    stream = keys.inbound(0, 1)
    await bus.ensure_group(stream, "g")
    await bus.publish(customer("c", "before"))
    assert [decode(e.payload or b"").text for e in await bus.read([stream], "g", "me", count=10, block_ms=None)] \
        == ["before"]
    await redis.xgroup_destroy(stream, "g")
    await bus.publish(customer("c", "after"))
    assert [decode(e.payload or b"").text for e in await bus.read([stream], "g", "me", count=10, block_ms=None)] \
        == ["before", "after"]
    assert [r.getMessage() for r in caplog.records] == [
        "consumer group missing on a stream that exists: created again, its entries are read again from the start"]
    caplog.clear()
    await redis.delete(stream)  # the stream gone too: an empty one, and its group, again
    assert await bus.read([stream], "g", "me", count=10, block_ms=None, pending=True) == []
    assert [g["name"] for g in await redis.xinfo_groups(stream)] == [b"g"]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["stream missing"]


async def test_a_stream_taken_over_whose_group_redis_lost_is_read_from_the_start(redis: aioredis.Redis) -> None:
    """The same after a takeover: what the previous owner left is looked for first (its
    pending entries, claimed once idle), and a group Redis lost holds none. Made again, it
    hands out what the stream holds, instead of the claim ending the process on NOGROUP."""
    bus = Bus(redis, partitions=1)
    stream = keys.inbound(0, 1)
    await bus.ensure_group(stream, "g")
    await bus.publish(customer("c", "left by the last owner"))
    await redis.xgroup_destroy(stream, "g")
    cursor = GroupCursor(bus, "g", "me", count=10, block_ms=10, min_idle_ms=0, sleep=asyncio.sleep)
    cursor.gained([stream])
    # no one's pending entries to take over (the group is new): the stream is read from its start
    assert [decode(e.payload or b"").text for e in await cursor.next([stream])] == ["left by the last owner"]
    assert await bus.pending_count(stream, "g", besides="me") == 0


@pytest.mark.parametrize("call", ["commit", "read"])
async def test_a_redis_that_drops_every_connection_is_tried_as_often_as_by_one_command(call: str) -> None:
    """A Redis that is down is waited for as long as the client's own retry policy says,
    once: the first try and one retry, a connection each, for a command, a commit or a
    read. (A commit retried around a connect that retries itself: a refused connection
    was waited for 17.5 s instead of 2.5; and the connect's health check before the
    handshake reconnected inside its own retry: a PING opened four connections here, 36
    over 17.6 s with five retries.)"""
    accepted = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()  # before the client's hello is answered

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    client = connect(RedisSettings(url=f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}"), retries=1)
    bus = Bus(client, partitions=1)
    try:
        with pytest.raises(RedisConnectionError):
            await client.ping()
        by_one_command, accepted = accepted, 0
        with pytest.raises(StoreUnavailable):
            if call == "commit":
                await bus.commit([("SET", "k", "v")], leases=[keys.lease("s")], owner="me")
            else:
                await bus.read([keys.inbound(0, 1)], "g", "me", count=1, block_ms=None)
        assert by_one_command == 2
        assert accepted == 2
    finally:
        await close(client)
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("call", ["commit", "publish"])
async def test_a_redis_still_loading_its_data_is_waited_for(redis: aioredis.Redis, redis_url: str, call: str) -> None:
    """Redis restarting answers LOADING until its data is read back: a commit or a publish
    sent meanwhile is tried again (as redis-py tries a single command again) and lands
    once, instead of failing the batch."""
    marker = b"EXEC" if call == "commit" else b"EVALSHA"
    async with LoadingProxy(redis_url, marker, refusals=2) as proxy:
        client = connect(RedisSettings(url=proxy.url))
        bus = Bus(client, partitions=2)
        try:
            if call == "commit":
                await redis.set(keys.lease("s"), "me")
                await bus.commit([("RPUSH", "loaded", "once")], leases=[keys.lease("s")], owner="me")
                assert await redis.lrange("loaded", 0, -1) == [b"once"]
            else:
                # two partitions: their script calls go in one send
                messages = [Message(kind="customer", channel="t", address=f"a{n}", text=f"while loading {n}",
                                    dedupe_key=f"t:{n}") for n in range(8)]
                assert len({bus.inbound_stream(m) for m in messages}) == 2
                assert await bus.publish_many(messages) == [True] * 8
                streams = [await bus.entries(keys.inbound(p, 2)) for p in range(2)]
                texts = [decode(e.payload).text for entries in streams for e in entries if e.payload]
                assert sorted(texts) == sorted(m.text for m in messages)
            assert proxy.refused == 2
        finally:
            await close(client)


async def test_a_batch_entry_is_acked_once_all_its_messages_are_handled_and_none_is_handled_twice(
        redis: aioredis.Redis) -> None:
    """A publish batch is one stream entry. A commit that handles only some of its messages
    (the others wait behind a failing step) notes them; a read of the entry again gives the
    others only; the entry is acked with the last of them."""
    bus = Bus(redis, partitions=1)
    stream = keys.inbound(0, 1)
    await bus.ensure_group(stream, "g")
    assert await bus.publish_many([customer(f"c{n}", f"m{n}", f"api:{n}") for n in range(4)]) == [True] * 4
    assert await redis.xlen(stream) == 1
    first = await bus.read([stream], "g", "w", count=10, block_ms=None)
    assert [decode(e.payload or b"").text for e in first] == ["m0", "m1", "m2", "m3"]
    await bus.commit(bus.ack_ops(stream, "g", [first[0], first[2]]))
    assert await bus.pending_count(stream, "g") == 1  # the entry waits for m1 and m3
    again = await bus.read([stream], "g", "w", count=10, block_ms=None, pending=True)
    assert [decode(e.payload or b"").text for e in again] == ["m1", "m3"]
    await bus.commit(bus.ack_ops(stream, "g", again[:1]))
    (last,) = await bus.reclaim(stream, "g", "another worker", min_idle_ms=0, count=10)  # a take-over: the same
    assert decode(last.payload or b"").text == "m3"
    await bus.commit(bus.ack_ops(stream, "g", [last]))
    assert await bus.pending_count(stream, "g") == 0
    assert await redis.exists(keys.parts_done(stream)) == 0


async def test_an_erasure_keeps_the_others_messages_of_a_batch_the_engine_has_not_handled(
        redis: aioredis.Redis) -> None:
    """Scrubbing a person out of a batch entry: the messages of the others that wait for the
    engine are written again without theirs; a batch entry handled already goes whole."""
    bus = Bus(redis, partitions=1)
    stream = keys.inbound(0, 1)
    await bus.ensure_group(stream, keys.ENGINE_GROUP)
    await bus.publish_many([customer("erased-person", "handled, mine"), customer("other", "handled, theirs")])
    handled = await bus.read([stream], keys.ENGINE_GROUP, "w", count=10, block_ms=None)
    await bus.commit(bus.ack_ops(stream, keys.ENGINE_GROUP, handled))
    await bus.publish_many([customer("erased-person", "waiting, mine"), customer("other", "waiting, theirs"),
                            customer("third", "waiting too")])
    assert await bus.scrub(["erased-person"]) == 2
    left = await bus.entries(stream)
    assert [decode(e.payload or b"").text for e in left] == ["waiting, theirs", "waiting too"]
    assert b"erased-person" not in b"".join(e.payload or b"" for e in left)
    read = await bus.read([stream], keys.ENGINE_GROUP, "w", count=10, block_ms=None)
    assert [decode(e.payload or b"").text for e in read] == ["waiting, theirs", "waiting too"]


async def test_a_large_batch_is_split_into_entries_of_at_most_batch_max_messages_in_order(
        redis: aioredis.Redis) -> None:
    """2,500 messages published at once, and 2,500 replies committed at once to one outbound
    stream: three entries each (1,000, 1,000, 500), every message read back once, in order."""
    bus = Bus(redis, partitions=1)
    stream = keys.inbound(0, 1)
    texts = [f"m{n}" for n in range(2_500)]
    assert await bus.publish_many([customer("big", text, f"api:big-{text}") for text in texts]) == [True] * 2_500
    saves = Saves(1)
    outbound = keys.outbound("api", 0, 1)
    for text in texts:
        saves.send(outbound, encode(Message(kind="reply", channel="api", address="big", text=text)))
    await bus.commit(saves.ops())
    for name in (stream, outbound):
        assert [len(entry_of(name, "-", fields)) for _, fields in await redis.xrange(name)] == [1_000, 1_000, 500]
        assert [decode(e.payload or b"").text for e in await bus.entries(name)] == texts
