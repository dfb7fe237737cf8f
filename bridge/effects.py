"""What one message causes, as data: the store turns it into the partition's commit."""

from __future__ import annotations

import msgspec

from bridge.model import Contact, Conversation, Message


class Effects(msgspec.Struct):
    """Everything a turn changed, written in one atomic commit with the message's ack."""

    conversation: Conversation  # saved as it is now
    previous_status: str | None  # None: a new conversation (its address now points to it)
    previous_updated_ms: int = 0  # the conversation's updated_ms before the turn (0: unknown)
    kept: list[Message | bytes] = msgspec.field(default_factory=list)  # appended to the transcript, in order
    outbound: list[Message] = msgspec.field(default_factory=list)  # to outbound:<channel>
    queued: list[tuple[str, Message]] = msgspec.field(default_factory=list)  # (email queue, case)
    timers: list[tuple[int, Message]] = msgspec.field(default_factory=list)  # (due ms, command)
    contact: Contact | None = None  # a new or changed contact, saved with its indexes
    cause: Message | None = None  # the message that caused the turn (for the history's events)
    # the contact existed before: other workers may hold it, so their caches are told (CONTACTS_REV)
    contact_shared: bool = False
    # (contact id, its history's new entry)
    contact_events: list[tuple[str, bytes]] = msgspec.field(default_factory=list)
