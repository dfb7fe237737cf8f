"""The layout of the bridge's keys in Redis, by version, and the upgrade of older data.

`bridge run` brings the data to this version's layout before anything reads or writes it
(`prepare`); the CLI refuses data in an older layout (`check`). An upgrade needs every
process of the older version stopped: they would go on writing the old names.

Versions (``schema`` in ``bridge:meta``; data written before it was kept has none: 1):

1. the first layout.
2. a partition's inbound and outbox streams, their dedupe, attempt and retry keys, its
   timers, and every conversation's state, transcript and ref set and its address's pointer
   and counter carry the partition's hash tag (`bridge.keys.partition_tag`), so each lives
   in the partition's Redis Cluster slot: ``bridge:in:3`` is ``bridge:in:{3.1}``,
   ``bridge:conv:<id>`` is ``bridge:conv:{3.1}:<id>``; the status indexes are one zset per
   status and partition (``bridge:convs:{3.1}:open``), and so are the email queues' streams
   (``bridge:queue:{3.1}:billing``; the cases filed before go to partition 0's); dead
   letters sit beside their source stream (``bridge:dlq:bridge:in:{3.1}``).
3. every contact key (records, address and email indexes, fields, links, events, erasure
   marks, the change counter) carries the contacts' own hash tag (`keys.CONTACT_TAG`), so
   they share one slot: ``bridge:contact:<id>`` is ``bridge:contact:{c}:<id>``; the
   engine writes a batch's contact changes before its partition's commit. The global
   erasure counter (``bridge:erasures-rev``, kept for engines of schema 2) goes.
4. a platform id seen on a stream is a member of a set per stream and time span
   (``bridge:dedupe:bridge:in:{3.1}:<span>``, `bridge.keys.dedupe_buckets`) instead of a
   key with its own expiry (``bridge:seen:bridge:in:{3.1}:<id>``): the keys left become
   members of the present span's set, remembered at least as long as they had left.
5. a publish batch is one entry of its partition's inbound stream (field ``b``: the
   messages as a msgpack array) instead of an entry a message (field ``m``, still read, and
   still written by timers and replays); nothing moves, the upgrade waits for the engines
   of the older version to stop (they would dead-letter a batch entry as malformed).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from bridge import keys
from bridge.connection import mget
from bridge.errors import BridgeError
from bridge.model import entry_order, new_id

log = logging.getLogger(__name__)

SCHEMA = 5

UPGRADING = keys.PREFIX + "upgrading"  # the one process upgrading the data holds it
_UPGRADE_TTL_MS = 60_000  # renewed while the upgrade runs; a process that died frees it
_CHUNK = 1_000

# the partition count and, for data nobody wrote yet, this version's schema: in one step,
# so two processes starting on an empty Redis both see a schema
_FIRST_META = """
if redis.call('HSETNX', KEYS[1], 'partitions', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'schema', ARGV[2])
end
return redis.call('HMGET', KEYS[1], 'partitions', 'schema')
"""


async def prepare(redis: Redis, partitions: int, *, lease_ttl_s: float,
                  dedupe_ttl_s: int = keys.DEDUPE_TTL_S) -> None:
    """Check the partition count and upgrade older data to this version's layout. Several
    processes may start at once: one upgrades, the others wait for it."""
    stored, schema = await redis.eval(_FIRST_META, 1, keys.META, partitions, SCHEMA)
    _check_partitions(int(stored), partitions)
    version = _version(schema)
    waiting = False
    while version < SCHEMA:
        token = new_id()
        if await redis.set(UPGRADING, token, nx=True, px=_UPGRADE_TTL_MS):
            try:
                await _upgrade(redis, partitions, version, token, lease_ttl_s, dedupe_ttl_s)
            finally:
                if await redis.get(UPGRADING) == token.encode():
                    await redis.delete(UPGRADING)
        else:
            if not waiting:
                log.info("another process is upgrading the data in Redis; waiting for it")
                waiting = True
            await asyncio.sleep(0.5)
        version = _version(await redis.hget(keys.META, "schema"))
    await _warn_of_older_writers(redis, partitions)


async def check(redis: Redis, partitions: int) -> None:
    """For the CLI: refuse data in another layout than this version's, or of another
    partition count (a partition's keys are named by it: it would find nothing)."""
    stored, schema = await redis.hmget(keys.META, ["partitions", "schema"])
    if stored is None:
        return
    _check_partitions(int(stored), partitions)
    version = _version(schema)
    if version < SCHEMA:
        raise BridgeError(f"this Redis holds data in the layout of an older version of the bridge (schema "
                          f"{version}, this version uses {SCHEMA}); stop every bridge process of the older "
                          "version, then start `bridge run` of this one once: it upgrades the data at start")
    _refuse_newer(version)


def _check_partitions(stored: int, partitions: int) -> None:
    if stored != partitions:
        raise BridgeError(f"engine.partitions: this Redis holds data for {stored} partitions, the config "
                          f"says {partitions}; set engine.partitions back to {stored} "
                          "(repartitioning is not supported)")


def _version(value: bytes | str | None) -> int:
    version = int(value) if value is not None else 1
    _refuse_newer(version)
    return version


def _refuse_newer(version: int) -> None:
    if version > SCHEMA:
        raise BridgeError(f"this Redis holds data in the layout of a newer version of the bridge (schema {version}, "
                          f"this version knows up to {SCHEMA}); run the newer version")


async def _upgrade(redis: Redis, partitions: int, version: int, token: str, lease_ttl_s: float,
                   dedupe_ttl_s: int) -> None:
    started = time.monotonic()

    async def renew() -> None:
        if not await redis.set(UPGRADING, token, xx=True, px=_UPGRADE_TTL_MS):
            raise BridgeError("lost the upgrade lock (Redis restarted or was too slow?); start again")

    if version < 2:
        await _wait_for_older_processes(redis, _leases_of_schema_1(partitions), lease_ttl_s)
        log.info("upgrading the data in Redis to schema 2: partition keys get their hash tag",
                 extra={"partitions": partitions})
        moved = await _tag_partitions(redis, partitions, renew)
        await redis.hset(keys.META, "schema", 2)
        log.info("data upgraded to schema 2", extra={"keys_renamed": moved,
                                                     "seconds": round(time.monotonic() - started, 1)})
    leases = [keys.lease(stream) for p in range(partitions)
              for stream in (keys.inbound(p, partitions), keys.outbox(p, partitions))]
    if version < 3:
        await _wait_for_older_processes(redis, leases, lease_ttl_s)
        log.info("upgrading the data in Redis to schema 3: contact keys get their hash tag")
        moved = await _tag_contacts(redis, renew)
        await redis.hset(keys.META, "schema", 3)
        log.info("data upgraded to schema 3", extra={"keys_renamed": moved,
                                                     "seconds": round(time.monotonic() - started, 1)})
    if version < 4:
        await _wait_for_older_processes(redis, leases, lease_ttl_s)
        log.info("upgrading the data in Redis to schema 4: dedupe keys become members of a set per time span")
        moved = await _dedupe_into_sets(redis, dedupe_ttl_s, renew)
        await redis.hset(keys.META, "schema", 4)
        log.info("data upgraded to schema 4", extra={"dedupe_keys_moved": moved,
                                                     "seconds": round(time.monotonic() - started, 1)})
    if version < 5:
        await _wait_for_older_processes(redis, leases, lease_ttl_s)
        await redis.hset(keys.META, "schema", 5)
        log.info("data upgraded to schema 5: a publish batch is one inbound stream entry")


# -- 1 -> 2 ----------------------------------------------------------------------------

_LEGACY_DEAD_LETTERS = keys.PREFIX + "dlq"  # one stream for every source
_LEGACY_STREAM = re.compile(rf"^{re.escape(keys.PREFIX)}(in|outbox|timers):(\d+)$")


def _tagged(name: str, partitions: int) -> str | None:
    """A schema-1 partition key's schema-2 name (None: not one)."""
    found = _LEGACY_STREAM.match(name)
    if found is None:
        return None
    kind, partition = found.group(1), int(found.group(2))
    if partition >= partitions:
        return None
    build = {"in": keys.inbound, "outbox": keys.outbox, "timers": keys.timers}[kind]
    return build(partition, partitions)


async def _warn_of_older_writers(redis: Redis, partitions: int) -> None:
    """An inbound stream under its schema-1 name after the upgrade: a process of the older
    version is still publishing there, and nothing reads it."""
    async with redis.pipeline(transaction=False) as pipe:
        for p in range(partitions):
            pipe.exists(f"{keys.PREFIX}in:{p}")
        found = [f"{keys.PREFIX}in:{p}" for p, n in enumerate(await pipe.execute()) if n]
    if found:
        log.error("an inbound stream has its schema-1 name: a process of an older version is still writing "
                  "messages there, and no engine of this version reads them; stop it, then move the entries "
                  "into the stream of the same partition's new name (bridge:in:{p.n}) by hand",
                  extra={"streams": found})


def _leases_of_schema_1(partitions: int) -> list[str]:
    return [keys.lease(f"{keys.PREFIX}{kind}:{p}") for kind in ("in", "outbox") for p in range(partitions)]


async def _wait_for_older_processes(redis: Redis, leases: list[str], lease_ttl_s: float) -> None:
    """A partition leased before the upgrade is held by a running older process (or by one
    that just stopped: its lease expires after engine.lease_ttl_s)."""
    deadline = time.monotonic() + lease_ttl_s + 2
    while held := [name for name, value in zip(leases, await mget(redis, leases), strict=True) if value]:
        if time.monotonic() > deadline:
            raise BridgeError(f"cannot upgrade the data in Redis: a bridge process of an older version holds "
                              f"{len(held)} partition(s) ({held[0]}, ...); stop every process of the older version "
                              "first, then start this one")
        log.info("waiting for older processes' partition leases to expire", extra={"held": len(held)})
        await asyncio.sleep(0.5)


async def _tag_partitions(redis: Redis, partitions: int, renew: Callable[[], Awaitable[None]]) -> int:
    renames: list[tuple[str, str]] = []
    for p in range(partitions):
        for kind in ("in", "outbox", "timers"):
            old = f"{keys.PREFIX}{kind}:{p}"
            new = _tagged(old, partitions)
            assert new is not None
            renames.append((old, new))
            if kind != "timers":
                renames += [(keys.attempts(old), keys.attempts(new)), (keys.retry_due(old), keys.retry_due(new))]
    moved = await _rename(redis, renames, strict=True)
    await renew()
    for kind in ("in", "outbox"):
        prefix = keys.dedupe(f"{keys.PREFIX}{kind}:", "")[:-1]  # bridge:seen:bridge:in:

        def marked(rest: str, kind: str = kind) -> str | None:
            partition, _, dedupe_key = rest.partition(":")
            new = _tagged(f"{keys.PREFIX}{kind}:{partition}", partitions)
            return keys.dedupe(new, dedupe_key) if new is not None else None

        moved += await _rename_scanned(redis, prefix, marked, renew, strict=False)
    # a conversation's keys: state, transcript, ref set, its address's pointer and counter
    builders: dict[str, Callable[[str, int], str]] = {
        "conv": keys.conversation, "transcript": keys.transcript, "refs": keys.conversation_refs,
        "convseq": keys.conversation_seq}
    for family, build in builders.items():

        def tagged(rest: str, build: Callable[[str, int], str] = build) -> str | None:
            return build(rest, partitions) if not rest.startswith("{") else None

        moved += await _rename_scanned(redis, f"{keys.PREFIX}{family}:", tagged, renew)

    def pointer(rest: str) -> str | None:
        channel, _, address = rest.partition(":")
        return keys.current_conversation(channel, address, partitions) if not rest.startswith("{") else None

    moved += await _rename_scanned(redis, f"{keys.PREFIX}addr:", pointer, renew)
    moved += await _split_status_indexes(redis, partitions, renew)

    def queue(rest: str) -> str | None:  # a queue's cases so far: all in its partition 0's stream
        return keys.queue(rest, 0, partitions) if not rest.startswith("{") else None

    moved += await _rename_scanned(redis, f"{keys.PREFIX}queue:", queue, renew)
    await _split_dead_letters(redis, partitions)
    return moved


# -- 2 -> 3 ----------------------------------------------------------------------------

_CONTACT_FAMILIES = ("contact", "contact-addr", "contact-email", "contact-fields", "contact-person",
                     "contact-members", "contact-events", "erased")


async def _tag_contacts(redis: Redis, renew: Callable[[], Awaitable[None]]) -> int:
    moved = 0
    for family in _CONTACT_FAMILIES:
        prefix = f"{keys.PREFIX}{family}:"

        def tagged(rest: str, prefix: str = prefix) -> str | None:
            return f"{prefix}{keys.CONTACT_TAG}:{rest}" if not rest.startswith("{") else None

        moved += await _rename_scanned(redis, prefix, tagged, renew)
    moved += await _rename(redis, [(f"{keys.PREFIX}contacts-rev", keys.CONTACTS_REV)], strict=False)
    await redis.delete(f"{keys.PREFIX}erasures-rev")  # read by engines of schema 2 only
    return moved


# -- 3 -> 4 ----------------------------------------------------------------------------

_PROGRESS_EVERY = 100 * _CHUNK  # a busy week left millions: say how far the upgrade got
_SEEN = keys.dedupe("", "").removesuffix(":")  # bridge:seen:, then the stream and the id
_SCHEMA_3_DEDUPE = re.compile(rb"^" + re.escape(_SEEN.encode()) + rb"(.+?\}):(.*)$", re.S)  # (stream, id)


async def _dedupe_into_sets(redis: Redis, dedupe_ttl_s: int, renew: Callable[[], Awaitable[None]]) -> int:
    """Each schema-3 dedupe key (``bridge:seen:<stream>:<id>``) becomes a member of its
    stream's set for the present time span, whose expiry is at least the TTL away: no id
    is forgotten sooner than it would have been. Added before the key goes, so an upgrade
    started again finds what the first left."""
    bucket, _, expiry = keys.dedupe_buckets(time.time(), dedupe_ttl_s)
    moved = 0
    chunk: list[tuple[bytes, str, bytes]] = []  # (the key, its set, the id)

    async def move() -> None:
        by_set: dict[str, list[bytes]] = {}
        for _, dedupe_set, member in chunk:
            by_set.setdefault(dedupe_set, []).append(member)
        async with redis.pipeline(transaction=False) as pipe:
            for dedupe_set, members in by_set.items():
                pipe.sadd(dedupe_set, *members)
                pipe.expireat(dedupe_set, expiry)
            for key, _, _ in chunk:
                pipe.delete(key)
            await pipe.execute()
        chunk.clear()

    async for key in redis.scan_iter(match=keys.dedupe("*", "*"), count=_CHUNK):
        found = _SCHEMA_3_DEDUPE.match(key)
        if found is None:
            continue
        chunk.append((key, keys.dedupe_set(found.group(1).decode(), bucket), found.group(2)))
        moved += 1
        if len(chunk) >= _CHUNK:
            await move()
            await renew()
            if moved % _PROGRESS_EVERY == 0:
                log.info("upgrading to schema 4: dedupe keys moved so far", extra={"dedupe_keys_moved": moved})
    if chunk:
        await move()
    return moved


async def _rename_scanned(redis: Redis, prefix: str, renamed: Callable[[str], str | None],
                          renew: Callable[[], Awaitable[None]], *, strict: bool = True) -> int:
    """Rename every key under ``prefix`` to ``renamed(the rest of its name)`` (None: left
    alone), a chunk at a time."""
    moved = 0
    batch: list[tuple[str, str]] = []
    async for raw in redis.scan_iter(match=prefix + "*", count=_CHUNK):
        name = raw.decode()
        new = renamed(name[len(prefix):])
        if new is not None and new != name:
            batch.append((name, new))
        if len(batch) >= _CHUNK:
            moved += await _rename(redis, batch, strict=strict)
            await renew()
            batch = []
    return moved + await _rename(redis, batch, strict=strict)


async def _split_status_indexes(redis: Redis, partitions: int, renew: Callable[[], Awaitable[None]]) -> int:
    """The one zset per status becomes one per status and partition: its members copied
    (ZADD: a copy started again is the same copy), then it goes."""
    prefix = f"{keys.PREFIX}convs:"
    legacy = [raw.decode() async for raw in redis.scan_iter(match=prefix + "*", count=_CHUNK)
              if not raw.decode()[len(prefix):].startswith("{")]
    for name in legacy:
        status = name[len(prefix):]
        chunk: list[tuple[bytes, float]] = []
        async for member in redis.zscan_iter(name, count=_CHUNK):
            chunk.append(member)
            if len(chunk) >= _CHUNK:
                await _add_by_partition(redis, status, chunk, partitions)
                await renew()
                chunk = []
        await _add_by_partition(redis, status, chunk, partitions)
        await redis.delete(name)
    return len(legacy)


async def _add_by_partition(redis: Redis, status: str, members: list[tuple[bytes, float]], partitions: int) -> None:
    if not members:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for member, score in members:
            pipe.zadd(keys.status_index(member.decode(), status, partitions), {member: score})
        await pipe.execute()


async def _rename(redis: Redis, renames: list[tuple[str, str]], *, strict: bool) -> int:
    """RENAMENX each existing key (RENAME keeps a stream's groups and pending entries, and a
    key's expiry). ``strict``: both names taken is an error (two streams would have to be
    merged); otherwise (dedupe marks) the new name wins and the old goes."""
    if not renames:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for old, _ in renames:
            pipe.exists(old)
        present = [old_new for old_new, n in zip(renames, await pipe.execute(), strict=True) if n]
    if not present:
        return 0
    async with redis.pipeline(transaction=False) as pipe:
        for old, new in present:
            pipe.renamenx(old, new)
        done = await pipe.execute(raise_on_error=False)
    clashes = [old_new for old_new, ok in zip(present, done, strict=True) if ok == 0]
    if clashes and strict:
        old, new = clashes[0]
        raise BridgeError(f"cannot upgrade the data in Redis: both {old} and {new} exist (was a process of an "
                          f"older version still writing?); move the entries of {old} into {new} by hand, "
                          "or delete it, then start again")
    if clashes:
        await redis.delete(*(old for old, _ in clashes))
    return sum(1 for ok in done if ok == 1)


async def _split_dead_letters(redis: Redis, partitions: int) -> None:
    """The one dead-letter stream becomes one beside each source stream (in its slot), each
    letter naming its source by its new name and keeping its entry id. A split started
    again skips what it copied (ids only grow in a stream)."""
    rows = await redis.xrange(_LEGACY_DEAD_LETTERS)
    targets: dict[str, list[tuple[bytes, dict[bytes, bytes]]]] = {}
    for entry_id, fields in rows:
        stream = fields.get(b"stream", b"").decode()
        source = _tagged(stream, partitions) or stream
        targets.setdefault(keys.dead_letters(source), []).append((entry_id, {**fields, b"stream": source.encode()}))
    for target, entries in targets.items():
        last = await redis.xrevrange(target, count=1)
        done = entry_order(last[0][0]) if last else (-1, -1)
        async with redis.pipeline(transaction=False) as pipe:
            for entry_id, fields in entries:
                if entry_order(entry_id) > done:
                    pipe.xadd(target, fields, id=entry_id)
            await pipe.execute()
    await redis.delete(_LEGACY_DEAD_LETTERS)
