"""The history's tables (SQLAlchemy Core). Alembic migrations (bridge/history/migrations)
create them; this module is what the projector and the reader write and read.

Times are milliseconds since the epoch (BigInteger), as everywhere in the bridge.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

conversations = Table(
    "conversations", metadata,
    Column("id", String(64), primary_key=True),
    Column("channel", String(64), nullable=False),
    Column("address", String(512), nullable=False),
    Column("contact_id", String(64), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("language", String(16), nullable=False, default=""),
    Column("urgency", String(16), nullable=False, default=""),
    Column("urgency_reason", Text, nullable=False, default=""),
    Column("queue", String(128), nullable=False, default=""),
    Column("topic", String(128), nullable=False, default=""),
    Column("assignee", String(256), nullable=False, default=""),
    Column("tags", JSON, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("first_response_ms", BigInteger, nullable=False, default=0),
    Column("resolved_ms", BigInteger, nullable=False, default=0),
    Column("last_customer_ms", BigInteger, nullable=False, default=0),
    Column("messages", Integer, nullable=False, default=0),
    Column("data", JSON, nullable=False),  # flow state (SLA, survey, dispute)
    Index("ix_conversations_contact", "contact_id"),
    Index("ix_conversations_address", "channel", "address"),
    Index("ix_conversations_created", "created_ms"),
)

messages = Table(
    "messages", metadata,
    Column("id", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),  # transcript order: the record's time, then its position
    Column("conversation_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("channel", String(64), nullable=False),
    Column("name", String(64), nullable=False, default=""),
    Column("text", Text, nullable=False, default=""),
    Column("sender_id", String(256), nullable=False, default=""),
    Column("sender_name", String(256), nullable=False, default=""),
    Column("sender_email", String(256), nullable=False, default=""),
    Column("is_agent", Boolean, nullable=False, default=False),
    Column("attachments", JSON, nullable=False),  # metadata only: name, mime, size, ref, url
    Column("data", JSON, nullable=False),
    Column("reply_to", String(64), nullable=False, default=""),
    Column("created_ms", BigInteger, nullable=False),
    Index("ix_messages_conversation", "conversation_id", "seq"),
    Index("ix_messages_created", "created_ms"),
)

contacts = Table(
    "contacts", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(256), nullable=False, default=""),
    Column("email", String(256), nullable=False, default=""),
    Column("language", String(16), nullable=False, default=""),
    Column("tier", String(64), nullable=False, default=""),
    Column("created_ms", BigInteger, nullable=False, default=0),
    Column("data", JSON, nullable=False),
    Index("ix_contacts_email", "email"),
)

contact_links = Table(
    "contact_links", metadata,
    Column("address", String(600), primary_key=True),  # "<channel>:<address>"
    Column("contact_id", String(64), nullable=False),
    Index("ix_contact_links_contact", "contact_id"),
)

events = Table(
    "events", metadata,
    Column("id", String(96), primary_key=True),  # "<record id>:<n>": the same record never adds an event twice
    Column("conversation_id", String(64), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("name", String(64), nullable=False),  # status, assignee, urgency, topic, queue, sla_warning, ...
    Column("value", Text, nullable=False, default=""),  # the new value, or the notice's text
    Column("previous", Text, nullable=False, default=""),
    Column("reason", Text, nullable=False, default=""),
    Column("by", String(256), nullable=False, default=""),
    Column("data", JSON, nullable=False),
    Index("ix_events_conversation", "conversation_id", "at_ms"),
    Index("ix_events_name_at", "name", "at_ms"),
)

refs = Table(  # thread references (a Slack thread, an email Message-ID) -> their conversation
    "refs", metadata,
    Column("ref", String(600), primary_key=True),
    Column("conversation_id", String(64), nullable=False),
    Index("ix_refs_conversation", "conversation_id"),
)

projected = Table(  # outbox records already applied: a record read twice is applied once
    "projected", metadata,
    Column("id", String(64), primary_key=True),
    Column("at_ms", BigInteger, nullable=False),
)

erasures = Table(  # data-protection erasures done: when, and what was removed; no personal data
    "erasures", metadata,
    Column("id", String(64), primary_key=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("by", String(256), nullable=False, default=""),
    Column("counts", JSON, nullable=False),
)
