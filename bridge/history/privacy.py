"""Data-protection requests: everything held about a contact (export), and its erasure.

Both look in Redis (the working set) and in the SQL record. An erasure deletes the contact,
its addresses' indexes, its conversations and their messages, events and thread refs in both, scrubs
the stream entries that still hold them (inbound, outbound, outbox, queues, dead letters),
and records that it was done (when, by whom, how much) without any personal data.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.bus import Bus
from bridge.history import db, record, schema
from bridge.history.reader import Reader
from bridge.history.writer import erase_rows
from bridge.model import Contact, new_id, now_ms
from bridge.store import Store


class UnknownContact(LookupError):
    pass


@db.typed_record_errors
class Privacy:
    def __init__(self, *, store: Store, bus: Bus, history: AsyncEngine | None) -> None:
        self.store = store
        self.bus = bus
        self.history = history
        self.reader = Reader(history) if history is not None else None

    async def _contact(self, contact_id: str) -> tuple[Contact, Contact | None, Contact | None]:
        in_redis = await self.store.contact(contact_id, archive=False)
        in_sql = await self.reader.contact(contact_id) if self.reader is not None else None
        if in_redis is None and in_sql is None:
            raise UnknownContact(f"no contact {contact_id!r} in Redis or in the history")
        merged = in_redis or in_sql
        assert merged is not None
        addresses = list(dict.fromkeys([*(in_redis.addresses if in_redis else []),
                                        *(in_sql.addresses if in_sql else [])]))
        return msgspec.structs.replace(merged, addresses=addresses), in_redis, in_sql

    async def _sql_conversation_ids(self, contact: Contact) -> list[str]:
        if self.history is None:
            return []
        c = schema.conversations
        async with self.history.connect() as conn:
            found = [r[0] for r in await conn.execute(select(c.c.id).where(c.c.contact_id == contact.id))]
            for address in contact.addresses:
                channel, _, addr = address.partition(":")
                found += [r[0] for r in await conn.execute(
                    select(c.c.id).where(c.c.channel == channel, c.c.address == addr))]
        return list(dict.fromkeys(found))

    async def _sql_refs(self, ids: list[str]) -> dict[str, list[str]]:
        """The thread refs (Slack threads, email Message-IDs) the record holds per conversation."""
        assert self.history is not None
        r = schema.refs
        found: dict[str, list[str]] = {}
        async with self.history.connect() as conn:
            for ref, conversation_id in await conn.execute(select(r.c.ref, r.c.conversation_id)
                                                           .where(r.c.conversation_id.in_(ids)).order_by(r.c.ref)):
                found.setdefault(conversation_id, []).append(ref)
        return found

    async def export(self, contact_id: str) -> dict[str, Any]:
        """Everything held about the contact, as plain JSON-ready data."""
        contact, in_redis, in_sql = await self._contact(contact_id)
        redis_ids = await self.store.conversation_ids_of(contact.addresses)
        sql_ids = await self._sql_conversation_ids(contact)
        redis_part = {
            "contact": msgspec.to_builtins(in_redis) if in_redis else None,
            "conversations": [msgspec.to_builtins(c) for c in await self.store.get_many(redis_ids) if c],
            "transcripts": {i: [msgspec.to_builtins(m) for m in await self.store.transcript(i, limit=1_000_000)]
                            for i in redis_ids},
            "refs": await self.store.refs_of(redis_ids),
        }
        sql_part: dict[str, Any] | None = None
        if self.reader is not None:
            conversations = [await self.reader.conversation(i) for i in sql_ids]
            sql_part = {
                "contact": msgspec.to_builtins(in_sql) if in_sql else None,
                "conversations": [msgspec.to_builtins(c) for c in conversations if c],
                "transcripts": {i: [msgspec.to_builtins(m) for m in await self.reader.transcript(i)]
                                for i in sql_ids},
                "events": await self.reader.events(sql_ids),
                "refs": await self._sql_refs(sql_ids),
            }
        return {"contact_id": contact.id, "exported_ms": now_ms(), "addresses": contact.addresses,
                "redis": redis_part, "history": sql_part}

    async def erase(self, contact_id: str, by: str = "") -> dict[str, int]:
        """Erase the contact everywhere; returns what was removed (counts only)."""
        contact, _, _ = await self._contact(contact_id)
        redis_ids = await self.store.conversation_ids_of(contact.addresses)
        sql_ids = await self._sql_conversation_ids(contact)
        ids = list(dict.fromkeys(redis_ids + sql_ids))
        needles = [*ids, contact.id, contact.email, *(a.partition(":")[2] for a in contact.addresses)]
        counts = {"conversations": len(ids), "stream_entries": await self.bus.scrub(needles, keep=record.without)}
        counts["redis_keys"] = await self.store.erase_contact(contact, ids)
        if self.history is not None:
            counts.update(await self._erase_sql(contact, ids, by))
        return counts

    async def _erase_sql(self, contact: Contact, ids: list[str], by: str) -> dict[str, int]:
        assert self.history is not None
        async with self.history.begin() as conn:
            counts = await erase_rows(conn, ids, [contact.id], contact.addresses)
            await conn.execute(schema.erasures.insert().values(id=new_id(), at_ms=now_ms(), by=by,
                                                               counts=dict(counts, conversations=len(ids))))
        return counts
