"""Applies outbox records to the SQL record, each exactly once (by its id), in one
transaction per batch: the conversation's state (newer wins), its contact and links, the
transcript messages, its events (state changes with their reasons and who made them,
and the notices the flows kept: SLA warnings and breaches, survey answers, dispute steps)
and its thread refs (from turns and from the dispatcher's refs records).

`erase_rows` is the other way: what an erasure deletes (bridge/history/privacy.py), and
what the projector takes back when an erasure ran while it held a batch naming the contact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, delete, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bridge.history import schema
from bridge.history.record import RefsRecord, TurnRecord, contact_of, conversation_of, messages_of
from bridge.model import Contact, Conversation, Message

# conversation fields whose change is an event of its own (name, the field giving its reason)
TRACKED = (("status", ""), ("assignee", ""), ("urgency", "urgency_reason"), ("topic", ""), ("queue", ""))


class Writer:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    async def apply(self, records: Sequence[TurnRecord | RefsRecord]) -> int:
        """Apply the records not applied before; returns how many were new."""
        if not records:
            return 0
        async with self.engine.begin() as conn:
            ids = list(dict.fromkeys(r.id for r in records))
            done = set((await conn.execute(select(schema.projected.c.id).where(schema.projected.c.id.in_(ids))))
                       .scalars())
            fresh = list({r.id: r for r in records if r.id not in done}.values())
            if not fresh:
                return 0
            await self._ignore(conn, schema.projected, [{"id": r.id, "at_ms": r.at_ms} for r in fresh])
            await self._upsert(conn, schema.refs, list({row["ref"]: row for row in refs_rows(fresh)}.values()))
            states = [(r, conversation_of(r)) for r in fresh if isinstance(r, TurnRecord)]
            before = await self._current(conn, {c.id for _, c in states})
            message_rows: list[dict[str, Any]] = []
            event_rows: list[dict[str, Any]] = []
            contacts: dict[str, Contact] = {}
            for record, conversation in states:
                previous = before.get(conversation.id)
                # a turn older than the state recorded (an erasure wrote its commit's other
                # turns again, at the outbox's end): its messages, not its state changes
                late = previous is not None and previous["updated_ms"] > conversation.updated_ms
                event_rows.extend(events_of(record, previous, conversation, late=late))
                if not late:
                    before[conversation.id] = conversation_row(conversation)
                for i, message in enumerate(messages_of(record)):
                    message_rows.append(message_row(message, conversation.id, record.at_ms * 1000 + i))
                contact = contact_of(record)
                if contact is not None:
                    contacts[contact.id] = contact
            latest = [before[i] for i in sorted({c.id for _, c in states})]  # each conversation's newest state
            await self._upsert(conn, schema.conversations, latest, newer="updated_ms")
            await self._ignore(conn, schema.messages, message_rows)
            await self._ignore(conn, schema.events, event_rows)
            await self.save_contacts(conn, list(contacts.values()))
        return len(fresh)

    async def save_contacts(self, conn: AsyncConnection, contacts: list[Contact]) -> None:
        await self._upsert(conn, schema.contacts, [contact_row(c) for c in contacts])
        await self._upsert(conn, schema.contact_links, [{"address": a, "contact_id": c.id}
                                                        for c in contacts for a in c.addresses])

    async def save_refs(self, refs: list[tuple[str, str]]) -> None:
        """Thread refs (ref, conversation id) straight into the record (`bridge db backfill`)."""
        async with self.engine.begin() as conn:
            await self._upsert(conn, schema.refs, list({r: {"ref": r, "conversation_id": c} for r, c in refs}.values()))

    async def forget(self, conversation_ids: Sequence[str], contact_ids: Sequence[str],
                     addresses: Sequence[str]) -> dict[str, int]:
        """`erase_rows` in a transaction of its own."""
        async with self.engine.begin() as conn:
            return await erase_rows(conn, conversation_ids, contact_ids, addresses)

    async def _current(self, conn: AsyncConnection, ids: set[str]) -> dict[str, dict[str, Any]]:
        table = schema.conversations
        rows = await conn.execute(select(table).where(table.c.id.in_(sorted(ids))))
        return {row.id: dict(row._mapping) for row in rows}

    async def _ignore(self, conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> None:
        for chunk in _chunks(rows):
            await conn.execute(self._insert(table).values(chunk).on_conflict_do_nothing())

    async def _upsert(self, conn: AsyncConnection, table: Table, rows: list[dict[str, Any]],
                      newer: str = "") -> None:
        key = [c.name for c in table.primary_key.columns]
        for chunk in _chunks(rows):
            statement = self._insert(table).values(chunk)
            changes = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in key}
            where = (table.c[newer] <= statement.excluded[newer]) if newer else None
            await conn.execute(statement.on_conflict_do_update(index_elements=key, set_=changes, where=where))


async def erase_rows(conn: AsyncConnection, conversation_ids: Sequence[str], contact_ids: Sequence[str],
                     addresses: Sequence[str]) -> dict[str, int]:
    """Delete the conversations with their messages, events and thread refs, the contacts,
    and their links and those of the addresses ("<channel>:<address>"); returns how many
    messages, events and refs went."""
    m, e, r, c = schema.messages, schema.events, schema.refs, schema.conversations
    ct, links = schema.contacts, schema.contact_links
    ids, contacts, linked = sorted(set(conversation_ids)), sorted(set(contact_ids)), sorted(set(addresses))
    counts = {
        "messages": (await conn.execute(delete(m).where(m.c.conversation_id.in_(ids)))).rowcount,
        "events": (await conn.execute(delete(e).where(e.c.conversation_id.in_(ids)))).rowcount,
        "refs": (await conn.execute(delete(r).where(r.c.conversation_id.in_(ids)))).rowcount,
    }
    await conn.execute(delete(c).where(c.c.id.in_(ids)))
    await conn.execute(delete(links).where(links.c.contact_id.in_(contacts) | links.c.address.in_(linked)))
    await conn.execute(delete(ct).where(ct.c.id.in_(contacts)))
    if conn.dialect.name == "sqlite":  # the full-text index keeps no trace of the text
        await conn.execute(text("INSERT INTO messages_fts(messages_fts) VALUES ('optimize')"))
    return counts


def _chunks(rows: list[dict[str, Any]], size: int = 200) -> Any:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def refs_rows(records: Sequence[TurnRecord | RefsRecord]) -> list[dict[str, Any]]:
    """Each thread ref with its conversation, in record order (a later one wins, as in Redis)."""
    rows: list[dict[str, Any]] = []
    for record in records:
        if isinstance(record, RefsRecord):
            rows.extend({"ref": ref, "conversation_id": c} for ref, c in record.refs)
        elif record.refs:
            conversation_id = conversation_of(record).id
            rows.extend({"ref": ref, "conversation_id": conversation_id} for ref in record.refs)
    return rows


def conversation_row(c: Conversation) -> dict[str, Any]:
    return {"id": c.id, "channel": c.channel, "address": c.address, "contact_id": c.contact_id,
            "status": c.status, "language": c.language, "urgency": c.urgency, "urgency_reason": c.urgency_reason,
            "queue": c.queue, "topic": c.topic, "assignee": c.assignee, "tags": list(c.tags),
            "created_ms": c.created_ms, "updated_ms": c.updated_ms, "first_response_ms": c.first_response_ms,
            "resolved_ms": c.resolved_ms, "last_customer_ms": c.last_customer_ms, "messages": c.messages,
            "data": c.data}


def contact_row(c: Contact) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "email": c.email, "language": c.language, "tier": c.tier,
            "created_ms": c.created_ms, "data": c.data}


def message_row(m: Message, conversation_id: str, seq: int) -> dict[str, Any]:
    sender = m.sender
    return {"id": m.id, "seq": seq, "conversation_id": conversation_id, "kind": m.kind, "channel": m.channel,
            "name": m.name, "text": m.text, "sender_id": sender.id if sender else "",
            "sender_name": sender.name if sender else "", "sender_email": sender.email if sender else "",
            "is_agent": bool(sender and sender.is_agent),
            "attachments": [{"name": a.name, "mime": a.mime, "size": a.size, "ref": a.ref, "url": a.url}
                            for a in m.attachments],
            "data": m.data, "reply_to": m.reply_to, "created_ms": m.created_ms}


def events_of(record: TurnRecord, before: dict[str, Any] | None, after: Conversation,
              late: bool = False) -> list[dict[str, Any]]:
    """What changed in this turn: the tracked fields (with the previous value and the
    reason; not for a ``late`` turn, which would undo later changes) and the notices the
    flows kept in the transcript."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: str, previous: str = "", reason: str = "", by: str = record.by,
            data: dict[str, Any] | None = None, event_id: str = "", at_ms: int = record.at_ms) -> None:
        out.append({"id": event_id or f"{record.id}:{len(out)}", "conversation_id": after.id, "at_ms": at_ms,
                    "name": name, "value": value, "previous": previous, "reason": reason, "by": by,
                    "data": {"cause": record.cause, **(data or {})}})

    if before is None and record.previous_status is None:
        add("opened", after.status, at_ms=after.created_ms or record.at_ms)
    for field, reason_field in () if late else TRACKED:
        value = str(getattr(after, field))
        previous = str(before[field]) if before is not None else ""
        if value != previous and (before is not None or value):
            add(field, value, previous, str(getattr(after, reason_field)) if reason_field else "")
    for message in messages_of(record):
        if message.kind == "event":
            by = message.sender.name if message.sender else record.by
            # named by the kept message: a backfill of the same transcript adds it once
            add(message.name, message.text, by=by, data=message.data, event_id=f"message:{message.id}",
                at_ms=message.created_ms or record.at_ms)
    return out
