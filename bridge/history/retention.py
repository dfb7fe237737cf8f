"""Redis kept small: conversations resolved longer ago than ``history.keep_in_redis_days``
leave Redis once the SQL record holds them as Redis does (same last update, every
transcript message). Their address and contact stay, so a customer who writes again, or
an agent who opens one, finds it: the store loads it back from SQL."""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.history import schema
from bridge.model import decode_conversation
from bridge.store import Store

log = logging.getLogger("bridge.history")

DAY_MS = 86_400_000


async def sweep(store: Store, engine: AsyncEngine, *, now_ms: int, keep_days: float, limit: int = 500) -> int:
    """Drop up to ``limit`` conversations that are old enough and safely in SQL; returns how many."""
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
    dropped = 0
    for conversation_id, stored, kept in candidates:
        in_redis = decode_conversation(stored)
        if updated.get(conversation_id, -1) < in_redis.updated_ms or counts.get(conversation_id, 0) < kept:
            continue  # not projected yet (or projected from an older state): kept for now
        if await store.drop_archived(conversation_id, stored):
            dropped += 1
    if dropped:
        log.info("closed conversations dropped from Redis (kept in SQL)", extra={"count": dropped})
    return dropped
