"""Retention's Redis side: what a customer leaves in Redis once every conversation of
theirs is in the SQL record, and how it comes back.

Dropped (bridge/history/retention.py decides when): a conversation's state and transcript,
then its address's pointer and conversation counter once no conversation of the address is
left in Redis, then its contact and the contact's indexes once none of its addresses has a
pointer left and agents keep nothing about it (fields, links, change history: those live
in Redis only). Each drop is one script that checks, atomically, that nothing was written
since the check against SQL; each keeps to one Redis Cluster slot (a conversation's
thread refs, each in a slot of its own, go after it, each if it still names it).

Loaded back (the engine, about to write to them) in one script per batch and slot (each
partition's, the contacts'): conversations with their transcripts, the address pointer (for
an address's latest conversation), the counter (never lowered, so no conversation id is
given twice) and the contacts with their indexes; nothing that exists is overwritten, and
nothing of a contact erased in the meantime (`keys.erased`, and its copy in each
partition's slot, `keys.erased_in`) comes back. While the record does not answer the engine
goes on with what Redis has: a customer writing again gets a new conversation, numbered
from the clock (above any number the record may hold).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from redis.asyncio import Redis

from bridge import keys
from bridge.connection import Script
from bridge.errors import RecordUnavailable
from bridge.model import (
    Contact,
    Conversation,
    Message,
    address_hash,
    conversation_hash,
    conversation_number,
    encode,
    encode_record,
    now_ms,
    partition_of,
)
from bridge.ops import frame_ops

log = logging.getLogger("bridge.store")

# an address counter above this is never dropped (its check would look at too many ids)
MAX_NUMBER_DROPPED = 10_000

_RESTORE = """
-- KEYS: every key the items name (`restore_keys`). ARGV[1]: msgpack array of items [how,
-- erasure mark ('' for none), key, value, ...];
-- an item whose erasure mark exists is skipped. how: 'nx' sets key unless it exists,
-- 'max' sets key unless it holds as much, 'conv' restores a conversation:
-- [.., state key, state, transcript key, status zset, updated ms, id, messages...].
local items = cmsgpack.unpack(ARGV[1])
for _, it in ipairs(items) do
  local how, mark, key = it[1], it[2], it[3]
  if mark == '' or redis.call('EXISTS', mark) == 0 then
    if how == 'nx' then
      redis.call('SET', key, it[4], 'NX')
    elseif how == 'max' then
      local held = redis.call('GET', key)
      if not held or tonumber(held) < tonumber(it[4]) then redis.call('SET', key, it[4]) end
    elseif redis.call('SET', key, it[4], 'NX') then
      redis.call('ZADD', it[6], it[7], it[8])
      if redis.call('EXISTS', it[5]) == 0 then
        for first = 9, #it, 1000 do
          redis.call('RPUSH', it[5], unpack(it, first, math.min(#it, first + 999)))
        end
      end
    end
  end
end
return #items
"""

_NEXT_NUMBERS = """
-- KEYS: address counters. Each one incremented, or 0 where it does not exist (retention
-- dropped it: the record knows how far it went).
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then out[i] = redis.call('INCR', key) else out[i] = 0 end
end
return out
"""

_DROP_ADDRESS = """
-- KEYS: address pointer, counter, then the state keys of the address's conversations 1 to
-- n. ARGV: the conversation id the pointer points to, its number n. Dropped only when the
-- pointer and the counter are as checked and no conversation of the address is left in Redis.
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""

_DROP_CONTACT = """
-- KEYS: contact, its fields, person, members, events, then each address's contact index,
-- then (optional) the email index. ARGV: the record as checked against SQL, contact id.
-- Dropped only when the record is as checked and agents keep nothing about it.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2], KEYS[3], KEYS[4], KEYS[5]) > 0 then return 0 end
local doomed = {KEYS[1]}
for i = 6, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[2] then doomed[#doomed + 1] = KEYS[i] end
end
redis.call('DEL', unpack(doomed))
return 1
"""


class Archive(Protocol):
    """Where what retention dropped is found (bridge.history.archive.Archive)."""

    async def conversations(self, ids: list[str]) -> dict[str, Conversation]: ...

    async def transcripts(self, ids: list[str]) -> dict[str, list[Message]]: ...

    async def by_address(self, addresses: list[tuple[str, str]]) -> dict[tuple[str, str], list[Conversation]]: ...

    async def highest_numbers(self, address_hashes: list[str]) -> dict[str, int]: ...

    async def contacts(self, ids: list[str]) -> dict[str, Contact]: ...

    async def contact_ids(self, *, addresses: Sequence[str] = (), emails: Sequence[str] = ()) -> dict[str, str]: ...

    async def ref_targets(self, refs: list[str]) -> dict[str, str]: ...


class Retained:
    """Dropping from Redis what the record holds, and loading it back."""

    def __init__(self, redis: Redis, archive: Archive, partitions: int) -> None:
        self.redis = redis
        self.partitions = partitions
        self.archive = archive
        self._restore = Script(redis, _RESTORE)
        self._next_numbers = Script(redis, _NEXT_NUMBERS)
        self._drop_address = Script(redis, _DROP_ADDRESS)
        self._drop_contact = Script(redis, _DROP_CONTACT)

    # -- loading back -----------------------------------------------------------------

    async def load_back(self, conversations: list[Conversation], contacts: Sequence[Contact] = (),
                        counters: Sequence[str] = (), highest: dict[str, int] | None = None) -> None:
        """Put conversations back with their transcripts, counters, pointers and contacts;
        also ``contacts`` and the ``counters`` of these address hashes (0 when the record
        has none). ``highest``: the numbers the record holds per address hash, when the
        caller knows them already (one query fewer). Raises `RecordUnavailable` (nothing
        written) when the record does not answer."""
        ids = [c.id for c in conversations]
        transcripts = await self.archive.transcripts(ids) if ids else {}
        wanted = {c.contact_id for c in conversations if c.contact_id} - {c.id for c in contacts}
        found = [*contacts, *(await self.archive.contacts(sorted(wanted))).values()] if wanted else list(contacts)
        if highest is None:
            hashes = list(dict.fromkeys([*(conversation_hash(i) for i in ids), *counters]))
            highest = await self.archive.highest_numbers(hashes) if hashes else {}
        items: list[list[Any]] = []
        for c in conversations:
            h = conversation_hash(c.id)
            mark = keys.erased_in(c.contact_id, partition_of(h, self.partitions), self.partitions) \
                if c.contact_id else ""
            state, transcript, _ = keys.conversation_keys(c.id, self.partitions)
            items.append(["conv", mark, state, encode_record(c), transcript,
                          keys.status_index(c.id, c.status, self.partitions), c.updated_ms, c.id,
                          *(encode(m) for m in transcripts.get(c.id, []))])
            if c.id == f"{h}-{highest.get(h, 0)}":  # the address's latest: its pointer
                items.append(["nx", mark, keys.current_conversation(c.channel, c.address, self.partitions), c.id])
        for contact in found:
            items.extend(contact_items(contact))
        items.extend(["max", "", keys.conversation_seq(h, self.partitions), n] for h, n in highest.items())
        await self._restore_by_slot(items)

    async def _restore_by_slot(self, items: list[list[Any]]) -> None:
        """One `_RESTORE` per hash slot (each partition's items, the contacts'): a script
        keeps to one slot on a Redis Cluster."""
        for group in keys.by_slot(items, lambda item: str(item[2])).values():
            await self._restore(keys=restore_keys(group), args=[frame_ops(group)])

    async def returning(self, addresses: list[tuple[str, str]], emails: Sequence[str] = ()) -> list[str | None]:
        """Addresses Redis has no conversation pointer for (customers writing again, or new
        ones): their latest conversation, its contact and the address counters loaded back,
        and the contacts of ``emails``. Returns each address's conversation id, if any."""
        try:
            by_address = await self.archive.by_address(addresses)
            latest = {a: found[-1] for a, found in by_address.items() if found}
            # every conversation of these addresses came back: their counters need no query
            highest = {address_hash(*a): conversation_number(found[-1].id) if found else 0
                       for a, found in by_address.items()}
            contacts: list[Contact] = []
            if emails:
                by_email = await self.archive.contact_ids(emails=emails)
                contacts = list((await self.archive.contacts(sorted(set(by_email.values())))).values())
            await self.load_back(list(latest.values()), contacts, highest=highest)
        except RecordUnavailable as exc:
            log.warning("history unavailable: new addresses not looked up in the record", extra={"error": str(exc)})
            return [None] * len(addresses)
        return [latest[a].id if a in latest else None for a in addresses]

    async def next_numbers(self, address_hashes: list[str]) -> list[int]:
        """Each address's next conversation number; a counter retention dropped goes on
        from the highest number the record holds."""
        counters = [keys.conversation_seq(h, self.partitions) for h in address_hashes]
        numbers = [int(n) for n in await self._next_numbers(keys=counters)]
        missing = [h for h, n in zip(address_hashes, numbers, strict=True) if not n]
        if missing:
            try:
                await self.load_back([], counters=missing)
            except RecordUnavailable as exc:
                log.warning("history unavailable: conversations numbered from the clock", extra={"error": str(exc)})
                floor = now_ms()
                await self._restore_by_slot([["max", "", keys.conversation_seq(h, self.partitions), floor]
                                             for h in missing])
            again = iter(int(n) for n in await self._next_numbers(
                keys=[keys.conversation_seq(h, self.partitions) for h in missing]))
            numbers = [n or next(again) for n in numbers]
        return numbers

    async def refs_back(self, refs: list[str]) -> dict[str, str]:
        """Thread refs retention dropped: their conversations from the record (one query),
        each ref loaded back unless it exists (for a while: the record keeps it anyway);
        {} while the record does not answer (the message stays unresolved, as before)."""
        try:
            found = await self.archive.ref_targets(refs)
        except RecordUnavailable as exc:
            log.warning("history unavailable: thread refs not looked up in the record", extra={"error": str(exc)})
            return {}
        if found:
            async with self.redis.pipeline(transaction=False) as pipe:
                for ref, conversation_id in found.items():
                    pipe.set(keys.ref(ref), conversation_id, nx=True, ex=keys.REF_CACHE_S)
                await pipe.execute()
        return found

    # -- dropping ---------------------------------------------------------------------

    async def drop_address(self, conversation: Conversation) -> bool:
        """Drop the pointer and counter of the conversation's address, if it is the
        address's latest and no conversation of the address is left in Redis."""
        h, number = conversation_hash(conversation.id), conversation_number(conversation.id)
        if not 0 < number <= MAX_NUMBER_DROPPED:
            return False
        return bool(await self._drop_address(
            keys=[keys.current_conversation(conversation.channel, conversation.address, self.partitions),
                  keys.conversation_seq(h, self.partitions),
                  *(keys.conversation(f"{h}-{n}", self.partitions) for n in range(1, number + 1))],
            args=[conversation.id, number]))

    async def drop_contact(self, contact: Contact, stored: bytes) -> bool:
        """Drop a contact and its indexes if its record is still ``stored``, agents keep
        nothing about it and none of its addresses points to a conversation. The pointers
        are in their partitions' slots, read first: a conversation opened after that read
        names a contact the record holds (it is loaded back from there)."""
        indexes: list[str] = []
        pointers: list[str] = []
        for address in contact.addresses:
            channel, _, addr = address.partition(":")
            pointers.append(keys.current_conversation(channel, addr, self.partitions))
            indexes.append(keys.contact_by_address(channel, addr))
        if contact.email:
            indexes.append(keys.contact_by_email(contact.email))
        async with self.redis.pipeline(transaction=False) as pipe:
            for pointer in pointers:
                pipe.exists(pointer)
            if any(await pipe.execute()):
                return False
        return bool(await self._drop_contact(
            keys=[keys.contact(contact.id), keys.contact_fields(contact.id), keys.contact_person(contact.id),
                  keys.contact_members(contact.id), keys.contact_events(contact.id), *indexes],
            args=[stored, contact.id]))


def contact_items(contact: Contact) -> list[list[Any]]:
    """Restore items for a contact and its indexes (none overwrites what exists)."""
    mark = keys.erased(contact.id)
    items: list[list[Any]] = [["nx", mark, keys.contact(contact.id), encode_record(contact.record())]]
    for address in contact.addresses:
        channel, _, addr = address.partition(":")
        items.append(["nx", mark, keys.contact_by_address(channel, addr), contact.id])
    if contact.email:
        items.append(["nx", mark, keys.contact_by_email(contact.email), contact.id])
    return items


def restore_keys(items: list[list[Any]]) -> list[str]:
    """The keys restore items name (erasure marks, keys, a conversation's transcript and
    status index), each once: `_RESTORE` declares them."""
    found: dict[str, None] = {}
    for how, mark, key, *rest in items:
        for name in (mark, key, *(rest[1:3] if how == "conv" else ())):
            if name:
                found[name] = None
    return list(found)
