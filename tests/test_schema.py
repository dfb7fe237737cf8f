"""Data written by an older version is upgraded at start (schema 1 -> 2: a partition's
keys get its hash tag; 2 -> 3: the contacts' keys get theirs; 3 -> 4: dedupe keys become
members of a set per time span), losing, doubling and forgetting nothing; what cannot be
upgraded safely is refused, saying why."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from adapters.api.adapter import dedupe_key
from bridge import keys, schema
from bridge.bus import Bus
from bridge.errors import BridgeError
from bridge.model import Contact, Conversation, Message, address_hash, encode, encode_record, partition_of
from bridge.store import Store
from tests.harness import running_bridge
from tests.test_api_e2e import AUTH, ENV, api_config
from tests.test_cli import bridge_cli, write
from tests.webhook import WebhookReceiver

P = 8  # the default engine.partitions, as the tests' config leaves it


def legacy(kind: str, partition: int) -> str:
    """A schema-1 name, as the older version wrote it."""
    return f"bridge:{kind}:{partition}"


async def _with_messages(store: Store, address: str, count: int) -> Conversation | None:
    found = await store.for_address("api", address)
    return found if found is not None and found.messages >= count else None


def customer(address: str, text: str, message_id: str) -> Message:
    return Message(kind="customer", channel="api", address=address, text=text,
                   dedupe_key=dedupe_key(address, message_id))


async def write_first_layout(redis: aioredis.Redis) -> dict[str, Message]:
    """What an older bridge left when it stopped: a message it read but never committed (its
    process died), one nobody read yet, a dedupe mark, a timer and a dead letter."""
    await redis.hset(keys.META, "partitions", P)  # no schema field: schema 1
    read = customer("up-read", "Where is order 41?", "m1")
    unread = customer("up-unread", "Where is order 42?", "m1")
    dead = customer("up-dead", "Where is order 43?", "m1")
    for message in (read, unread):
        stream = legacy("in", partition_of(message.partition_key, P))
        await redis.xgroup_create(stream, keys.ENGINE_GROUP, id="0", mkstream=True)
        await redis.xadd(stream, {keys.PAYLOAD_FIELD: encode(message)})
        await redis.set(keys.dedupe(stream, message.dedupe_key), "1", ex=3600)
    await redis.xreadgroup(keys.ENGINE_GROUP, "old-worker", {legacy("in", partition_of(read.partition_key, P)): ">"},
                           count=1)
    await redis.zadd(legacy("timers", 3), {b"a timer's command": 4_102_444_800_000})
    # a customer who wrote before the upgrade: their conversation, its transcript and pointer
    h = address_hash("api", "up-back")
    before = Conversation(id=f"{h}-1", channel="api", address="up-back", messages=1, created_ms=1, updated_ms=1)
    await redis.set(f"bridge:conv:{before.id}", encode_record(before))
    await redis.rpush(f"bridge:transcript:{before.id}", encode(customer("up-back", "Hello?", "m0")))
    await redis.set("bridge:addr:api:up-back", before.id)
    await redis.set(f"bridge:convseq:{h}", 1)
    await redis.zadd("bridge:convs:open", {before.id: 1})
    filed = Message(kind="reply", channel="email", address="support@example.com", text="A case filed before")
    await redis.xadd("bridge:queue:default", {keys.PAYLOAD_FIELD: encode(filed)})
    await redis.xadd("bridge:dlq", {"stream": legacy("in", partition_of(dead.partition_key, P)),
                                         "group": keys.ENGINE_GROUP, "id": "1-0", "reason": "step failed",
                                         "at_ms": 1, "lane": "", "m": encode(dead)}, id="5-0")
    return {"read": read, "unread": unread, "dead": dead}


async def test_an_older_versions_data_is_upgraded_at_start_and_nothing_is_lost_or_doubled(
        redis_url: str, redis: aioredis.Redis, webhook: WebhookReceiver) -> None:
    left = await write_first_layout(redis)
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        # the message the dead process held is claimed and answered, and the unread one too
        await b.wait_for(lambda: webhook.texts_for("up-read") and webhook.texts_for("up-unread"), what="both answers")
        # their dedupe marks came along: the platform sending them again changes nothing
        again = await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "up-read", "message_id": "m1",
                                                                     "text": "Where is order 41?"})
        assert (await again.json())["duplicate"] is True
        # the dead letter names the renamed stream and keeps its id: replayed, it is answered
        (letter,) = await b.bridge.bus.dead_letters()
        dead = left["dead"]
        source = keys.inbound(partition_of(dead.partition_key, P), P)
        assert (letter["dlq_id"], letter["stream"]) == (f"{source.removeprefix('bridge:')}/5-0", source)
        assert await b.bridge.bus.replay([letter["dlq_id"]]) == 1
        await b.wait_for(lambda: webhook.texts_for("up-dead"), what="the replayed letter's answer")
        timers = await redis.zrange(keys.timers(3, P), 0, -1, withscores=True)
        assert timers == [(b"a timer's command", 4_102_444_800_000.0)]
        assert [len(webhook.texts_for(a)) for a in ("up-read", "up-unread", "up-dead")] == [1, 1, 1]
        first_case, *_ = await b.store.queued("default")
        assert first_case.text == "A case filed before"
        # the customer who wrote before is in the agents' list, and goes on in the same
        # conversation, its transcript whole
        before = f"{address_hash('api', 'up-back')}-1"
        assert before in [c.id for c in await b.store.list("open")]
        await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "up-back", "message_id": "m1",
                                                             "text": "Still waiting for order 44"})
        back = await b.wait_for(lambda: _with_messages(b.store, "up-back", 2), what="the second message kept")
        assert back.id == before
        assert [m.text for m in await b.store.transcript(back.id) if m.kind == "customer"] == [
            "Hello?", "Still waiting for order 44"]
    names = {key.decode() async for key in redis.scan_iter(match="bridge:*")}
    assert [n for n in names if n.split(":")[-1].isdigit() and n.split(":")[1] in ("in", "outbox", "timers")] == []
    families = ("conv", "transcript", "addr", "convseq", "refs", "convs", "queue")
    assert [n for n in names if n.split(":")[1] in families and not n.split(":")[2].startswith("{")] == []
    assert "bridge:dlq" not in names
    assert [n for n in names if n.startswith("bridge:seen:")] == []
    remembered = {m for n in names if n.startswith("bridge:dedupe:bridge:in:{") for m in await redis.smembers(n)}
    assert remembered == {left[k].dedupe_key.encode() for k in ("read", "unread")} | {
        dedupe_key("up-back", "m1").encode()}  # the new message's too
    assert await redis.hget(keys.META, "schema") == str(schema.SCHEMA).encode()


async def test_processes_starting_together_upgrade_once(redis: aioredis.Redis) -> None:
    left = await write_first_layout(redis)
    await asyncio.gather(*(schema.prepare(redis, P, lease_ttl_s=1) for _ in range(3)))
    stream = keys.inbound(partition_of(left["read"].partition_key, P), P)
    pending = await redis.xpending(stream, keys.ENGINE_GROUP)
    assert (pending["pending"], pending["consumers"]) == (1, [{"name": b"old-worker", "pending": 1}])
    bucket, _, _ = keys.dedupe_buckets(time.time(), keys.DEDUPE_TTL_S)
    assert await redis.sismember(keys.dedupe_set(stream, bucket), left["read"].dedupe_key)
    assert await redis.ttl(keys.dedupe_set(stream, bucket)) >= keys.DEDUPE_TTL_S  # at least as long as it had
    assert await redis.exists(schema.UPGRADING) == 0


async def test_an_older_process_still_running_stops_the_upgrade_and_nothing_moves(redis: aioredis.Redis) -> None:
    await write_first_layout(redis)
    await redis.set(keys.lease(legacy("in", 2)), "old-worker", px=60_000)
    with pytest.raises(BridgeError, match="older version holds 1 partition"):
        await schema.prepare(redis, P, lease_ttl_s=0.1)
    assert await redis.exists(legacy("timers", 3)) == 1
    assert await redis.hget(keys.META, "schema") is None


async def test_a_newer_layout_and_another_partition_count_are_refused(redis: aioredis.Redis) -> None:
    await redis.hset(keys.META, mapping={"partitions": P, "schema": schema.SCHEMA + 1})
    with pytest.raises(BridgeError, match="newer version of the bridge"):
        await schema.prepare(redis, P, lease_ttl_s=1)
    await redis.hset(keys.META, "schema", schema.SCHEMA)
    with pytest.raises(BridgeError, match=f"engine.partitions: this Redis holds data for {P} partitions"):
        await schema.prepare(redis, 4, lease_ttl_s=1)


async def test_a_new_redis_gets_this_versions_layout(redis: aioredis.Redis) -> None:
    await schema.prepare(redis, P, lease_ttl_s=1)
    assert await redis.hmget(keys.META, ["partitions", "schema"]) == [str(P).encode(), str(schema.SCHEMA).encode()]


async def test_the_cli_refuses_an_older_layout_saying_how_to_upgrade(redis_url: str, redis: aioredis.Redis,
                                                                   tmp_path: Path) -> None:
    await write_first_layout(redis)
    config = write(tmp_path / "bridge.yaml", {"redis": {"url": redis_url}})
    result = bridge_cli("status", "--config", str(config), cwd=tmp_path)
    assert result.returncode != 0
    assert f"older version of the bridge (schema 1, this version uses {schema.SCHEMA})" in result.stderr
    assert "start `bridge run` of this one once" in result.stderr
    assert await redis.exists(legacy("timers", 3)) == 1


async def test_an_older_process_still_writing_after_the_upgrade_is_named(redis: aioredis.Redis,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    await schema.prepare(redis, P, lease_ttl_s=1)
    await redis.xadd(legacy("in", 2), {keys.PAYLOAD_FIELD: encode(customer("late", "Hello?", "m1"))})
    with caplog.at_level(logging.ERROR, logger="bridge.schema"):
        await schema.prepare(redis, P, lease_ttl_s=1)
    (record,) = caplog.records
    assert "a process of an older version is still writing" in record.getMessage()
    assert record.streams == ["bridge:in:2"]  # type: ignore[attr-defined]


async def write_second_layout(redis: aioredis.Redis) -> Contact:
    """Contacts as a schema-2 bridge left them: a customer known by address and email, an
    agent's fields and a link, its history of changes, an erasure's mark and the counters."""
    await redis.hset(keys.META, mapping={"partitions": P, "schema": 2})
    known = Contact(id="c-known", name="Dana", email="dana@example.com", addresses=["api:up-dana"])
    await redis.set("bridge:contact:c-known", encode_record(known.record()))
    await redis.set("bridge:contact-addr:api:up-dana", known.id)
    await redis.set("bridge:contact-email:dana@example.com", known.id)
    await redis.hset("bridge:contact-fields:c-known", "tier", "vip")
    await redis.sadd("bridge:contact-members:c-known", "c-other")
    await redis.set("bridge:contact-person:c-other", known.id)
    await redis.lpush("bridge:contact-events:c-known", b"an agent set the tier")
    await redis.set("bridge:erased:0123456789abcdef", "1", ex=3000)
    await redis.set("bridge:contacts-rev", 7)
    await redis.set("bridge:erasures-rev", 3)
    return known


async def test_contacts_of_schema_2_keep_everything_under_their_tag(redis_url: str, redis: aioredis.Redis,
                                                                   webhook: WebhookReceiver) -> None:
    known = await write_second_layout(redis)
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        # the customer writes again: their conversation opens on the contact they had
        await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "up-dana", "message_id": "m1",
                                                             "text": "Where is order 45?"})
        opened = await b.wait_for(lambda: _with_messages(b.store, "up-dana", 1), what="the conversation")
        assert opened.contact_id == known.id
        contact = await b.store.contact(known.id)
        assert contact is not None
        assert (contact.name, contact.fields, contact.linked) == ("Dana", {"tier": "vip"}, ["c-other"])
        assert await b.store.contact_id_by_email("Dana@example.com") == known.id
        assert await b.store.contact_events([known.id]) == [b"an agent set the tier"]
    names = {key.decode() async for key in redis.scan_iter(match="bridge:*")}
    contact_families = {"contact", "contact-addr", "contact-email", "contact-fields", "contact-person",
                        "contact-members", "contact-events", "erased", "contacts-rev"}
    assert sorted(n for n in names if n.split(":")[1] in contact_families and n.split(":")[2] != "{c}") == []
    assert 2000 < await redis.ttl("bridge:erased:{c}:0123456789abcdef") <= 3000  # its expiry kept
    assert int(await redis.get(keys.CONTACTS_REV)) >= 7
    assert "bridge:erasures-rev" not in names  # read by schema-2 engines only
    assert await redis.hget(keys.META, "schema") == str(schema.SCHEMA).encode()


async def test_a_schema_2_process_still_running_stops_the_contacts_upgrade(redis: aioredis.Redis) -> None:
    await write_second_layout(redis)
    await redis.set(keys.lease(keys.inbound(5, P)), "old-worker", px=60_000)
    with pytest.raises(BridgeError, match="older version holds 1 partition"):
        await schema.prepare(redis, P, lease_ttl_s=0.1)
    assert await redis.exists("bridge:contact:c-known") == 1
    assert await redis.hget(keys.META, "schema") == b"2"


async def test_dedupe_keys_of_schema_3_are_kept_in_sets_and_still_drop_a_platforms_retry(
        redis: aioredis.Redis) -> None:
    await redis.hset(keys.META, mapping={"partitions": P, "schema": 3})
    bus = Bus(redis, partitions=P, dedupe_ttl_s=3600)
    seen = [customer(f"up-seen-{n}", "Where is my order?", "m1") for n in range(2_500)]  # more than a chunk
    async with redis.pipeline(transaction=False) as pipe:
        for message in seen:
            pipe.set(keys.dedupe(bus.inbound_stream(message), message.dedupe_key), "1", ex=600)
        await pipe.execute()
    await schema.prepare(redis, P, lease_ttl_s=1, dedupe_ttl_s=3600)
    assert [key async for key in redis.scan_iter(match="bridge:seen:*")] == []
    sets = {key.decode() async for key in redis.scan_iter(match="bridge:dedupe:*")}  # (SCAN may repeat a key)
    assert len(sets) == P
    assert min([await redis.ttl(name) for name in sets]) >= 3600  # none forgotten sooner than before
    # the platform sends them again: dropped; a new id of the same customer is stored
    again = await bus.publish_many([*seen[:50], customer("up-seen-0", "One more thing", "m2")])
    assert again == [False] * 50 + [True]
    assert await redis.hget(keys.META, "schema") == str(schema.SCHEMA).encode()


def test_a_dedupe_key_is_looked_for_as_long_as_the_ttl_whenever_it_was_added() -> None:
    """Where a key is added (`keys.dedupe_buckets`), every publish within the TTL looks,
    even from a clock `DEDUPE_SKEW_S` behind or ahead; and that set lives that long."""
    ttl = 7 * 86400
    for added in range(1_700_000_000, 1_700_000_000 + 3 * ttl, 3_607):
        bucket, _, expiry = keys.dedupe_buckets(added, ttl)
        assert expiry >= added + ttl + keys.DEDUPE_SKEW_S
        for later in (0, 1, ttl // 3, ttl // 2, ttl - 1, ttl):
            for skew in (-keys.DEDUPE_SKEW_S, 0, keys.DEDUPE_SKEW_S):
                _, looked_in, _ = keys.dedupe_buckets(added + later + skew, ttl)
                assert bucket in looked_in, (added, later, skew)
                assert len(looked_in) <= keys.DEDUPE_SPANS + 2
