"""Which conversation a mail joins, and whether it is a customer's or an agent's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from adapters.email.adapter import EmailAdapter
from adapters.email.config import EmailConfig
from adapters.email.parse import parse
from adapters.email.threading import reply_subject, subject_token, with_token
from bridge.model import Contact, Conversation
from tests.mailservers import Conversations, Recorder, make_context

CORPUS = Path(__file__).parent / "fixtures" / "email"
CONV = "3f9a0c1b2d4e-2"  # Ann's email conversation in the corpus
TELEGRAM_CONV = "aaaaaaaaaaaa-7"


@pytest.fixture
def conversations() -> Conversations:
    store = Conversations()
    store.items[CONV] = Conversation(id=CONV, channel="email", address="ann.lee@customer.example", contact_id="c1")
    store.items[TELEGRAM_CONV] = Conversation(id=TELEGRAM_CONV, channel="telegram", address="555")
    store.contacts["c1"] = Contact(id="c1", name="Ann Lee", email="ann.private@home.example")
    store.refs["email:ack-1@example.com"] = CONV  # our acknowledgement, remembered by the bridge
    return store


@pytest.fixture
async def adapter(redis: aioredis.Redis, conversations: Conversations) -> AsyncIterator[EmailAdapter]:
    config = EmailConfig(address="support@example.com", agents=["boss@partner.example"])
    yield EmailAdapter(config, make_context(redis, Recorder(), conversations))


def mail(headers: str, body: str = "Hello") -> bytes:
    return (headers.strip().replace("\n", "\r\n") + "\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + body + "\r\n").encode()


async def test_a_reply_to_our_mail_joins_by_in_reply_to(adapter: EmailAdapter) -> None:
    message = await adapter.to_message(parse((CORPUS / "gmail_reply_en.eml").read_bytes()))
    assert message is not None and message.kind == "customer"
    assert message.conversation_id == CONV
    assert message.data["match"] == "in-reply-to ack-1@example.com"
    assert message.text == "Thanks, the tracking number is AB123.\n\nAnn"
    assert "On Mon, Nov 23, 2026" in message.data["original"]
    assert message.data["in_reply_to"] == "ack-1@example.com"
    assert message.data["references"] == ["plain-1@customer.example", "ack-1@example.com"]
    assert message.sender is not None and message.sender.email == "ann.lee@customer.example"


async def test_outlook_dropping_the_headers_still_joins_by_the_subject_token(adapter: EmailAdapter,
                                                                              conversations: Conversations) -> None:
    conversations.items[CONV].address = "carl@corp.example"
    message = await adapter.to_message(parse((CORPUS / "outlook_reply_en.eml").read_bytes()))
    assert message is not None and message.conversation_id == CONV
    assert message.data["match"] == f"subject-token {CONV}"


async def test_a_token_in_the_reply_address_joins(adapter: EmailAdapter) -> None:
    raw = mail(f"From: ann.lee@customer.example\nTo: support+{CONV}@example.com\nSubject: hi\nMessage-ID: <t1@x>")
    message = await adapter.to_message(parse(raw))
    assert message is not None and message.conversation_id == CONV and message.data["match"] == f"address-token {CONV}"


async def test_a_stranger_using_a_token_does_not_join(adapter: EmailAdapter) -> None:
    raw = mail(f"From: mallory@evil.example\nTo: support@example.com\nSubject: Re: [#{CONV}]\n"
               "In-Reply-To: <ack-1@example.com>\nMessage-ID: <m1@evil.example>")
    message = await adapter.to_message(parse(raw))
    assert message is not None and message.kind == "customer" and message.conversation_id == ""
    assert message.data["match"] == "new"
    assert "mallory@evil.example does not belong" in message.data["match_rejected"]


async def test_the_customers_other_address_and_cc_colleagues_belong(adapter: EmailAdapter) -> None:
    # the contact's known second address
    raw = mail(f"From: ann.private@home.example\nSubject: Re: [#{CONV}]\nMessage-ID: <p1@home.example>")
    message = await adapter.to_message(parse(raw))
    assert message is not None and message.conversation_id == CONV
    # a colleague the customer CC'd on a mail in the conversation
    colleague = parse((CORPUS / "cc_reply.eml").read_bytes())
    assert (await adapter.to_message(colleague)).conversation_id == ""  # type: ignore[union-attr]
    await adapter._add_members(CONV, ["colleague@customer.example"])
    joined = await adapter.to_message(colleague)
    assert joined is not None and joined.conversation_id == CONV and joined.data["cc"] == ["ann.lee@customer.example"]


async def test_an_agents_reply_to_a_ticket_is_an_agent_message(adapter: EmailAdapter) -> None:
    await adapter._set_json(f"ticket:{TELEGRAM_CONV}", {"message_id": "ticket-1@example.com",
                                                         "team": "billing@example.com", "subject": "x"})
    await adapter._remember_message_id("ticket-1@example.com", TELEGRAM_CONV)
    raw = mail(f"From: Ana <ana@example.com>\nTo: support+{TELEGRAM_CONV}@example.com\n"
               f"Subject: Re: [billing] Ivan: invoice [#{TELEGRAM_CONV}]\nIn-Reply-To: <ticket-1@example.com>\n"
               "Message-ID: <a1@example.com>",
               "Your invoice is attached.\n\nOn Mon, Support <support@example.com> wrote:\n> New case")
    message = await adapter.to_message(parse(raw))
    assert message is not None and message.kind == "agent"
    assert message.conversation_id == TELEGRAM_CONV and message.ref == "email:ticket-1@example.com"
    assert message.text == "Your invoice is attached."
    assert message.sender is not None and message.sender.is_agent and message.sender.name == "Ana"
    assert message.dedupe_key == "email:a1@example.com"
    # an out-of-office from the agent answering the ticket is never forwarded
    ooo = mail(f"From: ana@example.com\nSubject: Automatic reply: [#{TELEGRAM_CONV}]\nAuto-Submitted: auto-replied\n"
               "In-Reply-To: <ticket-1@example.com>\nMessage-ID: <a2@example.com>")
    assert await adapter.to_message(parse(ooo)) is None


async def test_a_listed_agent_and_an_agent_without_a_conversation(adapter: EmailAdapter) -> None:
    raw = mail(f"From: boss@partner.example\nSubject: Re: [#{TELEGRAM_CONV}]\nMessage-ID: <b1@partner.example>")
    message = await adapter.to_message(parse(raw))
    assert message is not None and message.kind == "agent" and message.conversation_id == TELEGRAM_CONV
    own_question = mail("From: boss@partner.example\nSubject: my printer\nMessage-ID: <b2@partner.example>")
    message = await adapter.to_message(parse(own_question))  # names no conversation: a case of their own
    assert message is not None and message.kind == "customer" and message.address == "boss@partner.example"
    assert message.sender is not None and not message.sender.is_agent


async def test_a_customer_never_joins_another_channels_conversation(adapter: EmailAdapter,
                                                                    conversations: Conversations) -> None:
    conversations.items[TELEGRAM_CONV].contact_id = "c1"  # same person, but the thread is Telegram's
    raw = mail(f"From: ann.private@home.example\nSubject: Re: [#{TELEGRAM_CONV}]\nMessage-ID: <x9@home.example>")
    message = await adapter.to_message(parse(raw))
    assert message is not None and message.kind == "customer" and message.conversation_id == ""


async def test_loops_are_recorded_as_auto_and_own_mail_is_skipped(adapter: EmailAdapter) -> None:
    ooo = await adapter.to_message(parse((CORPUS / "auto_reply_ooo.eml").read_bytes()))
    assert ooo is not None and ooo.data["auto"] is True and ooo.data["loop_reason"] == "auto-submitted: auto-replied"
    assert ooo.conversation_id == CONV  # recorded in the customer's conversation, never answered
    bounce = await adapter.to_message(parse((CORPUS / "bounce_dsn.eml").read_bytes()))
    assert bounce is not None and bounce.data["auto"] is True
    assert bounce.conversation_id == CONV and bounce.data["match"] == "bounce-original ack-1@example.com"
    assert await adapter.to_message(parse((CORPUS / "own_address.eml").read_bytes())) is None


def test_subjects_and_tokens() -> None:
    assert reply_subject("Re: RE: AW: Order 5", CONV) == f"Re: Order 5 [#{CONV}]"
    assert reply_subject(f"Re: Order 5 [#{CONV}]", CONV) == f"Re: Order 5 [#{CONV}]"
    assert reply_subject("回复：订单", CONV) == f"Re: 订单 [#{CONV}]"
    assert reply_subject("", CONV) == f"Re: [#{CONV}]"
    assert with_token("[#000000000000-1] old", CONV) == f"old [#{CONV}]"
    assert subject_token(f"RE: x [#{CONV}]") == CONV and subject_token("[#nothex-1]") == ""


async def test_a_contact_form_mail_is_answered_at_its_reply_to(adapter: EmailAdapter) -> None:
    raw = mail("From: Website <noreply@shop.example>\nReply-To: Ann Lee <ann.lee@customer.example>\n"
               f"To: support@example.com\nSubject: Contact form [#{CONV}]\nMessage-ID: <form-1@shop.example>")
    message = await adapter.to_message(parse(raw))
    assert message is not None and message.address == "ann.lee@customer.example"
    assert message.conversation_id == CONV  # the customer's own conversation
    assert message.data["from"] == "noreply@shop.example"
    assert message.sender is not None and message.sender.email == "ann.lee@customer.example"
    ours = mail("From: Ann <ann.lee@customer.example>\nReply-To: support@example.com\nMessage-ID: <r@x>\nSubject: x")
    assert (await adapter.to_message(parse(ours))).address == "ann.lee@customer.example"  # type: ignore[union-attr]


async def test_a_team_at_a_public_mail_domain_does_not_make_customers_agents(adapter: EmailAdapter,
                                                                              conversations: Conversations) -> None:
    conversations.items[CONV].address = "ann@mail.example"
    await adapter._set_json(f"ticket:{CONV}", {"message_id": "ticket-9@example.com", "team": "acme.team@mail.example",
                                               "subject": "x", "ids": ["ticket-9@example.com"]})
    # the customer answers our acknowledgement: same domain as the team, still the customer
    customer = mail(f"From: ann@mail.example\nSubject: Re: x [#{CONV}]\nIn-Reply-To: <ack-1@example.com>\n"
                    "Message-ID: <c1@mail.example>")
    message = await adapter.to_message(parse(customer))
    assert message is not None and message.kind == "customer" and message.conversation_id == CONV
    # a stranger at the same public domain using the token: neither agent nor member
    stranger = mail(f"From: eve@mail.example\nSubject: Re: x [#{CONV}]\nMessage-ID: <e1@mail.example>")
    message = await adapter.to_message(parse(stranger))
    assert message is not None and message.kind == "customer" and message.conversation_id == ""
    # a teammate answering the ticket itself is an agent
    teammate = mail(f"From: bob@mail.example\nSubject: Re: x [#{CONV}]\nIn-Reply-To: <ticket-9@example.com>\n"
                    "Message-ID: <t1@mail.example>")
    message = await adapter.to_message(parse(teammate))
    assert message is not None and message.kind == "agent" and message.conversation_id == CONV


async def test_the_declared_language_is_a_hint(adapter: EmailAdapter) -> None:
    raw = mail("From: li@customer.cn\nContent-Language: zh-CN\nSubject: 订单\nMessage-ID: <l1@customer.cn>", "订单")
    message = await adapter.to_message(parse(raw))
    assert message is not None and message.sender is not None and message.sender.language == "zh"
    plain = await adapter.to_message(parse(mail("From: a@b.example\nSubject: x\nMessage-ID: <l2@b>")))
    assert plain is not None and plain.sender is not None and plain.sender.language == ""
