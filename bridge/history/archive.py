"""The SQL record as the store sees it: where what retention dropped from Redis is found.

Every lookup is batched (one query for all the misses of a batch) and asked only on a
Redis miss: a conversation, its transcript, its contact, an address's latest
conversation and its conversation counter (ids are ``<address hash>-<n>``), the
conversation a thread ref names.

A database that does not answer within ``timeout_s`` raises `RecordUnavailable` (the
engine then goes on with what Redis has); one whose schema is not created yet holds
nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.history import db, schema
from bridge.history.reader import conversation_of, message_of
from bridge.model import Contact, Conversation, Message, conversation_number


class Archive:
    def __init__(self, engine: AsyncEngine, *, timeout_s: float = 2.0) -> None:
        self.engine = engine
        self.timeout_s = timeout_s

    async def _rows(self, query: Select[Any]) -> list[Any]:
        try:
            async with asyncio.timeout(self.timeout_s), self.engine.connect() as conn:
                return list(await conn.execute(query))
        except db.UNAVAILABLE as exc:
            if db.no_schema(exc):
                return []
            raise db.record_error(exc) from exc

    async def conversations(self, ids: list[str]) -> dict[str, Conversation]:
        c = schema.conversations
        rows = await self._rows(select(c).where(c.c.id.in_(sorted(set(ids)))))
        return {row.id: conversation_of(row._mapping) for row in rows}

    async def transcripts(self, ids: list[str]) -> dict[str, list[Message]]:
        m = schema.messages
        found: dict[str, list[Message]] = {i: [] for i in ids}
        for row in await self._rows(select(m).where(m.c.conversation_id.in_(sorted(set(ids))))
                                    .order_by(m.c.conversation_id, m.c.seq, m.c.id)):
            found[row.conversation_id].append(message_of(row._mapping))
        return found

    async def by_address(self, addresses: list[tuple[str, str]]) -> dict[tuple[str, str], list[Conversation]]:
        """Every conversation of each (channel, address), oldest first."""
        c = schema.conversations
        found: dict[tuple[str, str], list[Conversation]] = {a: [] for a in addresses}
        if not addresses:
            return found
        for row in await self._rows(select(c).where(tuple_(c.c.channel, c.c.address).in_(sorted(set(addresses))))):
            found[(row.channel, row.address)].append(conversation_of(row._mapping))
        for conversations in found.values():
            conversations.sort(key=number)
        return found

    async def highest_numbers(self, address_hashes: list[str]) -> dict[str, int]:
        """The highest conversation number the record holds for each address hash (0: none)."""
        c = schema.conversations
        found = dict.fromkeys(address_hashes, 0)
        if not address_hashes:
            return found
        # ids "<hash>-<n>" sort between "<hash>-" and "<hash>." ('.' follows '-'): the key's index
        ranges = [(c.c.id > f"{h}-") & (c.c.id < f"{h}.") for h in sorted(set(address_hashes))]
        for row in await self._rows(select(c.c.id).where(or_(*ranges))):
            h = row[0].split("-", 1)[0]
            found[h] = max(found.get(h, 0), conversation_number(row[0]))
        return found

    async def contacts(self, ids: list[str]) -> dict[str, Contact]:
        """Contacts with every address linked to them."""
        ct, links = schema.contacts, schema.contact_links
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        rows = await self._rows(select(ct).where(ct.c.id.in_(wanted)))
        addresses: dict[str, list[str]] = {}
        for link in await self._rows(select(links.c.address, links.c.contact_id)
                                     .where(links.c.contact_id.in_(wanted)).order_by(links.c.address)):
            addresses.setdefault(link[1], []).append(link[0])
        return {row.id: contact_of(row._mapping, addresses.get(row.id, [])) for row in rows}

    async def contact_ids(self, *, addresses: Sequence[str] = (), emails: Sequence[str] = ()) -> dict[str, str]:
        """The contact each "<channel>:<address>" is linked to and each email belongs to
        (the earliest contact with it, as the email index of Redis would have it)."""
        ct, links = schema.contacts, schema.contact_links
        found: dict[str, str] = {}
        if addresses:
            found.update({row[0]: row[1] for row in await self._rows(
                select(links.c.address, links.c.contact_id).where(links.c.address.in_(sorted(set(addresses)))))})
        lowered = sorted({e.strip().lower() for e in emails if e.strip()})
        if lowered:
            found.update({row[0]: row[1] for row in await self._rows(  # the earliest wins
                select(func.lower(ct.c.email), ct.c.id).where(func.lower(ct.c.email).in_(lowered))
                .order_by(ct.c.created_ms.desc()))})
        return found


    async def ref_targets(self, refs: list[str]) -> dict[str, str]:
        """The conversation each thread ref names (those the record holds)."""
        r = schema.refs
        wanted = sorted(set(refs))
        if not wanted:
            return {}
        return {row[0]: row[1] for row in await self._rows(select(r.c.ref, r.c.conversation_id)
                                                           .where(r.c.ref.in_(wanted)))}


def number(conversation: Conversation) -> int:
    return conversation_number(conversation.id)


def contact_of(row: Any, addresses: list[str]) -> Contact:
    return Contact(id=row["id"], name=row["name"], email=row["email"], language=row["language"], tier=row["tier"],
                   addresses=addresses, created_ms=row["created_ms"], data=dict(row["data"] or {}))
