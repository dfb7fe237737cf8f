"""Redis streams: publish with dedupe, consumer groups, reclaim, dead letters, safe trims.

Hot-path rule: a fixed number of Redis round trips per batch, and a stream entry per
batch rather than per message. Publishing a batch is one Lua call, writing one entry a
partition; the engine commits a batch's effects (and its acks) in one transaction
(`commit`): two round trips, the fences read under WATCH, then MULTI/EXEC; the batch's
messages to one outbound stream are one entry too. A reader sees each message of an entry
as an `Entry` of its own; `ack_ops` acks the stream entry once all are done.

With ``wait_replicas`` (``redis.wait_replicas``) a publish, a commit and a read that
returned entries are followed, in the same round trip, by Redis ``WAIT``: a write counts
only once that many replicas have it, so a failover to one of them loses nothing that was
confirmed; and a consumer acts only on entries (and effects of commits) a replica holds,
so nothing is sent on the strength of a write a failover could take back. Fewer replicas
in time raise `NotReplicated`: the write may still be on the primary, and a retry is
deduplicated (dedupe keys, commit-once keys, the sent record).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AskError, ClusterDownError, NoScriptError, ResponseError, TryAgainError

from bridge import keys
from bridge.connection import Script, follow_cluster_change, is_cluster, mget, retry_of
from bridge.errors import BridgeError, NotReplicated, StoreUnavailable
from bridge.lease import Leases
from bridge.model import (
    Message,
    batch_payloads,
    decode,
    encode,
    encode_batch,
    entry_order,
    new_id,
    now_ms,
    partition_of,
)
from bridge.ops import Ops, pack, variadic
from bridge.primaries import on_primaries
from bridge.storeerrors import as_store_error, typed_store_errors
from bridge.transaction import FenceFailed, fenced, packed, pipelined

# thread refs Redis has no key for -> their conversation ids (Store.archived_refs: the SQL record)
RefResolver = Callable[[list[str]], Awaitable[dict[str, str]]]

log = logging.getLogger("bridge.bus")

_PUBLISH = """
-- One entry into a partition's stream, unless a platform id of it was seen before.
-- KEYS[1]: the stream; KEYS[2]: the dedupe set this publish adds to; KEYS[3..]: every
-- dedupe set that may hold an id seen within the dedupe TTL (`keys.dedupe_buckets`).
-- Every key a script touches is declared, as Redis Cluster needs. ARGV[1]: KEYS[2]'s
-- expiry (Unix seconds); ARGV[2], ARGV[3]: the entry's field and value ('m' and one
-- encoded message, or 'b' and a msgpack array of them); ARGV[4..]: the platform ids
-- (dedupe keys) of its messages that have one, no two alike. Returns '' when the entry
-- was written and its ids remembered; else, writing nothing, one character an id: 1
-- seen before, 0 not (the caller publishes the others again, without the seen ones).
-- The ids are added only once the XADD went through, so an XADD refused (Redis full)
-- leaves the platform's retry free to store them.
local n = #ARGV
if n >= 4 then
  for b = 3, #KEYS do
    local found = redis.call('SMISMEMBER', KEYS[b], unpack(ARGV, 4, n))
    for j = 1, #found do
      if found[j] == 1 then  -- the rare path: which ones, in every set
        local seen = {}
        for c = 3, #KEYS do
          local again = redis.call('SMISMEMBER', KEYS[c], unpack(ARGV, 4, n))
          for i = 1, #again do
            if again[i] == 1 then seen[i] = '1' end
          end
        end
        for i = 1, n - 3 do seen[i] = seen[i] or '0' end
        return table.concat(seen)
      end
    end
  end
end
local id = redis.pcall('XADD', KEYS[1], '*', ARGV[2], ARGV[3])
if type(id) == 'table' and id.err then return id end
if n >= 4 then
  redis.call('SADD', KEYS[2], unpack(ARGV, 4, n))
  redis.call('EXPIREAT', KEYS[2], ARGV[1])
end
return ''
"""
PUBLISH_BATCH_MAX_BYTES = 1 << 20  # an entry's encoded messages, in bytes, at most (and `keys.BATCH_MAX` of them)

_TRIM = """
-- Trim acknowledged entries only: never past the oldest pending or undelivered entry of
-- any group. KEYS[1]: stream. ARGV[1]: keep at most this many entries before trimming.
local stream = KEYS[1]
if redis.call('EXISTS', stream) == 0 then return 0 end
local len = redis.call('XLEN', stream)
if len <= tonumber(ARGV[1]) then return 0 end
local function parse(id)
  local dash = string.find(id, '-')
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function less(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
local keep = nil
local groups = redis.call('XINFO', 'GROUPS', stream)
if #groups == 0 then return 0 end
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local first
  if info['pending'] > 0 then
    first = redis.call('XPENDING', stream, info['name'])[2]
  else
    local ms, seq = parse(info['last-delivered-id'])
    first = ms .. '-' .. (seq + 1)
  end
  if keep == nil or less(first, keep) then keep = first end
end
return redis.call('XTRIM', stream, 'MINID', keep)
"""

_FIRE_TIMERS = """
-- Move due timers (zset members are encoded messages) into the partition stream.
-- KEYS[1]: timers zset, KEYS[2]: stream. ARGV: now_ms, limit.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, payload in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'm', payload)
  redis.call('ZREM', KEYS[1], payload)
end
return #due
"""

_NO_RETRY = Retry(NoBackoff(), 0)  # a client made without a retry policy (bridge.connection gives one)
REPLICATION_MARK_MS = 1000  # the mark a replicated read of read entries writes (Redis Cluster) lives this long
# on a Redis Cluster (reads poll, `Bus._read_each`), how long a read that found nothing
# waits before the next: briefly while entries came in the last CLUSTER_IDLE_AFTER_S, longer
# after (an idle bridge's polls cost CPU on both sides: 10 ms polls kept 11% of a core busy)
CLUSTER_POLL_MS = 10
CLUSTER_IDLE_POLL_MS = 50
CLUSTER_IDLE_AFTER_S = 1.0
COMMIT_TRIES = 50  # a commit whose fences changed under it (a lease renewed) runs again; this many times at most

RELEASE_LANE = "release_lane"  # an outbound command: the lane named in data["lane"] goes on


class StaleCache(Exception):
    """A guarded commit found that a guard key changed since the batch read it: what the
    batch computed from its caches may bring back what an erasure deleted."""

    def __init__(self, guard_key: str) -> None:
        super().__init__(f"changed since the batch read it: {guard_key}")
        self.guard_key = guard_key


class LeaseLost(Exception):
    """A fenced commit found that this worker no longer owns the stream whose lease key
    is ``lease_key``."""

    def __init__(self, lease_key: str) -> None:
        super().__init__(f"lease lost: {lease_key}")
        self.lease_key = lease_key


class CommitUncertain(StoreUnavailable):
    """A commit was sent and Redis' answer never came (the connection cut through every
    retry): it may have been applied. `Bus.commit_applied` tells, by its ``once`` key,
    once Redis answers again."""

    def __init__(self, message: str, once: str) -> None:
        super().__init__(message)
        self.once = once


class Entry(msgspec.Struct):
    """One message as read from a stream: a stream entry, or one message of an entry that
    holds a publish batch (``batch``: that entry's id; ``id``: ``<batch>#<index>``). Acks go
    through `Bus.ack_ops`, which acks a batch entry once all its messages are done."""
    stream: str
    id: str
    payload: bytes | None  # None when the entry has no payload field (malformed) or is gone
    replay: bool = False  # put back from the dead letters by an operator (`bridge dlq replay`)
    # deleted while it was pending (an erasure scrubs the streams): nothing to handle, acked
    erased: bool = False
    batch: str = ""  # the id of the stream entry holding it with others ("": it is that entry)
    index: int = 0  # its place in that entry
    parts: int = 1  # the messages in that entry
    done: tuple[int, ...] = ()  # those of them a commit before handled (`keys.parts_done`)

    @property
    def source(self) -> str:
        """The id of the stream entry it is in."""
        return self.batch or self.id


def entry_of(stream: str, entry_id: str, fields: dict[bytes, bytes] | None) -> list[Entry]:
    """The messages of one stream entry as read (its fields by name; None: deleted while
    pending). A batch entry that is no msgpack array is returned whole, and fails to decode."""
    if fields is None:
        return [Entry(stream, entry_id, None, erased=True)]
    blob = fields.get(_BATCH_FIELD)
    if blob is None:
        return [Entry(stream, entry_id, fields.get(_PAYLOAD_FIELD), replay=_REPLAY_FIELD in fields)]
    try:
        parts = batch_payloads(blob)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return [Entry(stream, entry_id, blob)]
    return [Entry(stream, f"{entry_id}#{n}", part, batch=entry_id, index=n, parts=len(parts))
            for n, part in enumerate(parts)]


_PAYLOAD_FIELD, _BATCH_FIELD, _REPLAY_FIELD = (keys.PAYLOAD_FIELD.encode(), keys.BATCH_FIELD.encode(),
                                               keys.REPLAY_FIELD.encode())


def entries_from_reply(reply: Any) -> list[Entry]:
    """Flatten a raw XREADGROUP reply (any stream count; `Bus` reads it without redis-py's
    per-entry dicts) into entries, in stream order."""
    out: list[Entry] = []
    if not reply:
        return out
    for stream_name, items in reply:
        stream = stream_name.decode()
        for entry_id, fields in items:
            if fields and len(fields) == 2 and fields[0] == _PAYLOAD_FIELD:  # a message alone: the most common
                out.append(Entry(stream, entry_id.decode(), fields[1]))
                continue
            out.extend(entry_of(stream, entry_id.decode(), _fields(fields)))
    return out


def _raw_reply(response: Any, **options: Any) -> Any:
    return response


def decode_entries(entries: list[Entry]) -> tuple[list[tuple[Entry, Message]], list[tuple[Entry, str]]]:
    """Split a batch into decoded messages and malformed entries (with the reason);
    entries deleted while pending (`Entry.erased`) are neither."""
    decoded: list[tuple[Entry, Message]] = []
    malformed: list[tuple[Entry, str]] = []
    for entry in entries:
        if entry.erased:
            continue
        if entry.payload is None:
            malformed.append((entry, "malformed entry: no 'm' field"))
            continue
        try:
            decoded.append((entry, decode(entry.payload)))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            malformed.append((entry, f"malformed entry: {exc}"))
    return decoded, malformed


@typed_store_errors
class Bus:
    """The streams every part of the bridge talks through. A Redis that does not answer
    raises `StoreUnavailable` from every method (`StorageFull` when it is at maxmemory)."""

    def __init__(self, redis: Redis, *, partitions: int, dedupe_ttl_s: int = keys.DEDUPE_TTL_S,
                 dead_letter_max_len: int = 100_000, wait_replicas: int = 0, wait_timeout_ms: int = 1000,
                 ref_resolver: RefResolver | None = None) -> None:
        self.redis = redis
        self.ref_resolver = ref_resolver  # asked for the refs Redis misses (retention dropped them)
        self.partitions = partitions
        self.dedupe_ttl_s = dedupe_ttl_s
        self.dead_letter_max_len = dead_letter_max_len
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.cluster = is_cluster(redis)  # reads go stream by stream (`_read_each`)
        self._last_found: dict[tuple[str, str], float] = {}  # (group, consumer) -> when a cluster read found entries
        self._publish = Script(redis, _PUBLISH)
        self._trim = Script(redis, _TRIM)
        self._fire_timers = Script(redis, _FIRE_TIMERS)
        redis.set_response_callback("XREADGROUP", _raw_reply)  # entries_from_reply reads it as it came

    # -- publishing ------------------------------------------------------------------

    def inbound_stream(self, message: Message) -> str:
        return keys.inbound(partition_of(message.partition_key, self.partitions), self.partitions)

    async def publish(self, message: Message) -> bool:
        """Append to the inbound stream; False when the dedupe key was seen before."""
        return (await self.publish_many([message]))[0]

    async def publish_many(self, messages: Sequence[Message]) -> list[bool]:
        """Append a batch in one round trip (two when thread refs must be resolved, and a
        look in the SQL record for refs retention dropped): one script call per partition
        (a script keeps to one Redis Cluster slot), pipelined, each writing one stream entry
        (up to `keys.BATCH_MAX` messages or `PUBLISH_BATCH_MAX_BYTES`: then more). An
        entry a batch, not a message, cuts what Redis spends a message (`python -m bench`).
        A batch with a platform id seen before is written again without it: a round trip
        more, for a platform's retry only."""
        if not messages:
            return []
        await self._resolve_refs(messages)
        by_stream: dict[str, list[list[int]]] = {}  # each stream's messages, a list an entry
        payloads: dict[int, bytes] = {}
        room: dict[str, int] = {}  # bytes left in the stream's last entry
        named: set[tuple[str, str]] = set()
        for n, message in enumerate(messages):
            stream = self.inbound_stream(message)
            if message.dedupe_key:
                if (stream, message.dedupe_key) in named:
                    continue  # a duplicate of one before it in the batch
                named.add((stream, message.dedupe_key))
            payloads[n] = payload = encode(message)
            batches = by_stream.setdefault(stream, [[]])
            if batches[-1] and (len(batches[-1]) >= keys.BATCH_MAX or len(payload) > room[stream]):
                batches.append([])
            if len(batches[-1]) == 0:
                room[stream] = PUBLISH_BATCH_MAX_BYTES
            batches[-1].append(n)
            room[stream] -= len(payload)
        bucket, buckets, expiry = keys.dedupe_buckets(time.time(), self.dedupe_ttl_s)
        todo = [([stream, keys.dedupe_set(stream, bucket), *(keys.dedupe_set(stream, b) for b in buckets)], batch)
                for stream, batches in by_stream.items() for batch in batches]
        stored = [False] * len(messages)
        while todo:  # again without the ids seen before: each round has fewer messages
            calls: list[tuple[list[str], list[Any]]] = []
            for declared, batch in todo:
                field, value = ((keys.PAYLOAD_FIELD, payloads[batch[0]]) if len(batch) == 1 else
                                (keys.BATCH_FIELD, encode_batch([payloads[n] for n in batch])))
                calls.append((declared, [expiry, field, value,
                                         *(messages[n].dedupe_key for n in batch if messages[n].dedupe_key)]))
            again = []
            for (declared, batch), seen in zip(todo, await self.run_script(self._publish, calls), strict=True):
                if not seen:
                    for n in batch:
                        stored[n] = True
                    continue
                flags = iter(seen)
                left = [n for n in batch if not (messages[n].dedupe_key and next(flags) == 49)]  # "1": seen before
                if left:
                    again.append((declared, left))
            todo = again
        return stored

    # -- replication (redis.wait_replicas) -------------------------------------------

    async def run_script(self, script: Script, calls: list[tuple[list[str], list[Any]]], *,
                         replicated: bool = True) -> list[Any]:
        """Run ``script`` once per (declared keys, args) call, in one round trip; with
        ``wait_replicas`` and ``replicated``, WAIT after them (`_run`)."""
        wait = replicated and bool(self.wait_replicas)
        if len(calls) == 1 and not wait:
            declared, args = calls[0]
            return [await script(keys=declared, args=args)]
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(3):  # again after loading a script a server did not have (a map a failover made stale: twice)
            replies, waits = await self._run([(calls[n][0][0], ("EVALSHA", script.sha, len(calls[n][0]),
                                                                 *calls[n][0], *calls[n][1])) for n in todo],
                                             wait=wait)
            unknown = [n for n, reply in zip(todo, replies, strict=True) if isinstance(reply, NoScriptError)]
            for n, reply in zip(todo, replies, strict=True):
                if isinstance(reply, Exception) and not isinstance(reply, NoScriptError):
                    raise reply
                results[n] = reply
            if len(unknown) < len(todo):  # some ran: their writes must be replicated
                for replicas in waits:
                    self._check_replicas(replicas)
            if not unknown:
                return results
            await self._load(script, [calls[n][0][0] for n in unknown])  # a restart, or a replica that took over
            todo = unknown
        raise StoreUnavailable("a script was loaded and is still unknown to Redis (a failover under way?)")

    async def _load(self, script: Script, besides: Sequence[str]) -> None:
        """Load ``script`` into the one Redis, or into each primary of ``besides``' slots,
        once each (one at a time, a load a key cost a round trip a lease on a restart)."""
        if not self.cluster:
            await script.load(besides[0])
            return
        await self.redis.initialize()  # (at once when it knows the cluster's map already)
        for beside in {self.redis.get_node_from_key(beside).name: beside for beside in besides}.values():
            await script.load(beside)

    async def _run(self, commands: Sequence[tuple[str, Sequence[Any]]], *, wait: bool = True
                   ) -> tuple[list[Any], list[Any]]:
        """(key, command) pairs in one round trip: pipelined, or on a Redis Cluster each
        primary's share on one connection (`bridge.primaries`); with ``wait_replicas`` (and
        ``wait``) a WAIT after the writes on each connection. The replies (errors as
        instances) and the WAITs' replies."""
        wait_for = (self.wait_replicas, self.wait_timeout_ms) if self.wait_replicas and wait else None
        if self.cluster:
            return await on_primaries(self.redis, commands, wait_for)
        sent = [command for _, command in commands] + ([("WAIT", *wait_for)] if wait_for else [])
        replies = await pipelined(self.redis, sent, retry=retry_of(self.redis))
        return replies[:len(commands)], replies[len(commands):]

    async def _replicas_now(self, beside: str) -> Any:
        """WAIT alone (on a Redis Cluster, on ``beside``'s primary: the client knows the
        map, a write there came before)."""
        target = {"target_nodes": self.redis.get_node_from_key(beside)} if self.cluster else {}
        return await self.redis.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms, **target)

    def _check_replicas(self, replicas: Any) -> None:
        if isinstance(replicas, Exception):
            raise replicas
        if int(replicas) < self.wait_replicas:
            raise NotReplicated(f"{replicas} of {self.wait_replicas} replica(s) (redis.wait_replicas) confirmed "
                                f"the write within {self.wait_timeout_ms} ms (redis.wait_timeout_ms)")

    async def _resolve_refs(self, messages: Sequence[Message]) -> None:
        """Give messages that name a thread (``ref``) their conversation id, so they land
        in that conversation's partition, in order with the customer's messages."""
        pending = [m for m in messages if m.ref and not m.conversation_id]
        if not pending:
            return
        found = await mget(self.redis, [keys.ref(m.ref) for m in pending])
        for message, conversation_id in zip(pending, found, strict=True):
            if conversation_id:
                message.conversation_id = conversation_id.decode()
        missed = [m for m in pending if not m.conversation_id]
        if missed and self.ref_resolver is not None:  # one lookup for the whole batch
            archived = await self.ref_resolver(list(dict.fromkeys(m.ref for m in missed)))
            for message in missed:
                message.conversation_id = archived.get(message.ref, "")

    # -- consuming -------------------------------------------------------------------

    async def ensure_group(self, stream: str, group: str) -> None:
        try:
            await self.redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, streams: list[str], group: str, consumer: str, *, count: int,
                   block_ms: int | None, pending: bool = False, after: dict[str, str] | None = None) -> list[Entry]:
        """New entries (``>``) of the streams, or with ``pending=True`` this consumer's own
        unacked ones (those after ``after[stream]``, to page through them); one round trip."""
        ids = {s: (after or {}).get(s, "0") if pending else ">" for s in streams}
        block = None if pending else block_ms
        try:
            entries = await self._read(ids, group, consumer, count=count, block=block, pending=pending)
            return await self._without_done(entries) if pending else entries
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        # Redis lost a stream or its group (restarted without its data, failed over to a
        # replica that had not got them): made again, from the stream's start, as at a first
        # start; the process goes on instead of ending on the error
        for stream in streams:
            await self._group_lost(stream, group)
        return await self._read(ids, group, consumer, count=count, block=block, pending=pending)

    async def _without_done(self, entries: list[Entry]) -> list[Entry]:
        """Entries read before (our own pending ones, or claimed) less the messages of batch
        entries that a commit handled already (`keys.parts_done`): one round trip when
        there are batch entries. A batch entry left with none stays as one message, marked
        erased, for its ack."""
        batches = list(dict.fromkeys((e.stream, e.batch) for e in entries if e.batch))
        if not batches:
            return entries
        noted, _ = await self._run([(stream, ("HGET", keys.parts_done(stream), batch)) for stream, batch in batches],
                                   wait=False)
        done: dict[tuple[str, str], tuple[int, ...]] = {}
        for where, value in zip(batches, noted, strict=True):
            if isinstance(value, Exception):
                raise value
            if value:
                done[where] = tuple(int(n) for n in value.split(b","))
        out: list[Entry] = []
        for entry in entries:
            handled = done.get((entry.stream, entry.batch)) if entry.batch else None
            if handled is None:
                out.append(entry)
                continue
            entry.done = handled
            if entry.index not in handled:
                out.append(entry)
            elif len(handled) >= entry.parts and entry.index == 0:  # all of it: only the ack is left
                entry.erased = True
                out.append(entry)
        return out

    async def _read(self, ids: dict[str, str], group: str, consumer: str, *, count: int, block: int | None,
                    pending: bool) -> list[Entry]:
        if self.cluster:
            return await self._read_each(ids, group, consumer, count=count, block=block, pending=pending)
        if not self.wait_replicas:
            blocking = ("BLOCK", block) if block is not None else ()
            (reply,), _ = await self._run([(next(iter(ids)), ("XREADGROUP", "GROUP", group, consumer, "COUNT", count,
                                                              *blocking, "STREAMS", *ids, *ids.values()))])
            if isinstance(reply, Exception):
                raise reply
            return entries_from_reply(reply)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xreadgroup(group, consumer, ids, count=count, block=block)
            if pending:  # a read of new entries is replicated itself; one of read entries is not
                pipe.publish(keys.REPLICATION_MARK, b"")
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            reply, *_, replicas = await pipe.execute()
        entries = entries_from_reply(reply)
        if entries:  # they stay pending for this consumer: read again once the replicas have them
            self._check_replicas(replicas)
        return entries

    async def _read_each(self, ids: dict[str, str], group: str, consumer: str, *, count: int,
                         block: int | None, pending: bool) -> list[Entry]:
        """On a Redis Cluster, where one XREADGROUP reads streams of one slot only: each
        stream's read, without blocking, in one round trip (`_run`: each primary its share
        at once); when none had anything, a short sleep stands for the block. With
        ``wait_replicas`` a read of read entries writes a mark in each stream's slot (a
        PUBLISH is not replicated on a cluster) for the WAITs to wait on."""
        commands: list[tuple[str, Sequence[Any]]] = [
            (stream, ("XREADGROUP", "GROUP", group, consumer, "COUNT", count, "STREAMS", stream, start))
            for stream, start in ids.items()]
        if pending and self.wait_replicas:
            commands += [(stream, ("SET", keys.replication_mark(stream), "", "PX", REPLICATION_MARK_MS))
                         for stream in ids]
        replies, waits = await self._run(commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        entries = [entry for reply in replies[:len(ids)] for entry in entries_from_reply(reply)]
        if entries:  # they stay pending for this consumer: read again once the replicas have them
            for replicas in waits:
                self._check_replicas(replicas)
        now, reader = time.monotonic(), (group, consumer)
        if entries:
            self._last_found[reader] = now
        elif block:
            idle = now - self._last_found.setdefault(reader, now) > CLUSTER_IDLE_AFTER_S
            await asyncio.sleep(min(block, CLUSTER_IDLE_POLL_MS if idle else CLUSTER_POLL_MS) / 1000)
        return entries

    async def entries(self, stream: str) -> list[Entry]:
        """Every message ``stream`` holds, read or not, in stream order (a batch entry's in
        its own): a look at a stream, not a consumer's read."""
        return [entry for entry_id, fields in await self.redis.xrange(stream)
                for entry in entry_of(stream, _text(entry_id), fields)]

    async def reclaim(self, stream: str, group: str, consumer: str, *, min_idle_ms: int,
                      count: int) -> list[Entry]:
        """Take over entries another consumer read and never acked (it died). A group
        Redis lost is made again (see `read`): it holds nothing to take over."""
        entries: list[Entry] = []
        start = "0-0"
        while True:
            try:
                reply, replicas = await self._autoclaim(stream, group, consumer, min_idle_ms, start, count)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._group_lost(stream, group)
                return await self._without_done(entries)
            if replicas is not None and reply[1]:
                self._check_replicas(replicas)
            # Redis 7 answers [next, entries, deleted]; Redis 6.2 answers [next, entries].
            next_start, claimed = reply[0], reply[1]
            for entry_id, fields in claimed:
                entries.extend(entry_of(stream, _text(entry_id), fields))
            if len(reply) > 2 and reply[2]:
                log.warning("entries deleted while pending", extra={"stream": stream, "ids": reply[2]})
            start = next_start.decode() if isinstance(next_start, bytes) else next_start
            if start == "0-0" or len(entries) >= count:
                return await self._without_done(entries)

    async def _autoclaim(self, stream: str, group: str, consumer: str, min_idle_ms: int, start: str,
                         count: int) -> tuple[Any, Any]:
        if not self.wait_replicas:
            return await self.redis.xautoclaim(stream, group, consumer, min_idle_ms, start, count=count), None
        if self.cluster:  # the WAIT on the claim's own connection
            (reply,), waits = await self._run(
                [(stream, ("XAUTOCLAIM", stream, group, consumer, min_idle_ms, start, "COUNT", count))])
            if isinstance(reply, Exception):
                raise reply
            return [reply[0], [(i, _fields(f)) for i, f in reply[1]], *reply[2:]], waits[-1]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xautoclaim(stream, group, consumer, min_idle_ms, start, count=count)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            reply, replicas = await pipe.execute()
        return reply, replicas

    async def _group_lost(self, stream: str, group: str) -> None:
        """Make a group Redis lost again, from the stream's start. A stream lost whole means
        Redis lost its data (a restart without persistence, a failover to an empty server):
        what was acknowledged there is gone, an error an operator must see. A stream that
        is there without its group (made by hand?) is read again from its start: its
        entries may be handled twice, rather than some never."""
        if await self.redis.exists(stream):
            log.error("consumer group missing on a stream that exists: created again, its entries are read "
                      "again from the start", extra={"group": group, "streams": [stream]})
        else:
            log.error("stream missing: Redis lost its data (restarted without persistence, or failed over to a "
                      "server that had no copy); what it held is gone", extra={"group": group, "streams": [stream]})
        await self.ensure_group(stream, group)

    async def pending_count(self, stream: str, group: str, *, besides: str | None = None) -> int:
        """Entries read and not acked, by every consumer but ``besides`` (none in a group
        Redis lost: it is made again)."""
        try:
            info = await self.redis.xpending(stream, group)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._group_lost(stream, group)
            return 0
        if not info or not info["pending"]:
            return 0
        if besides is None:
            return int(info["pending"])
        return sum(int(c["pending"]) for c in info["consumers"]
                   if (c["name"].decode() if isinstance(c["name"], bytes) else c["name"]) != besides)

    async def backlog(self, stream: str, group: str) -> tuple[int, int | None]:
        """Entries of ``stream`` the group has not acknowledged (pending plus not yet read),
        and the time (ms) of the oldest of them, None when there is none."""
        if not await self.redis.exists(stream):
            return 0, None
        groups = {_text(g["name"]): g for g in await self.redis.xinfo_groups(stream)}
        info = groups.get(group)
        if info is None:  # nobody reads it yet: everything in it waits
            first = await self.redis.xrange(stream, count=1)
            return int(await self.redis.xlen(stream)), _entry_ms(first[0][0]) if first else None
        pending = int(info.get("pending") or 0)
        lag = info.get("lag")
        waiting = pending + (int(lag) if lag is not None else 0)
        if pending:
            summary = await self.redis.xpending(stream, group)
            if summary and summary.get("min"):  # (acknowledged meanwhile: read on)
                return waiting, _entry_ms(summary["min"])
        after = await self.redis.xrange(stream, min="(" + _text(info["last-delivered-id"]), count=1)
        return waiting, _entry_ms(after[0][0]) if after else None

    async def delivery_counts(self, stream: str, group: str, ids: Iterable[str]) -> dict[str, int]:
        """How often each pending entry was delivered (poison-pill detection)."""
        counts: dict[str, int] = {}
        for entry_id in ids:
            rows = await self.redis.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
            if rows:
                counts[entry_id] = int(rows[0]["times_delivered"])
        return counts

    async def commit(self, ops: Ops, *, leases: Sequence[str] = (), owner: str = "",
                     guards: Sequence[tuple[str, str]] = ()) -> None:
        """Run a batch of Redis commands atomically (one transaction, `bridge.transaction`),
        fenced by leases: nothing is written unless ``owner`` still holds every lease, and
        (`StaleCache`) every guard key still holds its value ("" for none). Applied at most
        once, even when the connection drops after Redis ran it and the client retries; when
        no try got an answer, `CommitUncertain` (it may have been applied)."""
        if not ops:
            return
        once = keys.commit_once(new_id(), beside=leases[0] if leases else str(ops[0][1]))
        fences = [*((lease, owner.encode()) for lease in leases), *((key, value.encode()) for key, value in guards)]
        writes = packed(ops)
        after = packed([("WAIT", self.wait_replicas, self.wait_timeout_ms)]) if self.wait_replicas else b""
        retry = retry_of(self.redis) or _NO_RETRY
        try:
            await self._commit(once, fences, writes, len(ops), after, retry, leases)
        except BridgeError:
            raise
        except Exception as exc:
            typed = as_store_error(exc)
            if type(typed) is StoreUnavailable and not isinstance(exc, ResponseError):  # no answer
                raise CommitUncertain(str(typed), once) from exc
            raise

    async def _commit(self, once: str, fences: list[tuple[str, bytes]], writes: bytes, queued: int, after: bytes,
                      retry: Retry, leases: Sequence[str]) -> None:
        for _ in range(COMMIT_TRIES):
            try:
                if self.cluster:  # each try asks for the slot's primary again (a failover moves it)
                    applied, replies = await retry.call_with_retry(
                        lambda: fenced(self.redis, fences, once, writes, queued, after, 1 if after else 0),
                        functools.partial(follow_cluster_change, self.redis))
                else:
                    applied, replies = await fenced(self.redis, fences, once, writes, queued, after,
                                                    1 if after else 0, retry)
            except FenceFailed as exc:
                if exc.key in leases:
                    raise LeaseLost(exc.key) from None
                raise StaleCache(exc.key) from None
            except (AskError, TryAgainError, ClusterDownError) as exc:  # the slot moved, or is moving
                if await follow_cluster_change(self.redis, exc):
                    continue
                raise
            if applied is None:  # a lease renewed (or a guard moved) between the read and the EXEC
                continue
            if applied is False and self.wait_replicas:  # an earlier try wrote it: replicated?
                replies = [await self._replicas_now(once)]
            if replies:
                self._check_replicas(replies[0])
            return
        raise StoreUnavailable(f"the commit's fences (or its slot's primary) kept changing under it "
                               f"({COMMIT_TRIES} tries)")

    async def commit_applied(self, once: str) -> bool:
        """Whether the commit that `CommitUncertain` named was applied (asked within
        `keys.COMMIT_ONCE_TTL_S` of it)."""
        return bool(await self.redis.exists(once))

    async def commit_by_slot(self, ops: Ops, *, leases: Sequence[str], owner: str) -> None:
        """`commit` ops of single-key commands (the key second). On a Redis Cluster, where a
        transaction keeps to one slot: one commit per slot, fenced by the leases in that
        slot; a slot none of them is in (a thread ref, the keys of a channel's own untagged
        stream) is committed unfenced, first. Elsewhere one commit."""
        if not self.cluster:
            await self.commit(ops, leases=leases, owner=owner)
            return
        by_slot = keys.by_slot(ops, lambda op: str(op[1]))
        fences = keys.by_slot(leases, str)
        for slot in sorted(by_slot, key=lambda slot: slot in fences):  # the unfenced first
            group = by_slot[slot]
            if slot not in fences and all(op[0] == "SET" for op in group):  # a thread ref: idempotent
                async with self.redis.pipeline(transaction=False) as pipe:
                    for op in group:
                        pipe.execute_command(*op)
                    await pipe.execute()
                continue
            await self.commit(group, leases=fences.get(slot, []), owner=owner)

    def leases(self, owner: str, streams: Sequence[str], *, ttl_s: float, role: str,
               fair_share: bool = True, leader: bool = False) -> Leases:
        """Leases on ``streams`` for ``owner`` (one consumer side per stream; see `Leases`)."""
        return Leases(self.redis, owner, streams, ttl_s=ttl_s, run_script=self.run_script, fair_share=fair_share,
                      role=role, leader=leader)

    @staticmethod
    def ack_ops(stream: str, group: str, entries: Sequence[Entry],
                        noted: dict[tuple[str, str], set[int]] | None = None) -> Ops:
        """Ack what a batch handled. A batch entry is acked once every message of it is
        done; until then the done ones are noted, so a read of it again leaves them out
        (`keys.parts_done`). What earlier commits noted is what the entry was read with
        (``Entry.done``), or, for a consumer whose commits each take some of an entry's
        messages without reading it again (the dispatcher), ``noted``: kept up to date
        here, by (stream, entry id), while it holds the stream."""
        whole: list[str] = []
        batches: dict[str, tuple[Entry, set[int], bool]] = {}  # id -> (an entry of it, done, any noted before)
        for entry in entries:
            if not entry.batch:
                whole.append(entry.id)
                continue
            if entry.batch not in batches:
                before = noted.get((stream, entry.batch)) if noted is not None else None
                done = set(entry.done if before is None else before)
                batches[entry.batch] = (entry, done, bool(done))
            batches[entry.batch][1].add(entry.index)
        ops: Ops = []
        for batch, (entry, done, noted_before) in batches.items():
            if len(done) < entry.parts:
                ops.append(("HSET", keys.parts_done(stream), batch, ",".join(map(str, sorted(done)))))
                if noted is not None:
                    noted[(stream, batch)] = done
                continue
            whole.append(batch)
            if noted_before:
                ops.append(("HDEL", keys.parts_done(stream), batch))
            if noted is not None:
                noted.pop((stream, batch), None)
        return [*ops, *variadic(("XACK", stream, group), whole)]

    @staticmethod
    def announce_ops(conversation_ids: Sequence[str]) -> Ops:
        """Tell consoles which conversations changed (pub/sub: best effort, not kept)."""
        if not conversation_ids:
            return []
        return [("PUBLISH", keys.FANOUT + "conversations", " ".join(dict.fromkeys(conversation_ids)))]

    # -- delivery records (the dispatcher's) -----------------------------------------

    @staticmethod
    def attempt_ops(stream: str, entry_id: str, due_ms: int) -> Ops:
        """A failed send attempt: counted, and its next try due at ``due_ms``."""
        return [["HINCRBY", keys.attempts(stream), entry_id, 1], ["ZADD", keys.retry_due(stream), due_ms, entry_id]]

    @staticmethod
    def attempts_done_ops(stream: str, entry_ids: Sequence[str]) -> Ops:
        if not entry_ids:
            return []
        return [*variadic(("HDEL", keys.attempts(stream)), entry_ids),
                *variadic(("ZREM", keys.retry_due(stream)), entry_ids)]

    @staticmethod
    def sent_ops(stream: str, day: int, sent: Sequence[tuple[str, str]], keep_days: int) -> Ops:
        """Remember (outbound message id, platform id) pairs in the stream's day bucket."""
        if not sent:
            return []
        bucket = keys.sent_day(stream, day)
        return [*variadic(("HSET", bucket), [x for pair in sent for x in pair], per=2),
                ("EXPIRE", bucket, str(keep_days * 86_400))]

    @staticmethod
    def park_ops(stream: str, lane: str, behind: str) -> Ops:
        return [["HSET", keys.parked(stream), lane, behind]]

    @staticmethod
    def unpark_ops(stream: str, lane: str) -> Ops:
        return [["HDEL", keys.parked(stream), lane]]

    async def parked(self, streams: Sequence[str]) -> dict[str, str]:
        """Parked lanes of outbound streams: lane -> the dead letter its later sends wait behind."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.hgetall(keys.parked(stream))
            found = await pipe.execute()
        return {k.decode(): v.decode() for lanes in found for k, v in lanes.items()}

    async def delivery_history(self, read: Sequence[tuple[str, Sequence[str], Sequence[str]]], days: Sequence[int]
                               ) -> tuple[dict[str, str], dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """For entries read before, as (stream, message ids, entry ids): which messages were
        sent (message id -> platform id), failed attempts and the next attempt's due time
        per (stream, entry id). One round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, message_ids, entry_ids in read:
                for day in days:
                    pipe.hmget(keys.sent_day(stream, day), message_ids)
                pipe.hmget(keys.attempts(stream), entry_ids)
                pipe.zmscore(keys.retry_due(stream), entry_ids)
            replies = iter(await pipe.execute())
        recorded: dict[str, str] = {}
        attempts: dict[tuple[str, str], int] = {}
        due: dict[tuple[str, str], int] = {}
        for stream, message_ids, entry_ids in read:
            for _ in days:
                for message_id, platform_id in zip(message_ids, next(replies), strict=True):
                    if platform_id is not None:
                        recorded[message_id] = platform_id.decode()
            tries, dues = next(replies), next(replies)
            attempts.update({(stream, e): int(t) for e, t in zip(entry_ids, tries, strict=True) if t is not None})
            due.update({(stream, e): int(d) for e, d in zip(entry_ids, dues or [], strict=False) if d is not None})
        return recorded, attempts, due

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # -- dead letters ----------------------------------------------------------------

    def dead_letter_ops(self, stream: str, group: str, entry: Entry, reason: str, lane: str = "") -> Ops:
        """Ops that copy one entry to the dead-letter stream; the caller acks it with the
        rest of its batch (`ack_ops`: a message of a batch entry is acked with the entry).
        ``lane`` names the outbound address whose later sends wait behind it (replayed together)."""
        return [
            ["XADD", keys.dead_letters(stream), "MAXLEN", "~", self.dead_letter_max_len, "*",
             "stream", stream, "group", group, "id", entry.id, "reason", reason[:2000],
             "at_ms", now_ms(), "lane", lane, "m", entry.payload or b""],
            ["HDEL", keys.attempts(stream), entry.id],
        ]

    async def dead_letter_streams(self) -> list[str]:
        return sorted([key.decode() async for key in self.redis.scan_iter(match=keys.DEAD_LETTER_STREAMS,
                                                                            count=1000, _type="stream")])

    async def dead_letters(self, count: int = 100) -> list[dict[str, Any]]:
        """The oldest ``count`` dead letters of every stream, oldest first. Each one's
        ``dlq_id`` names its source stream and its entry: ``in:{3.1}/1700000000000-0``."""
        streams = await self.dead_letter_streams()
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xrange(stream, count=count)
            pages = await pipe.execute()
        entries = [(entry_order(entry_id), stream, entry_id, fields)
                   for stream, page in zip(streams, pages, strict=True) for entry_id, fields in page]
        out = []
        for _, stream, entry_id, fields in sorted(entries, key=lambda e: e[0])[:count]:
            row = {k.decode(): v for k, v in fields.items()}
            source = stream.removeprefix(keys.dead_letters(""))
            out.append({
                "dlq_id": f"{source.removeprefix(keys.PREFIX)}/{entry_id.decode()}",
                "dlq_stream": stream,
                "dlq_entry": entry_id.decode(),
                "stream": row.get("stream", b"").decode(),
                "group": row.get("group", b"").decode(),
                "id": row.get("id", b"").decode(),
                "reason": row.get("reason", b"").decode(errors="replace"),
                "at_ms": int(row.get("at_ms", b"0")),
                "lane": row.get("lane", b"").decode(errors="replace"),
                "payload": row.get("m", b""),
            })
        return out

    async def replay(self, dlq_ids: Sequence[str] | None = None) -> int:
        """Put dead letters back on their source stream (all when no ids are given).

        An outbound dead letter brings every dead letter of its lane (the address whose later
        sends were held behind it) back with it, in their original stream order, so the
        customer receives them in the order they were written. The replayed entries carry a
        mark that tells the dispatcher the lane may go on."""
        chosen = self._with_lanes(await self.dead_letters(count=1_000_000), dlq_ids)
        replayable = [r for r in chosen if r["payload"] and r["stream"]]
        for rows in _by_stream(replayable).values():  # one transaction per stream: its letters share its slot
            async with self.redis.pipeline(transaction=True) as pipe:
                for row in rows:
                    pipe.xadd(row["stream"], {keys.PAYLOAD_FIELD: row["payload"], keys.REPLAY_FIELD: b"1"})
                    pipe.xdel(row["dlq_stream"], row["dlq_entry"])
                await pipe.execute()
        return len(replayable)

    async def drop(self, dlq_ids: Sequence[str]) -> int:
        """Delete dead letters for good. An outbound lane left with none goes on: a release
        mark is appended to its stream, so sends written after it are no longer held."""
        rows = await self.dead_letters(count=1_000_000)
        wanted = set(dlq_ids)
        dropped = [r for r in rows if r["dlq_id"] in wanted]
        left = {(r["stream"], r["lane"]) for r in rows if r["dlq_id"] not in wanted and r["lane"]}
        released = {(r["stream"], r["lane"]) for r in dropped if r["lane"]} - left
        for stream, rows in _by_stream(dropped).items():  # one transaction per stream, as for replay
            async with self.redis.pipeline(transaction=True) as pipe:
                for row in rows:
                    pipe.xdel(row["dlq_stream"], row["dlq_entry"])
                for lane in sorted(lane for s, lane in released if s == stream):
                    release = Message(kind="command", channel=keys.outbound_channel(stream),
                                      name=RELEASE_LANE, data={"lane": lane})
                    pipe.xadd(stream, {keys.PAYLOAD_FIELD: encode(release), keys.REPLAY_FIELD: b"1"})
                await pipe.execute()
        return len(dropped)

    @staticmethod
    def _with_lanes(rows: list[dict[str, Any]], dlq_ids: Sequence[str] | None) -> list[dict[str, Any]]:
        """The chosen rows plus every row of their lanes, each lane in original stream order."""
        if dlq_ids is None:
            chosen = rows
        else:
            wanted = set(dlq_ids)
            lanes = {(r["stream"], r["lane"]) for r in rows if r["dlq_id"] in wanted and r["lane"]}
            chosen = [r for r in rows if r["dlq_id"] in wanted or (r["stream"], r["lane"]) in lanes]

        def original_order(row: dict[str, Any]) -> tuple[str, int, int, int, str]:
            source, _, index = row["id"].partition("#")  # a message of a batch entry: <entry id>#<n>
            ms, _, seq = source.partition("-")
            return (row["stream"], int(ms or 0), int(seq or 0), int(index or 0), row["dlq_id"])

        return sorted(chosen, key=original_order)

    # -- housekeeping ----------------------------------------------------------------

    async def trim(self, stream: str, max_len: int) -> int:
        """Delete acknowledged entries once the stream is longer than ``max_len``.

        Unlike XTRIM MAXLEN/MINID, never deletes an entry that is pending or not yet
        delivered to some group.
        """
        return int(await self._trim(keys=[stream], args=[max_len]))

    async def scrub(self, needles: Sequence[str], chunk: int = 1000,
                    keep: Callable[[bytes, list[bytes]], bytes | None] | None = None) -> int:
        """Delete every entry of every bridge stream that holds one of ``needles`` as a whole
        string (conversation ids, addresses, an email: a data-protection erasure). An entry
        holding other people's records too (a commit's turns) is written again without the
        needles' ones: ``keep`` gives that payload (None: nothing to keep), from the entry's
        payload and the needles as packed. Returns how many entries were deleted."""
        packed = [pack(n) for n in needles if n]
        deleted = 0
        async for key in self.redis.scan_iter(match=keys.PREFIX + "*", count=1000, _type="stream"):
            start = "-"
            while True:
                rows = await self.redis.xrange(key, min=start, count=chunk)
                doomed = [(eid, fields) for eid, fields in rows
                          if any(p in value for value in fields.values() for p in packed)]
                if doomed:
                    rewritten: list[dict[str, bytes]] = []
                    for eid, fields in doomed:
                        payload = fields.get(_PAYLOAD_FIELD)
                        if _BATCH_FIELD in fields:
                            batch = await self._batch_left(key, _text(eid), fields[_BATCH_FIELD], packed)
                            if batch is not None:
                                rewritten.append(batch)
                        elif keep is not None and payload and (kept := keep(payload, packed)) is not None:
                            rewritten.append({keys.PAYLOAD_FIELD: kept})
                    async with self.redis.pipeline(transaction=True) as pipe:
                        for fields in rewritten:  # at the stream's end: its order among the others is lost
                            pipe.xadd(key, fields)
                        pipe.xdel(key, *[eid for eid, _ in doomed])
                        if batch_ids := [eid for eid, fields in doomed if _BATCH_FIELD in fields]:
                            pipe.hdel(keys.parts_done(key), *batch_ids)
                        deleted += int((await pipe.execute())[len(rewritten)])
                if len(rows) < chunk:
                    break
                start = "(" + _text(rows[-1][0])
        return deleted

    async def _batch_left(self, stream: str, entry_id: str, blob: bytes, packed: list[bytes]
                          ) -> dict[str, bytes] | None:
        """What an erasure keeps of a publish batch entry (`scrub`): the others' messages the
        engine has not handled yet (a batch entry it acked has none), as the fields of an
        entry that takes its place; None: nothing."""
        try:
            parts = batch_payloads(blob)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        handled: set[int] | None = None  # what the stream's one consumer group handled of it
        for group in await self.redis.xinfo_groups(stream):
            name = _text(group["name"])
            if entry_order(entry_id.encode()) > entry_order(_text(group["last-delivered-id"]).encode()):
                handled = set()  # not read yet
            elif await self.redis.xpending_range(stream, name, min=entry_id, max=entry_id, count=1):
                done = await self.redis.hget(keys.parts_done(stream), entry_id)
                handled = {int(n) for n in done.split(b",")} if done else set()
            else:
                return None  # read and acked: all handled
        left = [part for n, part in enumerate(parts)
                if n not in (handled or ()) and not any(p in part for p in packed)]
        if not left:
            return None
        return {keys.PAYLOAD_FIELD: left[0]} if len(left) == 1 else {keys.BATCH_FIELD: encode_batch(left)}

    async def fire_timers(self, partition: int, now: int, limit: int = 500) -> int:
        return int(await self._fire_timers(keys=[keys.timers(partition, self.partitions),
                                                 keys.inbound(partition, self.partitions)],
                                           args=[now, limit]))


def _by_stream(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["stream"], []).append(row)
    return grouped


def _fields(raw: Any) -> dict[bytes, bytes] | None:
    """An entry's fields as Redis sends them ([name, value, ...]; None when deleted)."""
    return None if raw is None else dict(zip(raw[::2], raw[1::2], strict=True))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry_ms(entry_id: Any) -> int:
    return int(_text(entry_id).split("-", 1)[0])


def consumer_name() -> str:
    import os
    import socket

    return f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"
