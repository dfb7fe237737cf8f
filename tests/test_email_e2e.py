"""End to end: the whole bridge with the email channel against Dovecot and aiosmtpd, and the
HTTP API channel (replies to a signed webhook) for a customer on another channel."""

from __future__ import annotations

import asyncio
import codecs
import re
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from adapters.email.imap import UIDVALIDITY_KEY
from bridge import keys
from bridge.model import decode
from tests.harness import RunningBridge, outbound_entries, running_bridge
from tests.mailservers import Dovecot, Received, RecordingHandler, smtp_server
from tests.webhook import WEBHOOK_SECRET, WebhookReceiver

CORPUS = Path(__file__).parent / "fixtures" / "email"
TOKEN = "test-api-token-123"
SECRET = WEBHOOK_SECRET
ENV = {"T_API_TOKEN": TOKEN, "T_WEBHOOK_SECRET": SECRET, "T_IMAP_PASSWORD": "secret"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEAM = "team@example.com"



@pytest.fixture
def smtp() -> Iterator[RecordingHandler]:
    with smtp_server() as (handler, port):
        handler.port = port  # type: ignore[attr-defined]
        yield handler



def bridge_config(dovecot: Dovecot, smtp: RecordingHandler, webhook: WebhookReceiver) -> dict[str, Any]:
    return {
        "channels": {
            "email": {"address": "support@example.com", "from_name": "ACME Support",
                      "imap_host": "127.0.0.1", "imap_port": dovecot.port, "imap_tls": "none", "imap_user": "agent",
                      "imap_password": "${T_IMAP_PASSWORD}", "reconnect_min_s": 0.05, "reconnect_max_s": 0.5,
                      "smtp_host": "127.0.0.1", "smtp_port": smtp.port,  # type: ignore[attr-defined]
                      "smtp_tls": "none"},
            "api": {"token": "${T_API_TOKEN}", "webhook_url": webhook.url, "webhook_secret": "${T_WEBHOOK_SECRET}"},
        },
        "agents": {"channels": ["email"]},
        "triage": {"urgent_keywords": {"en": ["urgent", "production line stopped"]}},
        "flows": {"triage": {"multilingual": False}},  # transport tests: keyword triage, no learned judgement
        "queues": {"default": {"email": TEAM, "reply_within_h": 24}},
    }


def customer_mail(text: str, subject: str, sender: str = "ann.lee@customer.example", name: str = "Ann Lee",
                  extra: str = "") -> tuple[bytes, str]:
    message_id = make_msgid(domain="customer.example")
    raw = (f"From: {name} <{sender}>\r\nTo: ACME Support <support@example.com>\r\nSubject: {subject}\r\n"
           f"Message-ID: {message_id}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n")
    return raw.encode(), message_id


async def imap_ready(b: RunningBridge) -> None:
    """The mailbox watcher is logged in and knows where new mail starts. (Health "ok" is not
    enough: the start-up credentials check reports it too, before the watcher's first login
    has set the line below which mail counts as old, and mail delivered before that is skipped.)"""
    await b.wait_for(lambda: b.redis.exists(keys.adapter_state("email", UIDVALIDITY_KEY)),
                     what="the email channel logged in to IMAP")


def mail_to(smtp: RecordingHandler, address: str) -> list[Received]:
    return [r for r in smtp.received if address in r.rcpt_tos]


async def test_customer_email_gets_a_threaded_ack_and_a_ticket(redis_url: str, dovecot: Dovecot,
                                                               smtp: RecordingHandler,
                                                               webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, bridge_config(dovecot, smtp, webhook), env=ENV) as b:
        await imap_ready(b)
        raw, message_id = customer_mail("Could you send me the invoice for May?\n\n-- \nAnn Lee\nACME Buyer Ltd",
                                        "Invoice for May")
        dovecot.deliver(raw)
        (ack,) = await b.wait_for(lambda: mail_to(smtp, "ann.lee@customer.example"), what="the acknowledgement")
        (ticket,) = await b.wait_for(lambda: mail_to(smtp, TEAM), what="the ticket")
        conversation = await b.store.for_address("email", "ann.lee@customer.example")
        assert conversation is not None and conversation.urgency == "routine" and conversation.queue == "default"

        # the acknowledgement threads under the customer's mail and says it is automatic
        assert ack.message["In-Reply-To"] == message_id
        assert ack.message["Subject"] == f"Re: Invoice for May [#{conversation.id}]"
        assert ack.message["Auto-Submitted"] == "auto-replied"
        assert "24 hours" in ack.text() and conversation.id in ack.text()
        # the ticket shows the case, and replying to it names the conversation
        assert ticket.message["Reply-To"].addresses[0].addr_spec == f"support+{conversation.id}@example.com"
        assert f"[#{conversation.id}]" in ticket.message["Subject"]
        body = ticket.text()
        assert "Customer:     Ann Lee <ann.lee@customer.example>" in body
        assert "Channel:      email (ann.lee@customer.example)" in body and "Language:     en" in body
        assert "Could you send me the invoice for May?" in body and "ACME Buyer Ltd" not in body  # signature cut
        transcript = await b.store.transcript(conversation.id)
        assert transcript[0].text == "Could you send me the invoice for May?"
        assert "ACME Buyer Ltd" in transcript[0].data["original"]

        # the customer answers the acknowledgement: same conversation, no second ack, the ticket thread grows
        raw2, raw2_id = customer_mail("Also the one for June, please.\n\nOn Mon, ACME Support wrote:\n> Thank you",
                                f"Re: Invoice for May [#{conversation.id}]",
                                extra=f"In-Reply-To: {ack.message['Message-ID']}\r\n")
        dovecot.deliver(raw2)
        follow = await b.wait_for(lambda: mail_to(smtp, TEAM)[1:], what="the follow-up in the ticket thread")
        assert follow[0].message["In-Reply-To"] == ticket.message["Message-ID"]
        assert "Also the one for June, please." in follow[0].text() and "> Thank you" not in follow[0].text()
        assert len(mail_to(smtp, "ann.lee@customer.example")) == 1
        again = await b.store.for_address("email", "ann.lee@customer.example")
        assert again is not None and again.id == conversation.id and again.messages == 2
        last = (await b.store.transcript(conversation.id))[-1]
        assert last.data["match"] == f"in-reply-to {ack.message['Message-ID'][1:-1]}"

        # an agent answers the ticket: the customer gets it by email, threaded, from a person
        agent_mail = (f"From: Ana <ana@example.com>\r\nTo: support+{conversation.id}@example.com\r\n"
                      f"Subject: Re: {ticket.message['Subject']}\r\nMessage-ID: {make_msgid(domain='example.com')}\r\n"
                      f"In-Reply-To: {ticket.message['Message-ID']}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                      "\r\nBoth invoices are attached to this mail, Ann.\r\n\r\n> New case in queue default.\r\n")
        dovecot.deliver(agent_mail.encode())
        answers = await b.wait_for(lambda: mail_to(smtp, "ann.lee@customer.example")[1:], what="the agent's answer")
        answer = answers[0].message
        assert answers[0].text().strip() == "Both invoices are attached to this mail, Ann."
        assert answer["Auto-Submitted"] is None and answer["From"].addresses[0].display_name == "Ana (ACME Support)"
        assert answer["In-Reply-To"] == raw2_id and answer["Subject"] == f"Re: Invoice for May [#{conversation.id}]"
        assert ack.message["Message-ID"] in answer["References"].split()


async def test_an_agents_emailed_reply_reaches_the_api_customer(redis_url: str, dovecot: Dovecot,
                                                                smtp: RecordingHandler,
                                                                webhook: WebhookReceiver) -> None:
    async def answer_at_once(ticket: Received) -> None:
        """An agent answers the ticket from their mail program (Reply-To: support+<id>@...)
        before our SMTP server has even confirmed it to the bridge."""
        if TEAM not in ticket.rcpt_tos:
            return
        conversation_id = ticket.message["X-Bridge-Conversation"]
        dovecot.deliver((
            f"From: Ana Agent <ana@example.com>\r\nTo: support+{conversation_id}@example.com\r\n"
            f"Subject: Re: {ticket.message['Subject']}\r\nMessage-ID: {make_msgid(domain='example.com')}\r\n"
            f"In-Reply-To: {ticket.message['Message-ID']}\r\nReferences: {ticket.message['Message-ID']}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
            "Hi Maria, order 5521 ships tomorrow.\r\n\r\nAna\r\n\r\n"
            "On Mon, 23 Nov 2026 at 09:12, ACME Support <support@example.com> wrote:\r\n"
            "> New case in queue default.\r\n").encode())
        await asyncio.sleep(1.0)  # the reply is read from the mailbox in the meantime

    smtp.before_accept = answer_at_once
    async with running_bridge(redis_url, bridge_config(dovecot, smtp, webhook), env=ENV) as b:
        await imap_ready(b)
        r = await b.post("/api/v1/messages", headers=AUTH,
                         json={"customer_id": "shop-77", "text": "Where is my order 5521?", "name": "Maria"})
        assert r.status == 202
        (ticket,) = await b.wait_for(lambda: mail_to(smtp, TEAM), what="the ticket")
        conversation = await b.store.for_address("api", "shop-77")
        assert conversation is not None
        assert "Channel:      api (shop-77)" in ticket.text() and "Where is my order 5521?" in ticket.text()

        texts = await b.wait_for(lambda: webhook.texts_for("shop-77")[1:], what="the agent's reply on the API")
        assert texts == ["Hi Maria, order 5521 ships tomorrow.\n\nAna"]  # after the acknowledgement
        delivered = next(m for m in webhook.messages if m["text"].startswith("Hi Maria"))
        assert delivered["sender"]["name"] == "Ana Agent"
        updated = await b.store.get(conversation.id)
        assert updated is not None and updated.first_response_ms > 0 and updated.assignee == "Ana Agent"
        assert await b.store.for_address("email", "ana@example.com") is None  # not taken for a new case
        assert mail_to(smtp, "ana@example.com") == []
        assert webhook.bad_signatures == 0


async def test_an_urgent_email_gets_an_instant_reply(redis_url: str, dovecot: Dovecot, smtp: RecordingHandler,
                                                     webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, bridge_config(dovecot, smtp, webhook), env=ENV) as b:
        await imap_ready(b)
        raw, message_id = customer_mail("URGENT: our production line stopped, controller error E42",
                                        "Line down", sender="dan@factory.example", name="Dan")
        dovecot.deliver(raw)
        (reply,) = await b.wait_for(lambda: mail_to(smtp, "dan@factory.example"), what="the instant reply")
        assert "minutes" in reply.text() and reply.message["In-Reply-To"] == message_id
        conversation = await b.store.for_address("email", "dan@factory.example")
        assert conversation is not None and conversation.urgency == "urgent"
        assert mail_to(smtp, TEAM) == []  # urgent cases go to people now, not to the queue


async def test_automatic_mail_is_recorded_and_never_answered(redis_url: str, dovecot: Dovecot,
                                                             smtp: RecordingHandler,
                                                             webhook: WebhookReceiver) -> None:
    automatic = {"auto_reply_ooo.eml": "ann.lee@customer.example", "auto_reply_outlook.eml": "bob@corp.example",
                 "mailing_list.eml": "news@lists.example", "bulk.eml": "promo@shop.example",
                 "bounce_exim.eml": "mailer-daemon@mail.example.net"}
    async with running_bridge(redis_url, bridge_config(dovecot, smtp, webhook), env=ENV) as b:
        await imap_ready(b)
        for name in automatic:
            dovecot.deliver((CORPUS / name).read_bytes())
        dovecot.deliver((CORPUS / "own_address.eml").read_bytes())
        raw, _ = customer_mail("A real question after all that", "Question", sender="real@customer.example")
        dovecot.deliver(raw)
        await b.wait_for(lambda: mail_to(smtp, "real@customer.example"), what="the real customer's ack")
        for sender in automatic.values():
            conversation = await b.wait_for(partial(b.store.for_address, "email", sender), what=sender)
            (recorded,) = await b.store.transcript(conversation.id)
            assert recorded.data["auto"] is True and recorded.data["loop_reason"]
        outbound = [decode(fields[b"m"]) for _, fields in await outbound_entries(b.redis, "email")]
        answered = {m.address for m in outbound if m.kind == "reply"}
        assert answered == {"real@customer.example"}
        assert await b.store.for_address("email", "support@example.com") is None  # our own mail is not a customer
        assert {a for r in smtp.received for a in r.rcpt_tos} <= {"real@customer.example", TEAM}


async def test_smtp_4xx_is_retried_and_5xx_marks_the_customer_unreachable(redis_url: str, dovecot: Dovecot,
                                                                           smtp: RecordingHandler,
                                                                           webhook: WebhookReceiver) -> None:
    smtp.fail_with, smtp.fail_times = "451 4.3.0 Greylisted, try again", 1
    smtp.reject_rcpt = "550 5.1.1 <gone@customer.example> User unknown"
    async with running_bridge(redis_url, bridge_config(dovecot, smtp, webhook), env=ENV) as b:
        await imap_ready(b)
        raw, _ = customer_mail("Question about my order", "Order", sender="greylisted@customer.example")
        dovecot.deliver(raw)
        (ack,) = await b.wait_for(lambda: mail_to(smtp, "greylisted@customer.example"), what="the retried ack")
        assert smtp.fail_times == 0 and "24 hours" in ack.text()

        raw, _ = customer_mail("Another question", "Order", sender="gone@customer.example")
        dovecot.deliver(raw)

        async def unreachable() -> str:
            conversation = await b.store.for_address("email", "gone@customer.example")
            return conversation.unreachable if conversation else ""

        reason = await b.wait_for(unreachable, what="the conversation marked unreachable")
        assert "550" in reason
        dead = await b.bus.dead_letters()
        assert any("550" in str(entry) for entry in dead)
        assert mail_to(smtp, "gone@customer.example") == []


@pytest.mark.parametrize("sender", ["Mail Delivery System <MAILER-DAEMON@mx.customer.example>",
                                    "MAILER-DAEMON (Mail Delivery System)"])  # no domain: still filed
async def test_a_later_bounce_marks_the_customer_unreachable_and_tells_the_agents(
        redis_url: str, dovecot: Dovecot, smtp: RecordingHandler, webhook: WebhookReceiver, sender: str) -> None:
    async with running_bridge(redis_url, bridge_config(dovecot, smtp, webhook), env=ENV) as b:
        await imap_ready(b)
        raw, _ = customer_mail("Please call me", "Call", sender="typo@customer.example")
        dovecot.deliver(raw)
        (ack,) = await b.wait_for(lambda: mail_to(smtp, "typo@customer.example"), what="the ack (relay said 250)")
        conversation = await b.wait_for(partial(b.store.for_address, "email", "typo@customer.example"))
        # an hour later the customer's server bounces it (RFC 3464)
        dsn = (CORPUS / "bounce_dsn.eml").read_bytes()
        dsn = dsn.replace(b"nobody@customer.example", b"typo@customer.example")
        dsn = dsn.replace(b"<ack-1@example.com>", ack.message["Message-ID"].encode())
        dsn = dsn.replace(b"Mail Delivery System <MAILER-DAEMON@mx.customer.example>", sender.encode())
        dovecot.deliver(dsn)

        async def unreachable() -> str:
            current = await b.store.get(conversation.id)
            return current.unreachable if current else ""

        reason = await b.wait_for(unreachable, what="the conversation marked unreachable")
        assert "typo@customer.example" in reason and "5.1.1" in reason
        transcript = await b.store.transcript(conversation.id)
        bounce, notice = transcript[-2:]
        assert bounce.kind == "customer" and bounce.data.get("auto") is True  # recorded, never answered
        assert notice.kind == "event" and notice.name == "delivery" and "5.1.1" in notice.text  # agents see why
        outbound = [decode(fields[b"m"]) for _, fields in await outbound_entries(b.redis, "email")]
        assert any(m.kind == "event" and m.name == "delivery" and m.data.get("status") == "failed" for m in outbound)
        assert len(mail_to(smtp, "typo@customer.example")) == 1


async def test_follow_ups_join_the_ticket_thread_without_email_on_the_agents_side(
        redis_url: str, dovecot: Dovecot, smtp: RecordingHandler, webhook: WebhookReceiver) -> None:
    config = bridge_config(dovecot, smtp, webhook)
    config["agents"] = {"channels": []}  # the team works in the queue mailbox only
    async with running_bridge(redis_url, config, env=ENV) as b:
        await imap_ready(b)
        raw, _ = customer_mail("Please quote 500 pcs of the XL-7 board.", "Quote request")
        dovecot.deliver(raw)
        (ack,) = await b.wait_for(lambda: mail_to(smtp, "ann.lee@customer.example"), what="the acknowledgement")
        (ticket,) = await b.wait_for(lambda: mail_to(smtp, TEAM), what="the ticket")
        raw2, _ = customer_mail("Also 200 pcs of XL-8.", ack.message["Subject"],
                                extra=f"In-Reply-To: {ack.message['Message-ID']}\r\n")
        dovecot.deliver(raw2)
        follow = await b.wait_for(lambda: mail_to(smtp, TEAM)[1:], what="the follow-up in the ticket thread")
        assert follow[0].message["In-Reply-To"] == ticket.message["Message-ID"]
        assert "Also 200 pcs of XL-8." in follow[0].text()


async def test_attachments_reach_the_team_as_links_read_from_the_mailbox(redis_url: str, dovecot: Dovecot,
                                                                         smtp: RecordingHandler,
                                                                         webhook: WebhookReceiver) -> None:
    photo = b"\x89PNG\r\n\x1a\n a photo of the cracked housing"
    page = b"<script>alert(document.cookie)</script>"
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "Ann Lee <ann.lee@customer.example>", "support@example.com", "RMA"
    mail["Message-ID"] = make_msgid(domain="customer.example")
    mail.set_content("Two units arrived with cracked housings, photos attached.")
    mail.add_attachment(photo, maintype="image", subtype="png", filename="housing.png")
    mail.add_attachment(page, maintype="text", subtype="html", filename="report.html")
    async with running_bridge(redis_url, bridge_config(dovecot, smtp, webhook), env=ENV) as b:
        await imap_ready(b)
        dovecot.deliver(mail.as_bytes())
        (ticket,) = await b.wait_for(lambda: mail_to(smtp, TEAM), what="the ticket")
        links = dict(re.findall(r"- (\S+) \([^)]*\)\n  (http\S+)", ticket.text()))
        assert sorted(links) == ["housing.png", "report.html"]
        urls = {name: url.replace("http://localhost", "http://127.0.0.1") for name, url in links.items()}
        async with b.http.get(urls["housing.png"]) as r:  # what an agent's click gets: read from the mailbox
            assert r.status == 200 and await r.read() == photo and r.content_type == "image/png"
        async with b.http.get(urls["report.html"]) as r:
            assert r.status == 200 and await r.read() == page
            assert r.content_type == "application/octet-stream"  # a customer's page never runs as ours
            assert r.headers["Content-Disposition"].startswith("attachment")
        for forged in (urls["housing.png"].replace("type=image%2Fpng", "type=text%2Fhtml"),
                       urls["housing.png"].split("?", 1)[0]):
            async with b.http.get(forged) as r:
                assert r.status == 403
        # the mail deleted from the mailbox: the link says so
        for path in dovecot.maildir().glob("*/*.test*"):
            path.unlink()
        async with b.http.get(urls["housing.png"]) as r:
            assert r.status == 404 and "no longer in INBOX" in await r.text()


async def test_every_follow_up_sent_at_once_reaches_the_team(redis_url: str, dovecot: Dovecot,
                                                               smtp: RecordingHandler,
                                                               webhook: WebhookReceiver) -> None:
    """Each new API customer writes twice without waiting: the second message follows the
    ticket into the team's mailbox, never dropped as delivered before the ticket exists."""
    customers = [f"quick-{n}" for n in range(12)]
    async with running_bridge(redis_url, bridge_config(dovecot, smtp, webhook), env=ENV) as b:
        await imap_ready(b)

        async def write_twice(customer: str) -> None:
            for text in (f"Quote for 40 boards, {customer}?", f"And 10 more, {customer}."):
                r = await b.post("/api/v1/messages", headers=AUTH,
                                 json={"customer_id": customer, "text": text, "name": customer})
                assert r.status == 202

        await asyncio.gather(*(write_twice(c) for c in customers))
        team = await b.wait_for(lambda: len(mail_to(smtp, TEAM)) >= 2 * len(customers) and mail_to(smtp, TEAM),
                                timeout_s=30, what="a ticket and a follow-up per customer")
        for customer in customers:
            ticket, follow = [m for m in team if re.search(rf"\b{customer}[.?]", m.text())]
            assert f"Quote for 40 boards, {customer}?" in ticket.text()
            assert f"And 10 more, {customer}." in follow.text()
            assert follow.message["In-Reply-To"] == ticket.message["Message-ID"]
        assert len(mail_to(smtp, TEAM)) == 2 * len(customers)


async def test_a_mail_being_read_holds_up_no_other_channel(redis_url: str, dovecot: Dovecot, smtp: RecordingHandler,
                                                           webhook: WebhookReceiver) -> None:
    """A mail is read (MIME, HTML to text, quotes) off the event loop: while one is held in
    the middle of being read, an API customer is answered and their ticket mailed. The mail
    is held by its charset: a codec registered with Python's codec registry (a public
    extension point, not a patch) that waits for the test. Were the mail read on the event
    loop, nothing else could run until the guard timeout let the codec go."""
    started, gate = threading.Event(), threading.Event()
    released: list[bool] = []

    def held_decode(data: bytes, errors: str = "strict") -> tuple[str, int]:
        started.set()
        released.append(gate.wait(timeout=30))  # the guard: True only when the test let it go
        return bytes(data).decode("utf-8", errors), len(data)

    def search(name: str) -> codecs.CodecInfo | None:
        return codecs.CodecInfo(codecs.utf_8_encode, held_decode, name="x-test-held") if name == "x_test_held" else None

    codecs.register(search)
    try:
        async with running_bridge(redis_url, bridge_config(dovecot, smtp, webhook), env=ENV) as b:
            await imap_ready(b)
            raw, _ = customer_mail("A long mail, read slowly", "Slow", sender="slow@customer.example")
            dovecot.deliver(raw.replace(b"charset=utf-8", b"charset=x-test-held"))
            await b.wait_for(started.is_set, what="the mail being read")

            # meanwhile an API customer (whose name carries encoded line breaks) is answered and filed
            evil = "=?utf-8?q?Maria=0D=0ABcc:_victim@evil.example?="
            r = await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "shop-9", "text": "Where is 77?",
                                                                      "name": evil})
            assert r.status == 202
            await b.wait_for(lambda: webhook.texts_for("shop-9"), what="the API customer's answer")
            (ticket,) = await b.wait_for(lambda: mail_to(smtp, TEAM), what="the API customer's ticket")
            assert released == []  # the mail is still being read
            assert ticket.rcpt_tos == [TEAM] and ticket.message["Bcc"] is None
            assert "Maria Bcc: victim@evil.example" in ticket.message["Subject"]  # one line of text

            gate.set()
            (ack,) = await b.wait_for(lambda: mail_to(smtp, "slow@customer.example"), what="the mail's own answer")
            assert "24 hours" in ack.text()
    finally:
        gate.set()
        codecs.unregister(search)
    assert released == [True]


async def test_no_automatic_mail_to_a_strangers_reply_to(redis_url: str, dovecot: Dovecot, smtp: RecordingHandler,
                                                         webhook: WebhookReceiver) -> None:
    """Backscatter: a mail From one domain naming a Reply-To at another gets no acknowledgement
    there; the case is filed, and an agent's answer (after reading it) does go there. Sends to
    one address keep their order, so the agent's answer arrives after the acknowledgement
    would have."""
    async with running_bridge(redis_url, bridge_config(dovecot, smtp, webhook), env=ENV) as b:
        await imap_ready(b)
        raw, _ = customer_mail("Please call me about my order.", "Contact form", sender="noreply@forms.example",
                               name="Website", extra="Reply-To: victim@elsewhere.example\r\n")
        dovecot.deliver(raw)
        (ticket,) = await b.wait_for(lambda: mail_to(smtp, TEAM), what="the ticket")
        assert "victim@elsewhere.example" in ticket.text()
        dovecot.deliver((
            f"From: Ana <ana@example.com>\r\nTo: {ticket.message['Reply-To'].addresses[0].addr_spec}\r\n"
            f"Subject: Re: {ticket.message['Subject']}\r\nMessage-ID: {make_msgid(domain='example.com')}\r\n"
            f"In-Reply-To: {ticket.message['Message-ID']}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "\r\nWe will call you today.\r\n").encode())
        (answer,) = await b.wait_for(lambda: mail_to(smtp, "victim@elsewhere.example"), what="the agent's answer")
        assert answer.text().strip() == "We will call you today." and answer.message["Auto-Submitted"] is None
        assert mail_to(smtp, "noreply@forms.example") == []
