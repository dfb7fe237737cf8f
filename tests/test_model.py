"""The message model: compact, versioned, tolerant of newer fields."""

from __future__ import annotations

import msgspec
import pytest

from bridge.model import Attachment, Message, Sender, decode, encode, new_id, partition_of


def test_round_trip_keeps_every_field() -> None:
    message = Message(kind="customer", channel="telegram", address="12345", dedupe_key="telegram:99",
                      text="Привет, 你好", sender=Sender(id="7", name="Olga", language="ru"),
                      attachments=[Attachment(name="photo.jpg", mime="image/jpeg", size=2048, ref="AgAD")],
                      data={"edited_from": 3}, platform_ms=1700000000000)
    again = decode(encode(message))
    assert again == message
    assert again.v == 1 and len(again.id) == 28


def test_unknown_fields_from_a_newer_version_are_ignored() -> None:
    newer = msgspec.msgpack.encode({"kind": "customer", "channel": "api", "address": "c1", "text": "hi",
                                    "v": 2, "sentiment": {"score": 0.4}, "id": "x"})
    message = decode(newer)
    assert message.text == "hi" and message.v == 2


def test_garbage_is_a_clear_error() -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        decode(b"\xc1not msgpack")
    with pytest.raises(msgspec.ValidationError):
        decode(msgspec.msgpack.encode({"kind": "shout", "channel": "api"}))


def test_encoding_is_compact() -> None:
    message = Message(kind="customer", channel="api", address="customer-1", text="Where is my order 12345?")
    assert len(encode(message)) < 150


def test_agent_and_customer_messages_of_a_conversation_share_a_partition() -> None:
    customer = Message(kind="customer", channel="telegram", address="555")
    conversation_id = f"{customer.partition_key}-3"
    agent = Message(kind="agent", channel="slack", conversation_id=conversation_id)
    for partitions in (1, 8, 64):
        assert partition_of(customer.partition_key, partitions) == partition_of(agent.partition_key, partitions)


def test_ids_are_unique_and_start_with_their_creation_time() -> None:
    import time

    before_ms = time.time_ns() // 1_000_000
    ids = [Message(kind="customer", channel="api").id for _ in range(10_000)]
    after_ms = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    assert all(before_ms <= int(i[:12], 16) <= after_ms for i in ids)
    assert ids == sorted(ids)  # one process: time, then a counter


def test_ids_are_28_hex_digits_unique_and_sorted_as_made() -> None:
    # over several milliseconds, and more than 65,536: the counter's last four digits wrap
    # at least once (new_id makes its head again there)
    ids = [new_id() for _ in range(70_000)]
    assert {len(i) for i in ids} == {28}
    assert set("".join(ids)) <= set("0123456789abcdef")
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids
    assert len({i[:12] for i in ids}) > 1  # the milliseconds moved on: the counter's digits went on too
