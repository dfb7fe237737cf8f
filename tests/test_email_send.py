"""Sending over a real SMTP server (aiosmtpd): threading headers, tickets, errors, no header injection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
import redis.asyncio as aioredis

from adapters.email.adapter import EmailAdapter
from adapters.email.config import EmailConfig
from bridge.adapter import Delivered
from bridge.errors import PermanentError, SendError, TransientError
from bridge.model import Message, Sender
from bridge.sentonce import SENT_KEY
from tests.mailservers import Recorder, RecordingHandler, make_context, smtp_server
from tests.servers import free_port

CONV = "3f9a0c1b2d4e-2"


@pytest.fixture
def smtp() -> Iterator[tuple[RecordingHandler, int]]:
    with smtp_server() as server:
        yield server


def email_config(smtp_port: int, **extra: Any) -> EmailConfig:
    return EmailConfig(address="support@example.com", from_name="ACME Support", smtp_host="127.0.0.1",
                       smtp_port=smtp_port, smtp_tls="none", smtp_timeout_s=5, **extra)


@pytest.fixture
async def adapter(redis: aioredis.Redis, smtp: tuple[RecordingHandler, int]) -> AsyncIterator[EmailAdapter]:
    recorder = Recorder()
    adapter = EmailAdapter(email_config(smtp[1]), make_context(redis, recorder))
    await adapter.start()
    yield adapter
    await adapter.stop()


def address(msg: EmailMessage, header: str) -> tuple[str, str]:
    (one,) = msg[header].addresses
    return (one.display_name, one.addr_spec)


async def remember_customer_mail(adapter: EmailAdapter, inbound_id: str, **info: Any) -> None:
    """What ingest keeps about a customer's mail (the adapter's own state)."""
    value = {"message_id": "cust-1@customer.example", "subject": "Order 1042 late", "name": "Ann Lee",
             "references": ["cust-1@customer.example"], "cc": [], **info}
    await adapter.ctx.state.set(f"in:{inbound_id}", json.dumps(value))


async def test_reply_is_threaded_under_the_customers_mail(adapter: EmailAdapter, smtp: Any) -> None:
    handler, _ = smtp
    await remember_customer_mail(adapter, "in-1")
    reply = Message(kind="reply", channel="email", address="ann.lee@customer.example", conversation_id=CONV,
                    reply_to="in-1", text="Thank you for your message.\n\nYour reference: " + CONV)
    delivered = await adapter.send(reply)
    (mail,) = await handler.wait_for(1)
    msg = mail.message
    assert mail.rcpt_tos == ["ann.lee@customer.example"] and mail.mail_from == "support@example.com"
    assert msg["In-Reply-To"] == "<cust-1@customer.example>"
    assert msg["References"] == "<cust-1@customer.example>"
    assert msg["Subject"] == f"Re: Order 1042 late [#{CONV}]"
    assert address(msg, "Reply-To") == ("ACME Support", f"support+{CONV}@example.com")
    assert address(msg, "To") == ("Ann Lee", "ann.lee@customer.example")
    assert msg["Auto-Submitted"] == "auto-replied"  # an automatic answer says so (RFC 3834)
    assert msg.get_content_type() == "multipart/alternative"
    assert mail.text().strip() == reply.text
    html = msg.get_body(("html",))
    assert html is not None and "<p>Thank you for your message.</p>" in html.get_content()
    assert delivered == Delivered(platform_id=msg["Message-ID"].strip("<>"), ref=f"email:{msg['Message-ID'][1:-1]}")

    # the next reply in the conversation threads under both earlier mails
    await adapter.send(Message(kind="reply", channel="email", address="ann.lee@customer.example",
                               conversation_id=CONV, text="Your parcel shipped.",
                               sender=Sender(id="U1", name="Ana", is_agent=True)))
    second = (await handler.wait_for(2))[1].message
    assert second["In-Reply-To"] == "<cust-1@customer.example>"
    assert second["References"].split() == ["<cust-1@customer.example>", msg["Message-ID"]]
    assert second["Subject"] == f"Re: Order 1042 late [#{CONV}]"
    assert second["Auto-Submitted"] is None  # a person wrote this one
    assert address(second, "From") == ("Ana (ACME Support)", "support@example.com")


async def test_a_redelivered_reply_is_mailed_once_and_a_resent_one_keeps_its_message_id(
        adapter: EmailAdapter, smtp: Any) -> None:
    """A redelivery of a reply mailed whole mails nothing again (the send is noted by its
    id); one whose note is missing (the bridge died between the SMTP server's 250 and the
    note) is mailed again with the same Message-ID, which mail programs can drop."""
    handler, _ = smtp
    reply = Message(kind="reply", channel="email", address="ann@customer.example", conversation_id=CONV, text="Hi")
    first = await adapter.send(reply)
    assert await adapter.send(reply) == first
    assert len(handler.received) == 1
    await adapter.ctx.state.delete(SENT_KEY + reply.id)
    assert (await adapter.send(reply)).platform_id == first.platform_id
    mails = await handler.wait_for(2)
    assert len(handler.received) == 2 and mails[0].message["Message-ID"] == mails[1].message["Message-ID"]


async def test_header_injection_is_impossible(adapter: EmailAdapter, smtp: Any) -> None:
    handler, _ = smtp
    evil = "Ann\r\nBcc: victim@evil.example\r\nX-Injected: yes"
    await remember_customer_mail(adapter, "in-evil", name=evil,
                                 subject="Hello\r\nBcc: victim@evil.example\nX-Injected: yes\r\n\r\nbody")
    await adapter.send(Message(kind="reply", channel="email", address="ann@customer.example", conversation_id=CONV,
                               reply_to="in-evil", text="Reply\r\nBcc: victim@evil.example",
                               sender=Sender(name=evil, is_agent=True)))
    (mail,) = await handler.wait_for(1)
    assert mail.rcpt_tos == ["ann@customer.example"]
    msg = mail.message
    assert msg["Bcc"] is None and msg["X-Injected"] is None
    assert sorted(msg.keys()) == sorted(["From", "To", "Reply-To", "Subject", "Date", "Message-ID", "In-Reply-To",
                                         "References", "X-Bridge-Conversation", "MIME-Version", "Content-Type"])
    assert "\n" not in msg["Subject"] and "Bcc: victim@evil.example" in msg["Subject"]  # kept as text, one line
    # an address with a line break is refused, never sent
    with pytest.raises(PermanentError) as refused:
        await adapter.send(Message(kind="reply", channel="email", address="a@b.example\r\nBcc: victim@evil.example",
                                   text="x"))
    assert refused.value.unreachable
    assert len(handler.received) == 1


ENCODED_INJECTIONS = [
    "=?utf-8?q?Ann=0D=0ABcc:_victim@evil.example?=",  # CVE-2024-6923: decoded by the email package
    "=?utf-8?b?QW5uDQpCY2M6IHZpY3RpbUBldmlsLmV4YW1wbGUNClgtSW5qZWN0ZWQ6IHllcw==?=",
    "=?utf-8?q?=3D=3Futf-8=3Fq=3FAnn=3D0D=3D0ABcc:=5Fvictim@evil.example=3F=3D?=",  # a word inside a word
    "=?x-unknown?q?Ann=0D=0ABcc:_victim@evil.example?=",  # a charset nobody knows
    "Ann Bcc: victim@evil.example " + "a" * 80,  # a name long enough to be folded
]


@pytest.mark.parametrize("evil", ENCODED_INJECTIONS)
async def test_encoded_line_breaks_in_names_and_subjects_add_no_header(adapter: EmailAdapter, smtp: Any,
                                                                       evil: str) -> None:
    """A customer's name (API ``name``, Telegram ``last_name``) or subject with RFC 2047 words
    that carry CR/LF: the mail the server receives has only our headers and one recipient."""
    handler, _ = smtp
    await remember_customer_mail(adapter, "in-enc", name=evil, subject=evil)
    await adapter.send(Message(kind="reply", channel="email", address="ann@customer.example", conversation_id=CONV,
                               reply_to="in-enc", text="Thanks", sender=Sender(name=evil, is_agent=True)))
    summary = {"id": CONV, "channel": "api", "address": "shop-77", "customer": evil, "email": ""}
    await adapter.send(Message(kind="event", name="ticket", channel="email", address="team@example.com",
                               conversation_id=CONV, text=evil, sender=Sender(id="shop-77", name=evil),
                               data={"queue": "default", "conversation": summary}))
    reply, ticket = await handler.wait_for(2)
    assert reply.rcpt_tos == ["ann@customer.example"] and ticket.rcpt_tos == ["team@example.com"]
    for received, names in ((reply, ["In-Reply-To", "References"]), (ticket, ["X-Bridge-Queue", "Auto-Submitted",
                                                                             "X-Auto-Response-Suppress"])):
        msg = received.message
        assert msg["Bcc"] is None and msg["X-Injected"] is None
        assert sorted(msg.keys()) == sorted(["From", "To", "Reply-To", "Subject", "Date", "Message-ID",
                                             "X-Bridge-Conversation", "MIME-Version", "Content-Type", *names])
        assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]
        for header in ("From", "To", "Reply-To"):
            assert all("evil.example" not in a.addr_spec for a in msg[header].addresses)
    assert [a.addr_spec for a in reply.message["To"].addresses] == ["ann@customer.example"]
    assert "victim" in reply.message["To"].addresses[0].display_name  # kept as text, harmless


async def test_automatic_mail_never_goes_to_a_strangers_reply_to(adapter: EmailAdapter, smtp: Any) -> None:
    """Backscatter: anyone can put anyone's address in Reply-To. Automatic answers go only to
    an address that wrote to us itself; a person's answer goes to the Reply-To."""
    handler, _ = smtp
    for uid, sender in enumerate(["noreply@shop.example", "someone@elsewhere.example"], 1):  # not even same-domain
        forged = (f"From: Website <{sender}>\r\nReply-To: victim@elsewhere.example\r\nTo: support@example.com\r\n"
                  f"Subject: Contact form\r\nMessage-ID: <form-{uid}@shop.example>\r\n\r\nhi\r\n").encode()
        await adapter.ingest(uid, forged)
        ack = Message(kind="reply", channel="email", address="victim@elsewhere.example", conversation_id=CONV,
                      text="Thank you, we will answer within 24 hours.")
        assert await adapter.send(ack) == Delivered()
    assert handler.received == []  # nothing mailed to the address the stranger named
    person = Message(kind="reply", channel="email", address="victim@elsewhere.example", conversation_id=CONV,
                     text="Hello, Ana here.", sender=Sender(name="Ana", is_agent=True))
    await adapter.send(person)
    (answered,) = await handler.wait_for(1)
    assert answered.rcpt_tos == ["victim@elsewhere.example"] and answered.text().strip() == "Hello, Ana here."

    # the address writes itself (a plus tag is the same mailbox): automatic mail goes to it again
    await adapter.ingest(3, b"From: Victim <victim+shop@elsewhere.example>\r\nReply-To: victim@elsewhere.example\r\n"
                            b"To: support@example.com\r\nSubject: me\r\nMessage-ID: <self-1@elsewhere.example>\r\n"
                            b"\r\nyes it was me\r\n")
    await adapter.send(ack)
    received = await handler.wait_for(2)
    assert received[1].rcpt_tos == ["victim@elsewhere.example"] and "24 hours" in received[1].text()


async def test_ticket_goes_to_the_team_address_with_the_token(adapter: EmailAdapter, smtp: Any) -> None:
    handler, _ = smtp
    summary = {"id": CONV, "channel": "telegram", "address": "12345", "language": "ru", "urgency": "routine",
               "queue": "billing", "topic": "invoice", "customer": "Иван", "email": ""}
    event = Message(kind="event", name="ticket", channel="email", address="billing@example.com",
                    conversation_id=CONV, text="Пришлите, пожалуйста, счёт за май.",
                    sender=Sender(id="12345", name="Иван", language="ru"),
                    data={"queue": "billing", "conversation": summary})
    delivered = await adapter.send(event)
    (mail,) = await handler.wait_for(1)
    msg = mail.message
    assert mail.rcpt_tos == ["billing@example.com"]
    assert address(msg, "Reply-To") == ("ACME Support", f"support+{CONV}@example.com")
    assert f"[#{CONV}]" in msg["Subject"] and "Иван" in msg["Subject"]
    assert msg["Auto-Submitted"] == "auto-generated"
    body = mail.text()
    for line in ("Customer:     Иван", "Channel:      telegram (12345)", "Language:     ru", "Topic:        invoice",
                 f"Conversation: {CONV}", "Пришлите, пожалуйста, счёт за май."):
        assert line in body
    assert delivered.ref == f"email:{delivered.platform_id}" and delivered.platform_id == msg["Message-ID"][1:-1]

    # a later customer message (email as an agents' channel) joins the ticket's thread
    await adapter.send(Message(kind="event", name="customer_message", channel="email", conversation_id=CONV,
                               text="И ещё акт сверки.", sender=Sender(name="Иван")))
    follow = (await handler.wait_for(2))[1]
    assert follow.rcpt_tos == ["billing@example.com"]
    assert follow.message["In-Reply-To"] == msg["Message-ID"]
    assert follow.message["Subject"] == "Re: " + msg["Subject"]
    assert "И ещё акт сверки." in follow.text()
    # the customer's out-of-office is recorded but not mailed to the team
    auto = Message(kind="event", name="customer_message", channel="email", conversation_id=CONV,
                   text="I am away", data={"auto": True})
    assert await adapter.send(auto) == Delivered() and len(handler.received) == 2


async def test_other_agent_events_send_nothing(adapter: EmailAdapter, smtp: Any) -> None:
    handler, _ = smtp
    assert await adapter.send(Message(kind="event", name="state", channel="email", conversation_id=CONV)) == Delivered()
    assert await adapter.send(Message(kind="event", name="customer_message", channel="email",
                                      conversation_id="000000000000-1", text="no ticket")) == Delivered()
    assert handler.received == []


# 451 and 554 (and 550 at RCPT): the contract suite, tests/contract/test_outbound.py
@pytest.mark.parametrize(("code", "error", "unreachable"), [
    ("452 4.2.2 Mailbox full", TransientError, False),
])
async def test_smtp_answers_map_to_send_errors(adapter: EmailAdapter, smtp: Any, code: str, error: type,
                                               unreachable: bool) -> None:
    handler, _ = smtp
    handler.fail_with = code
    with pytest.raises(error) as raised:
        await adapter.send(Message(kind="reply", channel="email", address="ann@customer.example", text="Hi"))
    assert isinstance(raised.value, SendError) and code.split()[0] in raised.value.reason
    assert getattr(raised.value, "unreachable", False) == unreachable


async def test_an_unreachable_server_is_a_transient_error(redis: aioredis.Redis) -> None:
    adapter = EmailAdapter(email_config(free_port()), make_context(redis, Recorder()))
    with pytest.raises(TransientError):
        await adapter.send(Message(kind="reply", channel="email", address="ann@customer.example", text="Hi"))
    assert (await adapter.check())[0] == "degraded"
