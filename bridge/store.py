"""The conversation store: contacts, conversations and transcripts in Redis.

Writes are produced as command lists (`*_ops`) so the engine can commit everything one
message causes in one atomic call; reads are plain async methods (`ConversationReader`).
"""

from __future__ import annotations

import builtins
import collections.abc
import heapq
import itertools
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import WatchError

from bridge import keys
from bridge.connection import Script, mget
from bridge.contactwrites import SCRIPT as WRITE_CONTACTS
from bridge.contactwrites import ContactWrites
from bridge.effects import Effects
from bridge.history.record import (
    RECORD_VERSION,
    REFS_KIND,
    RefsRecord,
    TurnRecord,
    encode_refs,
    encode_turns,
)
from bridge.model import (
    Contact,
    Conversation,
    Message,
    address_hash,
    conversation_hash,
    conversation_number,
    decode,
    decode_contact,
    decode_conversation,
    encode,
    encode_batch,
    encode_record,
    entry_order,
    new_id,
    now_ms,
    partition_of,
)
from bridge.ops import Ops, variadic
from bridge.storearchive import Archive, Retained
from bridge.storeerrors import typed_store_errors

_DROP_ARCHIVED = """
-- KEYS: conversation, transcript, resolved zset, the conversation's ref set. ARGV: the
-- state checked against SQL, id, then the thread refs SQL holds for it. Dropped only when
-- the state is as checked and SQL holds every ref written for it (the refs' own keys are
-- in other slots: they go after, `_DROP_REF`).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local in_sql = {}
for i = 3, #ARGV do in_sql[ARGV[i]] = true end
for _, ref in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  if not in_sql[ref] then return 0 end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
"""

_DROP_REF = """
-- KEYS: a thread ref. ARGV: the conversation it must still name to go.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Saves:
    """What one commit writes once for its whole batch: each conversation as its last turn
    left it (one MSET and one ZADD per status instead of a SET and a ZADD per turn), the
    outbound messages as one entry a stream and, with history on, the turns' records as
    one outbox entry (one XADD instead of one per message or turn). Its contact changes
    are written before the commit (`contacts`, `Store.write_contacts`)."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.contacts = ContactWrites()
        self._saved: dict[str, tuple[str, int, bytes]] = {}  # id -> (status, updated ms, record)
        self._left: dict[str, set[str]] = {}  # id -> the statuses it left in the batch
        self._before: dict[str, tuple[str | None, int]] = {}  # id -> (status, updated ms) before the batch
        self._opened: Ops = []
        self._turns: dict[str, builtins.list[TurnRecord]] = {}  # outbox stream -> its turns, in order
        self._outbound: dict[str, builtins.list[bytes]] = {}  # outbound stream -> its messages, in order

    def add(self, conversation: Conversation, previous_status: str | None, record: bytes,
            previous_updated_ms: int = 0) -> None:
        """``previous_updated_ms``: when the conversation was updated before this turn (0:
        not known, the index is written)."""
        self._saved[conversation.id] = (conversation.status, conversation.updated_ms, record)
        self._before.setdefault(conversation.id, (previous_status, previous_updated_ms))  # as the index has it
        if previous_status is None:  # new: its address now points to it
            pointer = keys.current_conversation(conversation.channel, conversation.address, self.partitions)
            self._opened.append(("SET", pointer, conversation.id))
        elif previous_status != conversation.status:
            self._left.setdefault(conversation.id, set()).add(previous_status)

    def record(self, outbox: str, turn: TurnRecord) -> None:
        self._turns.setdefault(outbox, []).append(turn)

    def send(self, outbound: str, message: bytes) -> None:
        """An outbound message: the batch's messages to one stream are one entry."""
        self._outbound.setdefault(outbound, []).append(message)

    def ops(self) -> Ops:
        ops = self._opened[:]
        items = list(self._saved.items())
        by_status: dict[str, list[str]] = {}
        left: dict[str, list[str]] = {}
        for conversation_id, (status, updated_ms, _) in items:
            index = keys.status_index(conversation_id, status, self.partitions)
            if not _indexed_already(self._before[conversation_id], status, updated_ms):
                by_status.setdefault(index, []).extend((str(updated_ms), conversation_id))
            for gone in self._left.get(conversation_id, ()):
                if gone != status:  # it may have come back within the batch
                    left.setdefault(keys.status_index(conversation_id, gone, self.partitions), []).append(
                        conversation_id)
        ops += variadic(("MSET",), [a for i, (_, _, record) in items
                                    for a in (keys.conversation(i, self.partitions), record)], per=2)
        for index, pairs in by_status.items():
            ops += variadic(("ZADD", index), pairs, per=2)
        for index, ids in left.items():
            ops += variadic(("ZREM", index), ids)
        for stream, turns in self._turns.items():
            ops.append(("XADD", stream, "*", keys.PAYLOAD_FIELD, encode_turns(turns)))
        for stream, messages in self._outbound.items():
            for first in range(0, len(messages), keys.BATCH_MAX):
                some = messages[first:first + keys.BATCH_MAX]
                ops.append(("XADD", stream, "*", *((keys.PAYLOAD_FIELD, some[0]) if len(some) == 1 else
                                                   (keys.BATCH_FIELD, encode_batch(some)))))
        return ops


def _indexed_already(before: tuple[str | None, int], status: str, updated_ms: int) -> bool:
    """Whether the status index may keep the score it has: the status did not change and
    the conversation was updated within the same `keys.INDEX_GRAIN_MS` as the score. A
    busy conversation's turns then write its score once a grain instead of every time (a
    sorted set of fewer than 128 members is a list Redis walks on each write)."""
    status_before, updated_before = before
    return (status_before == status and updated_before > 0
            and updated_before // keys.INDEX_GRAIN_MS == updated_ms // keys.INDEX_GRAIN_MS)


@typed_store_errors
class Store:
    """Conversation store on one Redis; also the `ConversationReader` given to adapters.
    A Redis that does not answer raises `StoreUnavailable`."""

    def __init__(self, redis: Redis, *, partitions: int, outbox: bool = False, archive: Archive | None = None) -> None:
        self.redis = redis
        self.partitions = partitions  # a conversation's keys carry its partition's tag
        self.outbox = outbox  # history is on: each turn also appends its record to the partition's outbox
        # the SQL record, where conversations closed long ago and their customers are found
        # (and loaded back) once retention dropped them from Redis; asked only on a Redis miss
        self.archive = archive
        self.retained = Retained(redis, archive, partitions) if archive is not None else None
        self._drop = Script(redis, _DROP_ARCHIVED)
        self._drop_ref = Script(redis, _DROP_REF)
        self._write_contacts = Script(redis, WRITE_CONTACTS)

    # -- reads -----------------------------------------------------------------------

    async def get(self, conversation_id: str, *, load_back: bool = False) -> Conversation | None:
        return (await self.get_many([conversation_id], load_back=load_back))[0]

    async def get_many(self, conversation_ids: builtins.list[str], *,
                       load_back: bool = False) -> builtins.list[Conversation | None]:
        """Conversations by id; one retention dropped from Redis is read from the SQL record,
        and with ``load_back`` (the engine, about to write to it) put back into Redis."""
        if not conversation_ids:
            return []
        raws = await mget(self.redis, [keys.conversation(c, self.partitions) for c in conversation_ids])
        found = [decode_conversation(r) if r else None for r in raws]
        missing = [i for i, conversation in zip(conversation_ids, found, strict=True) if conversation is None]
        if missing and self.archive is not None:
            return await self._from_archive(conversation_ids, found, missing, load_back)
        return found

    async def _from_archive(self, conversation_ids: builtins.list[str], found: builtins.list[Conversation | None],
                            missing: builtins.list[str], load_back: bool) -> builtins.list[Conversation | None]:
        """Conversations retention dropped from Redis, from the SQL record (one query for
        all); with ``load_back`` put back (unless someone put them back first) and read again."""
        assert self.archive is not None and self.retained is not None
        archived = await self.archive.conversations(missing)
        if not archived:
            return found
        if load_back:
            await self.retained.load_back(builtins.list(archived.values()))
            raws = await mget(self.redis, [keys.conversation(c, self.partitions) for c in archived])
            archived.update({c: decode_conversation(r) for c, r in zip(archived, raws, strict=True) if r})
        return [c if c is not None else archived.get(i) for i, c in zip(conversation_ids, found, strict=True)]

    async def returning(self, addresses: builtins.list[tuple[str, str]],
                        emails: builtins.list[str]) -> builtins.list[str | None]:
        """For addresses Redis has no conversation pointer for: the latest conversation
        the record holds, loaded back with its contact and counter, and the contacts of
        ``emails`` (the engine, before it opens conversations for new addresses)."""
        if self.retained is None or not addresses:
            return [None] * len(addresses)
        return await self.retained.returning(addresses, emails)

    async def for_address(self, channel: str, address: str) -> Conversation | None:
        conversation_id = await self.redis.get(keys.current_conversation(channel, address, self.partitions))
        if conversation_id:
            return await self.get(conversation_id.decode())
        if self.archive is not None:  # its customer has not written since retention: a look at the record
            found = (await self.archive.by_address([(channel, address)]))[(channel, address)]
            return found[-1] if found else None
        return None

    async def by_ref(self, ref: str) -> str | None:
        """The conversation a thread ref names; one retention dropped is found in the record."""
        value = await self.redis.get(keys.ref(ref))
        if value:
            return str(value, "utf-8")
        return (await self.archived_refs([ref])).get(ref)

    async def archived_refs(self, refs: builtins.list[str]) -> dict[str, str]:
        """Refs Redis has no key for, looked up in the record (one query) and loaded back
        for a while; {} without a record or while it does not answer (`Bus` resolver)."""
        if self.retained is None or not refs:
            return {}
        return await self.retained.refs_back(refs)

    async def list(self, status: str | None = None, limit: int = 100) -> builtins.list[Conversation]:
        """The ``limit`` most recently updated conversations (with ``status``, or any)."""
        statuses = [status] if status else keys.STATUSES
        async with self.redis.pipeline(transaction=False) as pipe:
            for s in statuses:
                for p in range(self.partitions):
                    pipe.zrevrange(keys.by_status(s, p, self.partitions), 0, limit - 1, withscores=True)
            pages = await pipe.execute()
        newest = heapq.nlargest(limit, (pair for page in pages for pair in page), key=lambda pair: pair[1])
        found = [c for c in await self.get_many([i.decode() for i, _ in newest]) if c is not None]
        found.sort(key=lambda c: c.updated_ms, reverse=True)
        return found[:limit]

    async def ids_with_status(self, status: str) -> builtins.list[str]:
        """Every conversation id with ``status``, least recently updated first."""
        return [i for i, _ in await self._oldest(status, "+inf", None)]

    async def count_with_status(self, status: str) -> int:
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(self.partitions):
                pipe.zcard(keys.by_status(status, p, self.partitions))
            return sum(await pipe.execute())

    async def _oldest(self, status: str, until_ms: float | str,
                      limit: int | None) -> builtins.list[tuple[str, float]]:
        """(id, updated ms) of conversations with ``status`` updated at ``until_ms`` or
        before, least recently updated first, ``limit`` at most: each partition's, merged."""
        page = {} if limit is None else {"start": 0, "num": limit}
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(self.partitions):
                pipe.zrangebyscore(keys.by_status(status, p, self.partitions), "-inf", until_ms, withscores=True,
                                   **page)
            pages = await pipe.execute()
        merged = heapq.merge(*pages, key=lambda pair: pair[1])
        return [(i.decode(), score) for i, score in itertools.islice(merged, limit)]

    async def transcript(self, conversation_id: str, limit: int = 200) -> builtins.list[Message]:
        raws = await self.redis.lrange(keys.transcript(conversation_id, self.partitions), -limit, -1)
        if not raws and self.archive is not None:  # dropped from Redis: the record has it
            return (await self.archive.transcripts([conversation_id]))[conversation_id][-limit:]
        return [decode(r) for r in raws]

    # -- retention: closed conversations leave Redis once they are in SQL -------------

    async def resolved_before(self, cutoff_ms: int, limit: int) -> builtins.list[tuple[str, bytes, int]]:
        """Resolved conversations last updated before ``cutoff_ms``: (id, state as stored,
        transcript length), oldest first."""
        ids = [i for i, _ in await self._oldest("resolved", cutoff_ms, limit)]
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.get(keys.conversation(i, self.partitions))
                pipe.llen(keys.transcript(i, self.partitions))
            replies = await pipe.execute()
        return [(i, replies[2 * n], int(replies[2 * n + 1])) for n, i in enumerate(ids) if replies[2 * n]]

    async def drop_archived(self, conversation_id: str, stored: bytes,
                            refs: collections.abc.Sequence[str] = ()) -> bool:
        """Drop a conversation's state, transcript and thread refs from Redis if its state
        is still ``stored`` (not written since it was checked against SQL) and every ref
        written for it is among ``refs`` (those SQL holds); a later lookup loads it back
        from SQL. Its address and contact go separately (`retained`)."""
        state, transcript, ref_set = keys.conversation_keys(conversation_id, self.partitions)
        resolved = keys.status_index(conversation_id, "resolved", self.partitions)
        if not await self._drop(keys=[state, transcript, resolved, ref_set], args=[stored, conversation_id, *refs]):
            return False
        for ref in refs:  # one at a time: each in its own slot (one left behind names a conversation SQL has)
            await self._drop_ref(keys=[keys.ref(ref)], args=[conversation_id])
        return True

    async def trim_queues(self, queues: builtins.list[str], before_ms: int) -> int:
        """Drop the email queues' cases filed before ``before_ms`` (entry ids carry the time
        they were filed); returns how many."""
        if not queues:
            return 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in queues:
                for p in range(self.partitions):
                    pipe.xtrim(keys.queue(name, p, self.partitions), minid=max(0, before_ms))
            return sum(int(n) for n in await pipe.execute())

    async def queued(self, name: str) -> builtins.list[Message]:
        """Every case filed in email queue ``name`` that Redis holds, oldest first."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(self.partitions):
                pipe.xrange(keys.queue(name, p, self.partitions))
            pages = await pipe.execute()
        entries = heapq.merge(*pages, key=lambda entry: entry_order(entry[0]))
        return [decode(fields[keys.PAYLOAD_FIELD.encode()]) for _, fields in entries]

    async def contact_records(self, contact_ids: builtins.list[str]) -> builtins.list[bytes | None]:
        """Contacts as stored (retention compares them with SQL before dropping them)."""
        return builtins.list(await self.redis.mget([keys.contact(c) for c in contact_ids]))

    async def erased(self, contact_ids: builtins.list[str]) -> set[str]:
        """Those of the contacts an erasure marked in the last ``keys.ERASED_MARK_S`` (one MGET)."""
        if not contact_ids:
            return set()
        marks = await self.redis.mget([keys.erased(c) for c in contact_ids])
        return {c for c, mark in zip(contact_ids, marks, strict=True) if mark}

    async def contact(self, contact_id: str, *, archive: bool = True) -> Contact | None:
        (found,) = await self.contacts_many([contact_id], archive=archive)
        return found

    async def contacts_many(self, contact_ids: builtins.list[str], *,
                            archive: bool = True) -> builtins.list[Contact | None]:
        """Contacts with what agents keep about their person (fields, links): two round
        trips, a third when some are linked. One retention dropped from Redis is read from
        the record (``archive``), not put back: agents kept nothing about it."""
        if not contact_ids:
            return []
        raws = await self.redis.mget([keys.contact(c) for c in contact_ids]
                                     + [keys.contact_person(c) for c in contact_ids])
        found = [decode_contact(r) if r else None for r in raws[:len(contact_ids)]]
        if archive and self.archive is not None and None in found:
            archived = await self.archive.contacts([c for c, f in zip(contact_ids, found, strict=True) if f is None])
            found = [f or archived.get(c) for c, f in zip(contact_ids, found, strict=True)]
        heads = {c.id: (p.decode() if p else "") for c, p in zip(found, raws[len(contact_ids):], strict=True) if c}
        people = builtins.list(dict.fromkeys(h or i for i, h in heads.items()))
        async with self.redis.pipeline(transaction=False) as pipe:
            for person in people:
                pipe.hgetall(keys.contact_fields(person))
                pipe.smembers(keys.contact_members(person))
            replies = await pipe.execute()
        own = {p: _fields(replies[2 * n]) for n, p in enumerate(people)}
        members = {p: sorted(m.decode() for m in replies[2 * n + 1]) for n, p in enumerate(people)}
        others = builtins.list(dict.fromkeys(m for p in people for m in members[p]))
        if others:
            async with self.redis.pipeline(transaction=False) as pipe:
                for member in others:
                    pipe.hgetall(keys.contact_fields(member))
                own.update(zip(others, (_fields(r) for r in await pipe.execute()), strict=True))
        for contact in found:
            if contact is not None:
                person = heads[contact.id] or contact.id
                contact.person = heads[contact.id]
                # the person's first contact's fields, gaps filled by the others' (each keeps
                # its own, so an unlink leaves every contact as it was); "" set on the first
                # contact hides the others' value
                merged: dict[str, str] = {}
                for member in [person, *members[person]]:
                    for name, value in own[member].items():
                        merged.setdefault(name, value)
                contact.fields = {k: v for k, v in merged.items() if v}
                contact.linked = [c for c in [person, *members[person]] if c != contact.id] \
                    if members[person] else []
        return found

    async def cache_revs(self) -> tuple[int, tuple[int, ...]]:
        """How many times a known contact changed (fields, links, a new address) and how
        many erasures each partition saw: cached contacts are good while the first stays
        the same, a partition's cached conversations while its count does."""
        contacts, *erasures = await mget(self.redis, [keys.CONTACTS_REV, *(
            keys.erasures_rev(p, self.partitions) for p in range(self.partitions))])
        return int(contacts or 0), tuple(int(e or 0) for e in erasures)

    async def person_of(self, contact_id: str) -> str:
        """The first contact of the person ``contact_id`` belongs to (itself when not linked)."""
        raw = await self.redis.get(keys.contact_person(contact_id))
        return raw.decode() if raw else contact_id

    async def contact_events(self, contact_ids: builtins.list[str], limit: int = 50) -> builtins.list[bytes]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for contact_id in contact_ids:
                pipe.lrange(keys.contact_events(contact_id), 0, limit - 1)
            return [raw for found in await pipe.execute() for raw in found]

    async def conversations_of(self, addresses: builtins.list[str],
                               per_address: int = 20) -> builtins.list[Conversation]:
        """The latest conversations of each ``<channel>:<address>`` (ids are ``<hash>-<n>``)."""
        pairs = [(a.split(":", 1)[0], a.split(":", 1)[1]) for a in addresses if ":" in a]
        hashes = [address_hash(c, a) for c, a in pairs]
        if not hashes:
            return []
        counts = await mget(self.redis, [keys.conversation_seq(h, self.partitions) for h in hashes])
        ids = [f"{h}-{n}" for h, count in zip(hashes, counts, strict=True) if count
               for n in range(int(count), max(0, int(count) - per_address), -1)]
        found = [c for c in await self.get_many(ids) if c is not None]
        forgotten = [p for p, count in zip(pairs, counts, strict=True) if not count]
        if forgotten and self.archive is not None:  # retention dropped the address: the record has it
            for conversations in (await self.archive.by_address(forgotten)).values():
                found.extend(conversations[-per_address:])
        return found

    # -- what agents change about a person: applied at once, not through the engine -------

    async def set_contact_fields(self, person: str, changes: dict[str, str],
                                 events: builtins.list[tuple[str, bytes]]) -> None:
        """Set fields of a person ("" clears one, and hides the linked contacts' value) and
        record ``events`` ((contact id, event) pairs), in one transaction."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.contact_fields(person), mapping=changes)
            self._events(pipe, events)
            await pipe.execute()

    async def link_contacts(self, contact_id: str, other_id: str,
                            events: builtins.list[tuple[str, bytes]]) -> bool:
        """Make ``other_id``'s person (every contact linked with it) part of
        ``contact_id``'s, and record ``events``; False when they already were one."""
        while True:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(keys.contact_person(contact_id), keys.contact_person(other_id))
                    person = await self.person_of(contact_id)
                    other = await self.person_of(other_id)
                    if person == other:
                        return False
                    await pipe.watch(keys.contact_members(person), keys.contact_members(other))
                    moving = [other, *(m.decode() for m in await self.redis.smembers(keys.contact_members(other)))]
                    pipe.multi()
                    for member in moving:
                        pipe.set(keys.contact_person(member), person)
                    pipe.sadd(keys.contact_members(person), *moving)
                    pipe.delete(keys.contact_members(other))
                    self._events(pipe, events)
                    await pipe.execute()
                    return True
                except WatchError:
                    continue

    async def unlink_contact(self, contact_id: str, events: builtins.list[tuple[str, bytes]]) -> str:
        """Take ``contact_id`` out of its person (the others stay linked; when it was the
        person's first contact, the next one takes its place). Returns the person it left,
        or "" when it was not linked."""
        while True:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(keys.contact_person(contact_id), keys.contact_members(contact_id))
                    person = await self.person_of(contact_id)
                    await pipe.watch(keys.contact_members(person))
                    members = sorted(m.decode() for m in await self.redis.smembers(keys.contact_members(person)))
                    if not members:
                        return ""
                    pipe.multi()
                    if person == contact_id:
                        head, rest = members[0], members[1:]
                        pipe.delete(keys.contact_members(contact_id), keys.contact_person(head))
                        for member in rest:
                            pipe.set(keys.contact_person(member), head)
                        if rest:
                            pipe.sadd(keys.contact_members(head), *rest)
                    else:
                        pipe.srem(keys.contact_members(person), contact_id)
                        pipe.delete(keys.contact_person(contact_id))
                    self._events(pipe, events)
                    await pipe.execute()
                    return person
                except WatchError:
                    continue

    @classmethod
    def _events(cls, pipe: Any, events: builtins.list[tuple[str, bytes]]) -> None:
        for command, *args in cls.contact_event_ops(events):
            pipe.execute_command(command, *args)

    async def current_ids(self, addresses: builtins.list[tuple[str, str]]) -> builtins.list[str | None]:
        """Current conversation id of each (channel, address), in one round trip."""
        if not addresses:
            return []
        raws = await mget(self.redis, [keys.current_conversation(c, a, self.partitions) for c, a in addresses])
        return [r.decode() if r else None for r in raws]

    async def contact_ids_for(self, addresses: builtins.list[tuple[str, str]], *,
                              archive: bool = False) -> builtins.list[str | None]:
        """The contact of each (channel, address); with ``archive`` the record is asked for
        those Redis has none for (retention may have dropped them)."""
        if not addresses:
            return []
        raws = await self.redis.mget([keys.contact_by_address(c, a) for c, a in addresses])
        found = [r.decode() if r else None for r in raws]
        if archive and self.archive is not None and None in found:
            names = [f"{c}:{a}" for c, a in addresses]
            archived = await self.archive.contact_ids(addresses=[n for n, f in zip(names, found, strict=True) if not f])
            found = [f or archived.get(n) for n, f in zip(names, found, strict=True)]
        return found

    async def contact_id_by_email(self, email: str, *, archive: bool = False) -> str | None:
        """The contact of an email; with ``archive`` the record is asked when Redis has none."""
        (found,) = await self.contact_ids_by_email([email], archive=archive)
        return found

    async def contact_ids_by_email(self, emails: builtins.list[str], *,
                                   archive: bool = False) -> builtins.list[str | None]:
        """The contact of each email, in one round trip; with ``archive`` the record is
        asked for those Redis has none for."""
        if not emails:
            return []
        found = [str(r, "utf-8") if r else None for r in await self.redis.mget([keys.contact_by_email(e)
                                                                               for e in emails])]
        if archive and self.archive is not None and None in found:
            archived = await self.archive.contact_ids(emails=[e for e, f in zip(emails, found, strict=True) if not f])
            found = [f or archived.get(e.strip().lower()) for e, f in zip(emails, found, strict=True)]
        return found

    async def next_conversation_numbers(self, address_hashes: builtins.list[str]) -> builtins.list[int]:
        if self.retained is not None:  # a counter retention dropped goes on from the record's
            return await self.retained.next_numbers(address_hashes)
        async with self.redis.pipeline(transaction=False) as pipe:
            for h in address_hashes:
                pipe.incr(keys.conversation_seq(h, self.partitions))
            return [int(n) for n in await pipe.execute()]

    # -- writes, as ops for one atomic commit ----------------------------------------

    def effect_ops(self, effects: Effects, saves: Saves) -> Ops:
        """The commands that write what one message caused (see `Effects`), with history on
        its turn's record for the projector. The conversation's state, the turn's record and
        contact changes go to ``saves`` (written once for the batch: the contacts before its
        commit, the rest at its end)."""
        conversation = effects.conversation
        partition = keys.conversation_partition(conversation.id, self.partitions)  # its timers fire there
        kept = [m if isinstance(m, bytes) else encode(m) for m in effects.kept]
        ops = self.transcript_ops(conversation.id, *kept)
        for out in effects.outbound:
            saves.send(keys.outbound(out.channel, partition, self.partitions), encode(out))
        for queue, case in effects.queued:
            ops.append(["XADD", keys.queue(queue, partition, self.partitions),
                        "MAXLEN", "~", keys.QUEUE_MAX_LEN // self.partitions, "*", keys.PAYLOAD_FIELD, encode(case)])
        for due_ms, command in effects.timers:
            ops.append(["ZADD", keys.timers(partition, self.partitions), due_ms, encode(command)])
        contact = encode_record(effects.contact.record()) if effects.contact is not None else None
        if effects.contact is not None and contact is not None:
            saves.contacts.save(effects.contact, contact, shared=effects.contact_shared)
        if effects.contact_events:
            saves.contacts.record(effects.cause.id if effects.cause is not None else new_id(), effects.contact_events)
        record = encode_record(conversation)
        saves.add(conversation, effects.previous_status, record, effects.previous_updated_ms)
        if self.outbox:
            saves.record(keys.outbox(partition, self.partitions), self.turn_record(effects, record, kept, contact))
        return ops

    @staticmethod
    def turn_record(effects: Effects, conversation: bytes, kept: builtins.list[bytes],
                    contact: bytes | None) -> TurnRecord:
        cause, by = effects.cause, ""
        if cause is not None and cause.sender is not None:
            by = cause.sender.name or cause.sender.username or cause.sender.id
        return TurnRecord(v=RECORD_VERSION, id=new_id(), at_ms=effects.conversation.updated_ms,
                          conversation=msgspec.Raw(conversation), kept=list(map(msgspec.Raw, kept)),
                          contacts=[msgspec.Raw(contact)] if contact is not None else [],
                          previous_status=effects.previous_status,
                          cause=f"{cause.kind}:{cause.name}" if cause is not None else "", by=by)

    def save_ops(self, conversation: Conversation, previous_status: str | None,
                 record: bytes | None = None) -> Ops:
        saves = Saves(self.partitions)
        saves.add(conversation, previous_status, record or encode_record(conversation))
        return saves.ops()

    def transcript_ops(self, conversation_id: str, *messages: Message | bytes) -> Ops:
        """Append to the transcript, in one RPUSH; bytes are a message already encoded (as
        read from a stream)."""
        if not messages:
            return []
        payloads = [m if isinstance(m, bytes) else encode(m) for m in messages]
        return [("RPUSH", keys.transcript(conversation_id, self.partitions), *payloads)]

    async def write_contacts(self, writes: ContactWrites) -> None:
        """A batch's contact changes, in one script in the contacts' slot (see
        `bridge.contactwrites`), before the partition's commit."""
        if writes:
            names, args = writes.script_args()
            await self._write_contacts(keys=names, args=args)

    @staticmethod
    def contact_event_ops(events: builtins.list[tuple[str, bytes]]) -> Ops:
        """Record (contact id, event) pairs in the contacts' histories; every engine reads
        its cached contacts again."""
        ops: Ops = []
        for contact_id, event in events:
            ops.append(["LPUSH", keys.contact_events(contact_id), event])
            ops.append(["LTRIM", keys.contact_events(contact_id), 0, keys.CONTACT_EVENTS_MAX - 1])
        return [*ops, ["INCR", keys.CONTACTS_REV]]

    @staticmethod
    def ref_ops(ref: str, conversation_id: str, partitions: int) -> Ops:
        """The ref, and its place in the conversation's ref set (retention drops them together)."""
        return [("SET", keys.ref(ref), conversation_id),
                ("SADD", keys.conversation_refs(conversation_id, partitions), ref)]

    @staticmethod
    def refs_record_ops(refs: builtins.list[tuple[str, str]], partitions: int,
                        at_ms: int) -> Ops:
        """With history on: refs (ref, conversation id) a send returned, as one record per
        partition's outbox, for the projector (the engine's refs ride in its turn records)."""
        by_partition: dict[int, builtins.list[tuple[str, str]]] = {}
        for ref, conversation_id in refs:
            by_partition.setdefault(partition_of(conversation_hash(conversation_id), partitions), []).append(
                (ref, conversation_id))
        return [["XADD", keys.outbox(p, partitions), "*", keys.PAYLOAD_FIELD,
                 encode_refs(RefsRecord(kind=REFS_KIND, id=new_id(), at_ms=at_ms, refs=found))]
                for p, found in sorted(by_partition.items())]

    async def ref_batches(self, count: int = 500) -> collections.abc.AsyncIterator[builtins.list[tuple[str, str]]]:
        """Every thread ref Redis holds, with its conversation id, a batch at a time."""
        prefix = len(keys.ref(""))
        batch: builtins.list[str] = []
        async for key in self.redis.scan_iter(match=keys.ref("*"), count=1000):
            batch.append(key.decode())
            if len(batch) >= count:
                yield await self._with_targets(batch, prefix)
                batch = []
        if batch:
            yield await self._with_targets(batch, prefix)

    async def _with_targets(self, ref_keys: builtins.list[str], prefix: int) -> builtins.list[tuple[str, str]]:
        values = await mget(self.redis, ref_keys)
        return [(k[prefix:], v.decode()) for k, v in zip(ref_keys, values, strict=True) if v]

    async def adopt_refs(self, refs: builtins.list[tuple[str, str]]) -> None:
        """Refs written before conversations had ref sets, now in SQL: put in their
        conversation's set (retention drops them with it), or dropped at once when
        retention already dropped the conversation (a lookup finds them in SQL)."""
        if not refs:
            return
        held = await mget(self.redis, [keys.conversation(c, self.partitions) for _, c in refs])
        async with self.redis.pipeline(transaction=False) as pipe:
            for (ref, conversation_id), state in zip(refs, held, strict=True):
                if state:
                    pipe.sadd(keys.conversation_refs(conversation_id, self.partitions), ref)
                else:
                    pipe.delete(keys.ref(ref))
            await pipe.execute()

    async def scan_ids(self, kind: str) -> collections.abc.AsyncIterator[str]:
        """Every conversation (``kind="conversation"``) or contact id Redis holds, in no order."""
        if kind == "conversation":
            async for key in self.redis.scan_iter(match=keys.CONVERSATIONS, count=1000):
                yield keys.tagged_id(key.decode())
            return
        prefix = len(keys.contact(""))
        async for key in self.redis.scan_iter(match=keys.contact("*"), count=1000):
            yield key.decode()[prefix:]

    # -- data-protection requests (bridge/history/privacy.py) --------------------------

    async def conversation_ids_of(self, addresses: builtins.list[str]) -> builtins.list[str]:
        """Every conversation id given to these "<channel>:<address>"es (``<address hash>-<n>``)
        whose state or transcript Redis still holds, oldest first. Found by SCAN, not by
        counting up to the address's counter: a counter may hold a clock floor (after an
        erasure, or numbered while the record was away)."""
        found: dict[str, None] = {}
        for h in dict.fromkeys(address_hash(*a.split(":", 1)) for a in addresses if ":" in a):
            ids: set[str] = set()
            # one pass over the keyspace for both kinds of key (a SCAN reads every key)
            async for name in self.redis.scan_iter(match=f"{keys.PREFIX}*:{h}-*", count=1000):
                key = name.decode()
                conversation_id = keys.tagged_id(key)
                if conversation_number(conversation_id) and key in (keys.conversation(conversation_id, self.partitions),
                                                                    keys.transcript(conversation_id, self.partitions)):
                    ids.add(conversation_id)
            found.update(dict.fromkeys(sorted(ids, key=conversation_number)))
        return list(found)

    async def refs_of(self, conversation_ids: builtins.list[str]) -> dict[str, builtins.list[str]]:
        """The thread refs written for each conversation that has any in Redis."""
        if not conversation_ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in conversation_ids:
                pipe.smembers(keys.conversation_refs(i, self.partitions))
            found = await pipe.execute()
        return {i: sorted(r.decode() for r in refs) for i, refs in zip(conversation_ids, found, strict=True) if refs}

    async def _refs_to(self, conversation_ids: set[str]) -> builtins.list[str]:
        """The keys of every thread ref naming one of ``conversation_ids`` (a ref written
        by an older bridge is in no conversation's ref set): by SCAN, each page's targets
        read in one MGET, not a round trip per ref."""
        found: builtins.list[str] = []
        page: builtins.list[bytes] = []

        async def check() -> None:
            for key, target in zip(page, await mget(self.redis, page), strict=True):
                if target is not None and target.decode() in conversation_ids:
                    found.append(key.decode())
            page.clear()

        async for key in self.redis.scan_iter(match=keys.ref("*"), count=1000):
            page.append(key)
            if len(page) >= 1000:
                await check()
        if page:
            await check()
        return found

    async def erase_contact(self, contact: Contact, conversation_ids: builtins.list[str]) -> int:
        """Delete the contact, its indexes and its conversations (state, transcript, status
        entries, thread refs, timers, the platform ids naming its addresses); returns the keys
        (and ids) deleted.

        Each address's conversation counter is set to the clock instead of deleted: counted
        from 1 again, the address's next conversation would take the id of an erased one,
        which an old agent thread, a late outbox record or the projector's take-back of the
        erased ids (`Projector._take_back_erased`) would then reach. The counter names only
        the address's hash, and now the erasure's time, not its history."""
        doomed = [keys.contact(contact.id), keys.contact_fields(contact.id), keys.contact_person(contact.id),
                  keys.contact_members(contact.id), keys.contact_events(contact.id)]
        if contact.email:
            doomed.append(keys.contact_by_email(contact.email))
        counters = []
        for address in contact.addresses:
            channel, _, addr = address.partition(":")
            doomed += [keys.contact_by_address(channel, addr),
                       keys.current_conversation(channel, addr, self.partitions)]
            counters.append(keys.conversation_seq(address_hash(channel, addr), self.partitions))
        for conversation_id in conversation_ids:
            doomed += keys.conversation_keys(conversation_id, self.partitions)
        wanted = set(conversation_ids)
        bare = [f":{a.partition(':')[2]}:".encode() for a in contact.addresses]
        marks = await self._dedupe_marks_naming(bare)
        loose = await self._refs_to(wanted)  # thread refs: each alone, in no one's slot
        timers: builtins.list[tuple[str, bytes]] = []
        for p in range(self.partitions):
            for member in await self.redis.zrange(keys.timers(p, self.partitions), 0, -1):
                if decode(member).conversation_id in wanted:
                    timers.append((keys.timers(p, self.partitions), member))
        # one transaction per hash slot (a Redis Cluster runs none across slots): the
        # contacts' first (an engine's batch writes no contact of it after), then each
        # partition's, which bumps the partition's erasure counter: a batch that read the
        # partition before is refused at its commit, and its engine drops what it cached
        writes: builtins.list[tuple[str, tuple[Any, ...]]] = []  # (the key its slot goes by, command)

        def add(key: str, *command: Any) -> None:
            writes.append((key, command))

        add(keys.erased(contact.id), "SET", keys.erased(contact.id), "1", "EX", keys.ERASED_MARK_S)
        for p in range(self.partitions):  # what SQL still holds of it stays out, in every slot
            mark = keys.erased_in(contact.id, p, self.partitions)
            add(mark, "SET", mark, "1", "EX", keys.ERASED_MARK_S)
            add(mark, "INCR", keys.erasures_rev(p, self.partitions))
        for key in doomed:
            add(key, "DEL", key)
        for key in counters:  # counts in ms never reach the clock, nor do earlier clock floors
            add(key, "SET", key, now_ms())
        if contact.person:  # linked to another contact as one person: no longer
            add(keys.contact_members(contact.person), "SREM", keys.contact_members(contact.person), contact.id)
        for status in keys.STATUSES:
            for conversation_id in conversation_ids:
                index = keys.status_index(conversation_id, status, self.partitions)
                add(index, "ZREM", index, conversation_id)
        for key, member in timers:
            add(key, "ZREM", key, member)
        deleted = 0
        for group in keys.by_slot(writes, lambda write: write[0]).values():
            ops = [command for _, command in group]
            async with self.redis.pipeline(transaction=True) as pipe:
                for command, *args in ops:
                    pipe.execute_command(command, *args)
                replies = await pipe.execute()
            deleted += sum(r for (command, *_), r in zip(ops, replies, strict=True) if command == "DEL")
        if loose or marks:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in loose:
                    pipe.delete(key)
                for dedupe_set, member in marks:
                    pipe.srem(dedupe_set, member)
                deleted += sum(await pipe.execute())
        return deleted

    async def _dedupe_marks_naming(self, bare: builtins.list[bytes]) -> builtins.list[tuple[str, bytes]]:
        """(set, id) of every platform id in the dedupe sets that names one of the
        addresses (``:<address>:`` within ``:<id>:``; the API's ids do)."""
        found: builtins.list[tuple[str, bytes]] = []
        if not bare:
            return found
        async for dedupe_set in self.redis.scan_iter(match=keys.DEDUPE_SETS, count=1000, _type="set"):
            async for member in self.redis.sscan_iter(dedupe_set, count=1000):
                if any(b in b":" + member + b":" for b in bare):
                    found.append((dedupe_set.decode(), member))
        return found


def _fields(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}
