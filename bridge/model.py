"""The one message model: everything that crosses Redis is a `Message`.

A message carries its channel and address as plain strings, never live objects, so it
can travel through a stream and be read by any process. Encoding is msgpack through
msgspec; unknown fields written by a newer version are ignored on decode, and `v`
says which version wrote the message.

Kinds:

- ``customer``: a customer wrote on ``channel`` from ``address``.
- ``agent``: an agent wrote to the customer of ``conversation_id`` (or of the thread
  named by ``ref``); ``channel`` is where the agent wrote (slack, email, console).
- ``command``: an action on a conversation (``name`` says which: claim, assign,
  resolve, reopen, urgency, link, ...; ``data`` holds its arguments). Agents send them
  from their side; flows and timers send them too.
- ``reply``: an outbound message for the customer on ``channel``/``address``.
- ``event``: news for the agents' side (``name``: escalation, customer_message,
  delivery, state, ...), delivered to each agent channel's outbound stream.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import time
from typing import Any, Literal

import msgspec

MODEL_VERSION = 1

Kind = Literal["customer", "agent", "command", "reply", "event"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_PROCESS = os.urandom(4).hex()  # ids from different processes never collide
_sequence = itertools.count(int.from_bytes(os.urandom(3), "big"))


_head_ms, _head = -1, ""  # the milliseconds of the last id and its first 24 characters
_LOW_DIGITS = [f"{n:04x}" for n in range(1 << 16)]  # the counter's last 4 hex digits, made once


def new_id() -> str:
    """A 28-character, time-sortable, unique id: 12 hex digits of milliseconds, 8 of this
    process, 8 of a counter. Not secret: never use it as a credential."""
    global _head_ms, _head
    ms = time.time_ns() // 1_000_000
    n = next(_sequence) & 0xFFFFFFFF
    low = n & 0xFFFF
    # a hot path makes many ids a millisecond: their head (with the counter's first 4
    # digits) is made once, the rest looked up (0.67 µs an id against 1.1 on a slow VM)
    if ms != _head_ms or not low:
        _head_ms, _head = ms, f"{ms:012x}{_PROCESS}{n >> 16:04x}"
    return _head + _LOW_DIGITS[low]


class Sender(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Who wrote: a platform user id, display name and what the platform says of them."""

    id: str = ""
    name: str = ""
    username: str = ""
    email: str = ""
    language: str = ""  # a hint from the platform (Telegram language_code, browser)
    is_agent: bool = False


class Attachment(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Metadata of a file; the bytes stay on the platform and are fetched on demand by `ref`."""

    name: str = ""
    mime: str = "application/octet-stream"
    size: int = 0
    ref: str = ""  # platform file id (Telegram file_id, Slack file id, email part index)
    url: str = ""  # where the bridge can fetch it, when the platform gives a URL


class Button(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An inline choice; channels without buttons render ``label`` as text."""

    label: str
    value: str


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    kind: Kind
    channel: str
    address: str = ""
    id: str = msgspec.field(default_factory=new_id)
    v: int = MODEL_VERSION
    conversation_id: str = ""
    ref: str = ""  # an external thread reference the engine resolves to a conversation
    dedupe_key: str = ""  # "<channel>:<platform's own id>"; empty means never deduplicated
    text: str = ""
    name: str = ""  # event or command name
    sender: Sender | None = None
    attachments: list[Attachment] = msgspec.field(default_factory=list)
    buttons: list[Button] = msgspec.field(default_factory=list)
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    reply_to: str = ""  # id of the message this one answers
    edited: bool = False
    platform_ms: int = 0  # when the platform says it was written
    created_ms: int = msgspec.field(default_factory=now_ms)

    @property
    def partition_key(self) -> str:
        """Messages with equal keys land in the same inbound partition, in order."""
        if self.conversation_id:
            return conversation_hash(self.conversation_id)
        return address_hash(self.channel, self.address)


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(payload: bytes) -> Message:
    """Decode one message; raises `msgspec.DecodeError` (a ValueError) on bad input."""
    return _decoder.decode(payload)


_batch_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])


def encode_batch(payloads: list[bytes]) -> bytes:
    """Encoded messages as one msgpack array: a stream entry that holds several
    (`keys.BATCH_FIELD`), each as it was encoded."""
    return _encoder.encode([msgspec.Raw(payload) for payload in payloads])


def batch_payloads(blob: bytes) -> list[bytes]:
    """The encoded messages of a batch entry; raises `msgspec.DecodeError` when it is no
    array (each message is decoded, and may fail, on its own)."""
    return [bytes(part) for part in _batch_decoder.decode(blob)]


@functools.lru_cache(maxsize=1 << 16)
def address_hash(channel: str, address: str) -> str:
    """12 hex digits naming a customer address; conversation ids start with it (kept for
    the addresses seen lately: every message's partition is found from it)."""
    return hashlib.blake2b(f"{channel}\0{address}".encode(), digest_size=6).hexdigest()


def conversation_hash(conversation_id: str) -> str:
    """The address hash a conversation id was made from (``<hash>-<n>``)."""
    return conversation_id.split("-", 1)[0]


def conversation_number(conversation_id: str) -> int:
    """n of a conversation id ``<address hash>-<n>`` (0 for any other id)."""
    tail = conversation_id.rpartition("-")[2]
    return int(tail) if tail.isdigit() else 0


def entry_order(entry_id: bytes) -> tuple[int, int]:
    """A Redis stream entry id as (ms, sequence): ids of several streams compare in the
    order Redis gave them (to the millisecond)."""
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def partition_of(key_hash: str, partitions: int) -> int:
    """The partition of an address hash (any other text, such as an id a test or an older
    system made, gets one from its digest: never an error)."""
    try:
        return int(key_hash, 16) % partitions
    except ValueError:
        return int(hashlib.blake2b(key_hash.encode(), digest_size=6).hexdigest(), 16) % partitions


Status = Literal["open", "pending", "resolved"]


class Conversation(msgspec.Struct, kw_only=True):
    """One customer on one channel address, from first message to resolution.

    Written only by the engine worker that owns the conversation's partition; read by
    anyone (console, status, reports).
    """

    id: str
    channel: str
    address: str
    contact_id: str = ""
    status: Status = "open"
    language: str = ""
    urgency: str = "routine"  # "urgent" or "routine"
    urgency_reason: str = ""  # why triage decided so, shown to agents
    queue: str = ""
    topic: str = ""
    assignee: str = ""
    tags: list[str] = msgspec.field(default_factory=list)
    unreachable: str = ""  # why the address cannot be reached any more, if so
    created_ms: int = 0
    updated_ms: int = 0
    first_response_ms: int = 0
    resolved_ms: int = 0
    last_customer_ms: int = 0
    messages: int = 0
    data: dict[str, Any] = msgspec.field(default_factory=dict)  # flow state (SLA, survey, dispute)


class Contact(msgspec.Struct, kw_only=True):
    """A person; may own addresses on several channels (linked by email or by command)."""

    id: str
    name: str = ""
    email: str = ""
    language: str = ""
    tier: str = ""  # e.g. "vip"
    addresses: list[str] = msgspec.field(default_factory=list)  # "<channel>:<address>"
    created_ms: int = 0
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    # Read with the contact, kept in keys of their own (bridge/contacts.py), never in this
    # record: what agents set about the person (company, tier, notes; the person's first
    # contact's values win), the person's first contact ("" when this is it) and the
    # other contacts linked with it as the same person.
    fields: dict[str, str] = msgspec.field(default_factory=dict)
    person: str = ""
    linked: list[str] = msgspec.field(default_factory=list)

    def current_tier(self) -> str:
        """The tier an agent set for the person, else the one this contact came with."""
        return self.fields.get("tier") or self.tier

    def record(self) -> Contact:
        """This contact without what is kept elsewhere: what the engine writes."""
        return msgspec.structs.replace(self, fields={}, person="", linked=[])


_conv_encoder = msgspec.msgpack.Encoder()
_conv_decoder = msgspec.msgpack.Decoder(Conversation)
_contact_decoder = msgspec.msgpack.Decoder(Contact)


def encode_record(record: Conversation | Contact) -> bytes:
    return _conv_encoder.encode(record)


def decode_conversation(payload: bytes) -> Conversation:
    return _conv_decoder.decode(payload)


def decode_contact(payload: bytes) -> Contact:
    return _contact_decoder.decode(payload)
