"""The records the projector reads from an outbox stream: the turns of one commit, or
thread refs.

A turn is compact by design (it rides in the engine's commit): a msgpack array whose
conversation, contact and transcript messages are the very bytes the store writes to
Redis, embedded as they are (no second encoding of a message already encoded). Fields are
only ever added at the end with a default, so older entries still decode. A commit's turns
go as one entry, a `TurnsRecord` (one XADD per commit instead of one per message); entries
of one turn each, as bridges before 2026-12 wrote them, still decode.

The dispatcher's refs (a sent Slack message's thread, a sent email's Message-ID) are
known only after a send: they come as a `RefsRecord`, whose first element is the string
``"refs"`` where a turn has its version number.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from bridge.model import Contact, Conversation, Message, decode, decode_contact, decode_conversation

RECORD_VERSION = 1


class TurnRecord(msgspec.Struct, array_like=True):
    v: int
    id: str  # unique: the projector applies each record once
    at_ms: int
    conversation: msgspec.Raw  # the conversation after the turn (model.encode_record)
    kept: list[msgspec.Raw]  # messages appended to the transcript, in order (model.encode)
    contacts: list[msgspec.Raw]  # a new or changed contact, or none (msgspec reads no Raw | None)
    previous_status: str | None = None  # None: the turn opened the conversation
    cause: str = ""  # "<kind>:<name>" of the message that caused the turn
    by: str = ""  # who caused it (agent or sender name), for the events' "by"
    refs: list[str] = []  # thread refs the turn gave the conversation (no turn does: they come as RefsRecord)


TURNS_KIND = "turns"


class TurnsRecord(msgspec.Struct, array_like=True):
    """The turns of one commit, in order; each is applied once by its own id."""

    kind: str  # TURNS_KIND
    turns: list[TurnRecord]


REFS_KIND = "refs"


class RefsRecord(msgspec.Struct, array_like=True):
    """Thread refs a send returned, each with its conversation id."""

    kind: str  # REFS_KIND
    id: str  # unique: the projector applies each record once
    at_ms: int
    refs: list[tuple[str, str]]  # (ref, conversation id)


class _Head(msgspec.Struct, array_like=True):
    kind: int | str  # a turn's version number, or REFS_KIND


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(TurnRecord)
_turns_decoder = msgspec.msgpack.Decoder(TurnsRecord)
_refs_decoder = msgspec.msgpack.Decoder(RefsRecord)
_head_decoder = msgspec.msgpack.Decoder(_Head)


def encode_turns(turns: list[TurnRecord]) -> bytes:
    return _encoder.encode(TurnsRecord(kind=TURNS_KIND, turns=turns))


def encode_refs(record: RefsRecord) -> bytes:
    return _encoder.encode(record)


def decode_records(payload: bytes) -> list[TurnRecord | RefsRecord]:
    """An outbox entry's records: a commit's turns, a refs record or one turn (an older
    entry), told apart by the first element."""
    kind = _head_decoder.decode(payload).kind
    if kind == TURNS_KIND:
        return list(_turns_decoder.decode(payload).turns)
    if kind == REFS_KIND:
        return [_refs_decoder.decode(payload)]
    return [_decoder.decode(payload)]


def without(payload: bytes, needles: list[bytes]) -> bytes | None:
    """A commit's turns less those holding one of ``needles`` (msgpack-packed strings: an
    erasure's), encoded again; None when none stays or ``payload`` is another record."""
    try:
        if _head_decoder.decode(payload).kind != TURNS_KIND:
            return None
        turns = _turns_decoder.decode(payload).turns
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    kept = [t for t in turns if not any(n in _encoder.encode(t) for n in needles)]
    return encode_turns(kept) if kept else None


def raw(payload: bytes) -> msgspec.Raw:
    return msgspec.Raw(payload)


def conversation_of(record: TurnRecord) -> Conversation:
    return decode_conversation(bytes(record.conversation))


def contact_of(record: TurnRecord) -> Contact | None:
    return decode_contact(bytes(record.contacts[0])) if record.contacts else None


def messages_of(record: TurnRecord) -> list[Message]:
    return [decode(bytes(m)) for m in record.kept]


class Named(msgspec.Struct):
    """What a batch of records wrote about one contact."""

    conversations: set[str] = msgspec.field(default_factory=set)
    addresses: set[str] = msgspec.field(default_factory=set)  # "<channel>:<address>"


def contacts_named(records: Sequence[TurnRecord | RefsRecord]) -> dict[str, Named]:
    """The contacts the turns name (their conversation's, and the contact they carry), each
    with its conversations and addresses; a refs record names conversations only."""
    named: dict[str, Named] = {}
    for record in records:
        if isinstance(record, RefsRecord):
            continue
        conversation = conversation_of(record)
        if conversation.contact_id:
            named.setdefault(conversation.contact_id, Named()).conversations.add(conversation.id)
        contact = contact_of(record)
        if contact is not None:
            named.setdefault(contact.id, Named()).addresses.update(contact.addresses)
    return named
