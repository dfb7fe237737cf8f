"""Redis kept small: conversations resolved longer ago than ``history.keep_in_redis_days``
leave Redis once the SQL record holds them as Redis does (same last update, every
transcript message, every thread ref), their thread refs with them; then their address's
pointer and counter once no conversation of the address is left, and their contact once
none of its addresses is left and the record holds it as Redis does. What stays of such a
customer: nothing (agents' notes, fields and links on a contact live in Redis only and
keep it there). A customer who writes again, an agent who acts on one of them, or a reply
in one of their threads loads them back from SQL (bridge/storearchive.py)."""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.history import schema
from bridge.history.archive import Archive
from bridge.model import Contact, Conversation, decode_contact, decode_conversation
from bridge.store import Store

log = logging.getLogger("bridge.history")

DAY_MS = 86_400_000


async def sweep(store: Store, engine: AsyncEngine, *, now_ms: int, keep_days: float, limit: int = 500) -> int:
    """Drop up to ``limit`` conversations that are old enough and safely in SQL, then what
    their customers leave; returns how many conversations were dropped."""
    candidates = await store.resolved_before(now_ms - int(keep_days * DAY_MS), limit)
    if not candidates:
        return 0
    c, m = schema.conversations, schema.messages
    ids = [i for i, _, _ in candidates]
    async with engine.connect() as conn:
        state = await conn.execute(select(c.c.id, c.c.updated_ms).where(c.c.id.in_(ids)))
        updated: dict[str, int] = {row[0]: row[1] for row in state}
        kept_in_sql = await conn.execute(select(m.c.conversation_id, func.count())
                                         .where(m.c.conversation_id.in_(ids)).group_by(m.c.conversation_id))
        counts: dict[str, int] = {row[0]: row[1] for row in kept_in_sql}
        refs: dict[str, list[str]] = {}
        for ref, conversation_id in await conn.execute(select(schema.refs.c.ref, schema.refs.c.conversation_id)
                                                       .where(schema.refs.c.conversation_id.in_(ids))):
            refs.setdefault(conversation_id, []).append(ref)
    dropped: list[Conversation] = []
    for conversation_id, stored, kept in candidates:
        in_redis = decode_conversation(stored)
        if updated.get(conversation_id, -1) < in_redis.updated_ms or counts.get(conversation_id, 0) < kept:
            continue  # not projected yet (or projected from an older state): kept for now
        if await store.drop_archived(conversation_id, stored, refs.get(conversation_id, [])):
            dropped.append(in_redis)
    addresses = await _forget_addresses(store, dropped)
    contacts = await _forget_contacts(store, Archive(engine), {d.contact_id for d in dropped if d.contact_id})
    if dropped:
        log.info("closed conversations dropped from Redis (kept in SQL)",
                 extra={"count": len(dropped), "addresses": addresses, "contacts": contacts})
    return len(dropped)


async def _forget_addresses(store: Store, dropped: list[Conversation]) -> int:
    """Pointers and counters of addresses whose every conversation left Redis."""
    assert store.retained is not None
    forgotten = 0
    for conversation in dropped:
        forgotten += await store.retained.drop_address(conversation)
    return forgotten


async def _forget_contacts(store: Store, archive: Archive, contact_ids: set[str]) -> int:
    """Contacts none of whose addresses is left in Redis, once SQL holds them as Redis does."""
    assert store.retained is not None
    if not contact_ids:
        return 0
    wanted = sorted(contact_ids)
    stored = await store.contact_records(wanted)
    in_sql = await archive.contacts(wanted)
    forgotten = 0
    for contact_id, raw in zip(wanted, stored, strict=True):
        if raw is None:
            continue
        in_redis = decode_contact(raw)
        if _recorded(in_redis, in_sql.get(contact_id)) and await store.retained.drop_contact(in_redis, raw):
            forgotten += 1
    return forgotten


def _recorded(in_redis: Contact, in_sql: Contact | None) -> bool:
    """The record holds the contact as Redis does (the projector caught up with it)."""
    return in_sql is not None and set(in_redis.addresses) <= set(in_sql.addresses) and (
        (in_redis.name, in_redis.email, in_redis.language, in_redis.tier, in_redis.created_ms, in_redis.data)
        == (in_sql.name, in_sql.email, in_sql.language, in_sql.tier, in_sql.created_ms, in_sql.data))
