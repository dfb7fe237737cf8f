"""Reading the SQL record: the one interface the API, the console and the reports use to
look a customer up and search what was said.

Full-text search: PostgreSQL's ``tsvector`` with the 'simple' configuration (no stemming:
English, Russian, Tagalog and Malay alike), and for text in Chinese (no spaces between
words) a substring match; SQLite's FTS5 with the trigram tokenizer (any script, Chinese
included), and a substring match for queries under three characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, and_, func, literal_column, or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.history import db, schema
from bridge.model import Attachment, Contact, Conversation, Message, Sender

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]")


@dataclass(frozen=True)
class Hit:
    """A conversation found, with the messages that matched the query (if one was given)."""

    conversation: Conversation
    matches: list[Message]


@db.typed_record_errors
class Reader:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    async def conversations(self, *, contact: str = "", q: str = "", since_ms: int = 0, until_ms: int = 0,
                            limit: int = 50) -> list[Hit]:
        """Conversations, newest first: of a contact (its id, email or a "<channel>:<address>"),
        whose messages match ``q``, created in [since_ms, until_ms)."""
        c = schema.conversations
        query = select(c).order_by(c.c.updated_ms.desc()).limit(limit)
        if since_ms:
            query = query.where(c.c.created_ms >= since_ms)
        if until_ms:
            query = query.where(c.c.created_ms < until_ms)
        if contact:
            query = query.where(c.c.contact_id.in_(await self._contact_ids(contact)))
        matches: dict[str, list[Message]] = {}
        async with self.engine.connect() as conn:
            if q.strip():
                for message in await self.search(q, limit=500, conn=conn):
                    matches.setdefault(message.conversation_id, []).append(message)
                query = query.where(c.c.id.in_(list(matches)))
            found = [conversation_of(row._mapping) for row in await conn.execute(query)]
        return [Hit(conv, matches.get(conv.id, [])) for conv in found]

    async def search(self, q: str, *, limit: int = 100, conn: Any = None) -> list[Message]:
        """Messages whose text matches ``q``, newest first."""
        query = self._search_query(q.strip()).limit(limit)
        if conn is not None:
            return [message_of(row._mapping) for row in await conn.execute(query)]
        async with self.engine.connect() as own:
            return [message_of(row._mapping) for row in await own.execute(query)]

    def _search_query(self, q: str) -> Select[Any]:
        m = schema.messages
        query = select(m).order_by(m.c.created_ms.desc())
        if self.dialect == "sqlite" and len(q) >= 3:
            phrase = '"' + q.replace('"', '""') + '"'
            return query.where(literal_column("messages.rowid").in_(
                select(literal_column("rowid")).select_from(text("messages_fts"))
                .where(text("messages_fts MATCH :phrase").bindparams(phrase=phrase))))
        if self.dialect == "postgresql" and not _CJK.search(q):
            return query.where(literal_column("messages.search").op("@@")(func.plainto_tsquery("simple", q)))
        return query.where(m.c.text.ilike(f"%{_escape_like(q)}%", escape="\\"))

    async def _contact_ids(self, contact: str) -> list[str]:
        ct, links = schema.contacts, schema.contact_links
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(ct.c.id).where(or_(ct.c.id == contact,
                                                                 func.lower(ct.c.email) == contact.lower()))
                                      .union(select(links.c.contact_id).where(links.c.address == contact)))
            return [r[0] for r in rows]

    async def contact(self, contact_id: str) -> Contact | None:
        """The contact with every address linked to it."""
        ct, links = schema.contacts, schema.contact_links
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(ct).where(ct.c.id == contact_id))).first()
            if row is None:
                return None
            addresses = [r[0] for r in await conn.execute(
                select(links.c.address).where(links.c.contact_id == contact_id).order_by(links.c.address))]
        data = row._mapping
        return Contact(id=data["id"], name=data["name"], email=data["email"], language=data["language"],
                       tier=data["tier"], addresses=addresses, created_ms=data["created_ms"], data=data["data"])

    async def conversation(self, conversation_id: str) -> Conversation | None:
        c = schema.conversations
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(c).where(c.c.id == conversation_id))).first()
        return conversation_of(row._mapping) if row is not None else None

    async def transcript(self, conversation_id: str, limit: int = 10_000) -> list[Message]:
        m = schema.messages
        query = (select(m).where(m.c.conversation_id == conversation_id).order_by(m.c.seq, m.c.id).limit(limit))
        async with self.engine.connect() as conn:
            return [message_of(row._mapping) for row in await conn.execute(query)]

    async def events(self, conversation_ids: list[str]) -> list[dict[str, Any]]:
        e = schema.events
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(e).where(e.c.conversation_id.in_(conversation_ids))
                                      .order_by(e.c.at_ms, e.c.id))
            return [dict(r._mapping) for r in rows]

    async def created_between(self, since_ms: int, until_ms: int) -> list[Conversation]:
        """Every conversation created in [since_ms, until_ms) (0: open-ended), oldest first."""
        c = schema.conversations
        conditions = [c.c.created_ms >= since_ms] + ([c.c.created_ms < until_ms] if until_ms else [])
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(c).where(and_(*conditions)).order_by(c.c.created_ms))
            return [conversation_of(r._mapping) for r in rows]


def _escape_like(q: str) -> str:
    return q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def conversation_of(row: Any) -> Conversation:
    return Conversation(id=row["id"], channel=row["channel"], address=row["address"], contact_id=row["contact_id"],
                        status=row["status"], language=row["language"], urgency=row["urgency"],
                        urgency_reason=row["urgency_reason"], queue=row["queue"], topic=row["topic"],
                        assignee=row["assignee"], tags=list(row["tags"] or []), created_ms=row["created_ms"],
                        updated_ms=row["updated_ms"], first_response_ms=row["first_response_ms"],
                        resolved_ms=row["resolved_ms"], last_customer_ms=row["last_customer_ms"],
                        messages=row["messages"], data=dict(row["data"] or {}))


def message_of(row: Any) -> Message:
    sender = None
    if row["sender_id"] or row["sender_name"] or row["sender_email"] or row["is_agent"]:
        sender = Sender(id=row["sender_id"], name=row["sender_name"], email=row["sender_email"],
                        is_agent=row["is_agent"])
    return Message(kind=row["kind"], channel=row["channel"], id=row["id"], conversation_id=row["conversation_id"],
                   name=row["name"], text=row["text"], sender=sender, data=dict(row["data"] or {}),
                   attachments=[Attachment(**a) for a in row["attachments"] or []], reply_to=row["reply_to"],
                   created_ms=row["created_ms"])
