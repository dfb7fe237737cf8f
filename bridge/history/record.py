"""One turn as the projector reads it from an outbox stream.

Compact by design (it rides in the engine's commit): a msgpack array whose conversation,
contact and transcript messages are the very bytes the store writes to Redis, embedded
as they are (no second encoding of a message already encoded).
"""

from __future__ import annotations

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


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(TurnRecord)


def encode_turn(record: TurnRecord) -> bytes:
    return _encoder.encode(record)


def decode_turn(payload: bytes) -> TurnRecord:
    return _decoder.decode(payload)


def raw(payload: bytes) -> msgspec.Raw:
    return msgspec.Raw(payload)


def conversation_of(record: TurnRecord) -> Conversation:
    return decode_conversation(bytes(record.conversation))


def contact_of(record: TurnRecord) -> Contact | None:
    return decode_contact(bytes(record.contacts[0])) if record.contacts else None


def messages_of(record: TurnRecord) -> list[Message]:
    return [decode(bytes(m)) for m in record.kept]
