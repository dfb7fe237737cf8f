"""The conversation store: contacts, conversations and transcripts in Redis.

Writes are produced as command lists (`*_ops`) so the engine can commit everything one
message causes in one atomic call; reads are plain async methods (`ConversationReader`).
"""

from __future__ import annotations

import builtins
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from bridge import keys
from bridge.effects import Effects
from bridge.model import (
    Contact,
    Conversation,
    Message,
    address_hash,
    decode,
    decode_contact,
    decode_conversation,
    encode,
    encode_record,
)
from bridge.storeerrors import typed_store_errors


@typed_store_errors
class Store:
    """Conversation store on one Redis; also the `ConversationReader` given to adapters.
    A Redis that does not answer raises `StoreUnavailable`."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    # -- reads -----------------------------------------------------------------------

    async def get(self, conversation_id: str) -> Conversation | None:
        raw = await self.redis.get(keys.conversation(conversation_id))
        return decode_conversation(raw) if raw else None

    async def get_many(self, conversation_ids: builtins.list[str]) -> builtins.list[Conversation | None]:
        if not conversation_ids:
            return []
        raws = await self.redis.mget([keys.conversation(c) for c in conversation_ids])
        return [decode_conversation(r) if r else None for r in raws]

    async def for_address(self, channel: str, address: str) -> Conversation | None:
        conversation_id = await self.redis.get(keys.current_conversation(channel, address))
        return await self.get(conversation_id.decode()) if conversation_id else None

    async def by_ref(self, ref: str) -> str | None:
        value = await self.redis.get(keys.ref(ref))
        return value.decode() if value else None

    async def list(self, status: str | None = None, limit: int = 100) -> builtins.list[Conversation]:
        statuses = [status] if status else ["open", "pending", "resolved"]
        ids: builtins.list[str] = []
        for s in statuses:
            ids.extend(i.decode() for i in await self.redis.zrevrange(keys.CONVERSATIONS_BY_STATUS + s, 0, limit - 1))
        found = [c for c in await self.get_many(ids) if c is not None]
        found.sort(key=lambda c: c.updated_ms, reverse=True)
        return found[:limit]

    async def ids_with_status(self, status: str) -> builtins.list[str]:
        """Every conversation id with ``status``, least recently updated first."""
        return [i.decode() for i in await self.redis.zrange(keys.CONVERSATIONS_BY_STATUS + status, 0, -1)]

    async def transcript(self, conversation_id: str, limit: int = 200) -> builtins.list[Message]:
        raws = await self.redis.lrange(keys.transcript(conversation_id), -limit, -1)
        return [decode(r) for r in raws]

    async def contact(self, contact_id: str) -> Contact | None:
        (found,) = await self.contacts_many([contact_id])
        return found

    async def contacts_many(self, contact_ids: builtins.list[str]) -> builtins.list[Contact | None]:
        """Contacts with what agents keep about their person (fields, links): two round
        trips, a third when some are linked."""
        if not contact_ids:
            return []
        raws = await self.redis.mget([keys.contact(c) for c in contact_ids]
                                     + [keys.contact_person(c) for c in contact_ids])
        found = [decode_contact(r) if r else None for r in raws[:len(contact_ids)]]
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

    async def contacts_rev(self) -> int:
        """How many times agents changed a contact (fields, links): a cache of contacts is
        good while this stays the same."""
        raw = await self.redis.get(keys.CONTACTS_REV)
        return int(raw) if raw else 0

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
        hashes = [address_hash(*a.split(":", 1)) for a in addresses if ":" in a]
        if not hashes:
            return []
        counts = await self.redis.mget([keys.conversation_seq(h) for h in hashes])
        ids = [f"{h}-{n}" for h, count in zip(hashes, counts, strict=True) if count
               for n in range(int(count), max(0, int(count) - per_address), -1)]
        return [c for c in await self.get_many(ids) if c is not None]

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
        raws = await self.redis.mget([keys.current_conversation(c, a) for c, a in addresses])
        return [r.decode() if r else None for r in raws]

    async def contact_ids_for(self, addresses: builtins.list[tuple[str, str]]) -> builtins.list[str | None]:
        if not addresses:
            return []
        raws = await self.redis.mget([keys.contact_by_address(c, a) for c, a in addresses])
        return [r.decode() if r else None for r in raws]

    async def contact_id_by_email(self, email: str) -> str | None:
        raw = await self.redis.get(keys.contact_by_email(email))
        return raw.decode() if raw else None

    async def next_conversation_numbers(self, address_hashes: builtins.list[str]) -> builtins.list[int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for h in address_hashes:
                pipe.incr(keys.conversation_seq(h))
            return [int(n) for n in await pipe.execute()]

    # -- writes, as ops for one atomic commit ----------------------------------------

    @classmethod
    def effect_ops(cls, effects: Effects) -> builtins.list[builtins.list[Any]]:
        """The commands that write what one message caused (see `Effects`)."""
        conversation = effects.conversation
        ops: builtins.list[builtins.list[Any]] = []
        for kept in effects.kept:
            ops.extend(cls.transcript_ops(conversation.id, kept))
        for out in effects.outbound:
            ops.append(["XADD", keys.outbound(out.channel), "*", keys.PAYLOAD_FIELD, encode(out)])
        for queue, case in effects.queued:
            ops.append(["XADD", keys.queue(queue), "MAXLEN", "~", keys.QUEUE_MAX_LEN, "*",
                        keys.PAYLOAD_FIELD, encode(case)])
        for due_ms, command in effects.timers:
            ops.append(["ZADD", keys.timers(effects.partition), due_ms, encode(command)])
        for ref in effects.refs:
            ops.extend(cls.ref_ops(ref, conversation.id))
        if effects.contact is not None:
            ops.extend(cls.contact_ops(effects.contact))
            if effects.contact_shared:
                ops.append(["INCR", keys.CONTACTS_REV])
        if effects.contact_events:
            ops.extend(cls.contact_event_ops(effects.contact_events))
        ops.extend(cls.save_ops(conversation, effects.previous_status))
        return ops

    @staticmethod
    def save_ops(conversation: Conversation, previous_status: str | None) -> builtins.list[builtins.list[Any]]:
        ops: builtins.list[builtins.list[Any]] = [
            ["SET", keys.conversation(conversation.id), encode_record(conversation)],
            ["ZADD", keys.CONVERSATIONS_BY_STATUS + conversation.status, conversation.updated_ms, conversation.id],
        ]
        if previous_status is None:
            ops.append(["SET", keys.current_conversation(conversation.channel, conversation.address), conversation.id])
        elif previous_status != conversation.status:
            ops.append(["ZREM", keys.CONVERSATIONS_BY_STATUS + previous_status, conversation.id])
        return ops

    @staticmethod
    def transcript_ops(conversation_id: str, message: Message | bytes) -> builtins.list[builtins.list[Any]]:
        """Append to the transcript; bytes are a message already encoded (as read from a stream)."""
        payload = message if isinstance(message, bytes) else encode(message)
        return [["RPUSH", keys.transcript(conversation_id), payload]]

    @staticmethod
    def contact_ops(contact: Contact) -> builtins.list[builtins.list[Any]]:
        ops: builtins.list[builtins.list[Any]] = [["SET", keys.contact(contact.id), encode_record(contact.record())]]
        for address in contact.addresses:
            channel, _, addr = address.partition(":")
            ops.append(["SET", keys.contact_by_address(channel, addr), contact.id])
        if contact.email:
            ops.append(["SET", keys.contact_by_email(contact.email), contact.id])
        return ops

    @staticmethod
    def contact_event_ops(events: builtins.list[tuple[str, bytes]]) -> builtins.list[builtins.list[Any]]:
        """Record (contact id, event) pairs in the contacts' histories; every engine reads
        its cached contacts again."""
        ops: builtins.list[builtins.list[Any]] = []
        for contact_id, event in events:
            ops.append(["LPUSH", keys.contact_events(contact_id), event])
            ops.append(["LTRIM", keys.contact_events(contact_id), 0, keys.CONTACT_EVENTS_MAX - 1])
        return [*ops, ["INCR", keys.CONTACTS_REV]]

    @staticmethod
    def ref_ops(ref: str, conversation_id: str) -> builtins.list[builtins.list[Any]]:
        return [["SET", keys.ref(ref), conversation_id]]


def _fields(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}
