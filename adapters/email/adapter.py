"""The email adapter: customers and agents by email, and the email queues' tickets.

In: `imap.ImapWatcher` reads each new mail; `ingest` parses it (`parse`), strips the
quote (`quotes`), checks for loops (`loops`), threads it (`threading`) and publishes:

- a customer's mail -> ``kind="customer"`` (address = sender, lower case);
- an agent's reply to a ticket -> ``kind="agent"`` for the ticket's conversation. An
  agent is a sender listed in ``agents``, at a domain in ``agent_domains``, or at the
  domain of the team address the conversation's ticket was sent to;
- automatic mail (auto-replies, bounces, lists) -> ``kind="customer"`` with
  ``data["auto"] = True`` and ``data["loop_reason"]``: recorded, never answered. Our own
  mail coming back, and automatic mail from agents (an out-of-office answering a
  ticket), is not published at all.

Out: ``kind="reply"`` -> a reply threaded under the customer's last mail;
``kind="event"`` named ``ticket`` -> a ticket to the queue's team address whose
Reply-To (``support+<conversation id>@``) and subject (``[#<conversation id>]``) carry the
conversation token; ``customer_message`` events (when email is an agents' channel) ->
a follow-up in the ticket's thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar

import aiosmtplib
import msgspec
from aiohttp import web

from adapters.email import compose, smtp
from adapters.email.config import EmailConfig
from adapters.email.imap import ImapWatcher, MailTooLarge
from adapters.email.loops import base_address, is_bounce, loop_reason
from adapters.email.parse import ParsedMail
from adapters.email.reading import Reader
from adapters.email.threading import CONVERSATION_ID, match, reply_subject, with_token
from bridge import filelinks
from bridge.adapter import Adapter, AdapterContext, Capabilities, ChannelConfig, Delivered, HealthState
from bridge.errors import PermanentError
from bridge.model import Attachment, Conversation, Message, Sender, now_ms
from bridge.sentonce import send_once

log = logging.getLogger(__name__)

STATE_TTL_S = 180 * 86400  # threading facts kept this long after the last use
MAILBOX_READS = 2  # attachment reads at once


class EmailAdapter(Adapter):
    name: ClassVar[str] = "email"
    config_model: ClassVar[type[ChannelConfig]] = EmailConfig
    side = "both"
    capabilities = Capabilities(files=True, email_addresses=True)
    default_rate_per_s: ClassVar[float] = 5.0  # SMTP relays throttle bursts

    def __init__(self, config: ChannelConfig, ctx: AdapterContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, EmailConfig)
        self.cfg = config
        self.own = [config.address, *config.also_ours]
        self.domain = config.address.rsplit("@", 1)[1]
        self.watcher = ImapWatcher(config, ctx.state, self.ingest, ctx.report_health) if config.imap_host else None
        password = config.imap_password.get_secret_value() if config.imap_password else ""
        self._file_key = filelinks.signing_key("email", password)
        # attachment reads each log in on a connection of their own; servers cap connections
        # per user (Dovecot: 10 per address), and the watcher holds one already
        self._mailbox_reads = asyncio.Semaphore(MAILBOX_READS)
        self.reader = Reader()  # parsing and quote stripping, off the event loop

    async def start(self) -> None:
        if self.watcher is not None:
            self.watcher.start()

    async def stop(self) -> None:
        if self.watcher is not None:
            await self.watcher.stop()

    # -- state helpers -------------------------------------------------------------

    async def _get_json(self, key: str) -> dict[str, Any]:
        value = await self.ctx.state.get(key)
        if not value:
            return {}
        try:
            data = json.loads(value)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    async def _set_json(self, key: str, value: dict[str, Any]) -> None:
        await self.ctx.state.set(key, json.dumps(value, ensure_ascii=False), ttl_s=STATE_TTL_S)

    async def _remember_message_id(self, message_id: str, conversation_id: str) -> None:
        if message_id and conversation_id:
            await self.ctx.state.set(f"mid:{message_id}", conversation_id, ttl_s=STATE_TTL_S)

    # -- in ------------------------------------------------------------------------

    def _listed_agent(self, address: str) -> bool:
        return address in self.cfg.agents or address.rsplit("@", 1)[-1] in self.cfg.agent_domains

    async def ingest(self, uid: int, raw: bytes, size: int = 0) -> str:
        """Turn one fetched mail into at most one published message; returns its Message-ID.

        ``size`` is the whole mail's; when it is more than ``raw`` the mail was cut at
        ``max_message_bytes`` and is marked ``data["truncated"]``.
        """
        read = await self.reader.read(raw, max_attachment_bytes=self.cfg.max_attachment_bytes,
                                      max_text_chars=self.cfg.max_text_chars)
        mail = read.mail
        message = await self.to_message(mail, uid, text=read.text)
        if message is not None and size > len(raw):
            message.data["truncated"] = {"size": size, "read": len(raw)}
        if message is not None:
            stored = await self.ctx.publish(message)
            log.info("email: uid %s <%s> from %s -> %s %s (%s)%s", uid, mail.message_id, mail.from_addr,
                     message.kind, message.conversation_id or "(by address)", message.data.get("match"),
                     "" if stored else " duplicate")
            notice = await self._bounce_notice(mail, message)
            if notice is not None:
                await self.ctx.publish(notice)
            if message.kind == "customer" and not message.data.get("auto"):
                info: dict[str, Any] = {
                    "message_id": mail.message_id, "subject": mail.subject, "name": mail.from_name, "at_ms": now_ms(),
                    "references": [*mail.references, mail.message_id][-compose.MAX_REFERENCES:],
                    "cc": self._their_addresses(mail)}
                if base_address(message.address) != base_address(mail.from_addr):
                    info["via"] = mail.from_addr  # answered at its Reply-To: see `_automatic_mail_allowed`
                await self._set_json(f"in:{message.id}", info)
                await self._set_json(f"addr:{message.address}", info)
                if message.conversation_id:
                    await self._remember_message_id(mail.message_id, message.conversation_id)
                    await self._add_members(message.conversation_id, info["cc"])
        return mail.message_id

    async def _bounce_notice(self, mail: ParsedMail, message: Message) -> Message | None:
        """A bounce of our mail to a customer, received later by mail (most 5xx arrive this
        way, after the relay accepted the mail): a failed delivery for the conversation, which
        tells the agents and, when the customer's own address failed, marks it unreachable."""
        if not (is_bounce(mail) and message.conversation_id and mail.failures):
            return None
        failure = next((f for f in mail.failures if f.permanent), None)
        if failure is None:
            return None
        conversation = await self.ctx.conversations.get(message.conversation_id)
        if conversation is None:
            return None
        unreachable = conversation.channel == self.name and any(
            f.permanent and f.recipient == conversation.address for f in mail.failures)
        reason = " ".join(x for x in ("mail bounced:", failure.recipient, failure.status, failure.diagnostic) if x)
        return Message(kind="command", channel=self.name, name="delivery", conversation_id=conversation.id,
                       dedupe_key=f"email:{mail.message_id}:delivery",
                       data={"status": "failed", "reason": reason, "unreachable": unreachable, "notify": True,
                             "channel": self.name, "bounce": mail.message_id,
                             "message_id": mail.original_ids[0] if mail.original_ids else ""})

    def _their_addresses(self, mail: ParsedMail) -> list[str]:
        own = {base_address(a) for a in self.own}
        return sorted({a for a in [*mail.cc, *mail.to] if base_address(a) not in own and a != mail.from_addr})

    async def to_message(self, mail: ParsedMail, uid: int = 0, *, text: str | None = None) -> Message | None:
        """The message to publish for a parsed mail (None: not recorded). ``text`` is the mail's
        text with quotes stripped, when already done; else it is stripped here, off the loop."""
        reason = loop_reason(mail, self.own)
        if reason == "own-address":
            log.info("email: <%s> is our own mail; not recorded again", mail.message_id)
            return None
        customer = self._customer_address(mail)
        if not customer:
            log.warning("email: <%s> has no readable sender address; not recorded (defects: %s)",
                        mail.message_id, ", ".join(mail.defects[:5]) or "none")
            return None
        lookup = _Lookup(self, also=customer, answers={*mail.in_reply_to, *mail.references})
        listed = self._listed_agent(mail.from_addr)
        bounce = is_bounce(mail)  # threads by the returned mail's id, whoever sent the report
        thread = await match(mail, lookup, self.own, sender_is_agent=listed or bounce)
        is_agent = listed or (bool(thread.conversation_id) and await lookup.team_member(thread.conversation_id,
                                                                                         mail.from_addr))
        if text is None:
            text = await self.reader.strip_quotes(mail.text, self.cfg.max_text_chars)
        data: dict[str, Any] = {
            "subject": mail.subject,
            "message_id": mail.message_id,
            "in_reply_to": mail.in_reply_to[0] if mail.in_reply_to else "",
            "references": mail.references,
            "original": mail.text,
            "match": thread.reason + (f" {thread.via}" if thread.via else ""),
        }
        if thread.rejected:
            data["match_rejected"] = thread.rejected
        if mail.cc:
            data["cc"] = mail.cc
        if mail.defects:
            data["defects"] = mail.defects[:10]
        # ref: where the bytes are, to fetch on demand: "<uidvalidity>:<uid>:<part>" in the watched mailbox
        validity = self.watcher.uidvalidity if self.watcher is not None else ""
        attachments = [Attachment(name=a.name, mime=a.mime, size=a.size,
                                  ref="" if a.too_large else f"{validity}:{uid}:{a.part}") for a in mail.attachments]
        for attachment in attachments:
            if attachment.ref and uid:  # a link for the agents, read from the mailbox when opened
                attachment.url = filelinks.attachment_link(self.ctx.public_url, self.cfg.files_path, self._file_key,
                                                           attachment, self.cfg.file_link_ttl_s)
        if mail.parts_not_read:
            data["parts_not_read"] = mail.parts_not_read
            log.warning("email: <%s> has more parts than are read; %d not listed", mail.message_id,
                        mail.parts_not_read)
        if any(a.too_large for a in mail.attachments):
            data["attachments_too_large"] = [a.name for a in mail.attachments if a.too_large]
        who = mail.from_addr if is_agent else customer
        sender = Sender(id=who, name=mail.from_name, email=who, language=mail.language, is_agent=is_agent)
        dedupe_key = f"email:{mail.message_id}"
        if is_agent:
            if reason:
                log.info("email: automatic mail from agent %s (%s) not forwarded", mail.from_addr, reason)
                return None
            if thread.conversation_id:
                return Message(kind="agent", channel=self.name, conversation_id=thread.conversation_id,
                               ref=f"email:{thread.via}" if "@" in thread.via else "", dedupe_key=dedupe_key,
                               text=text, sender=sender, attachments=attachments, data=data, platform_ms=mail.date_ms)
            # names no conversation: a colleague's own question (or a reply that lost its token,
            # whose sender then gets an acknowledgement instead of silence)
            log.info("email: mail from agent %s names no conversation (%s); taken as a new case",
                     mail.from_addr, thread.rejected or "no token, no known Message-ID")
            sender = Sender(id=customer, name=mail.from_name, email=customer, language=mail.language)
        if reason:
            data["auto"] = True
            data["loop_reason"] = reason
        conversation_id = thread.conversation_id
        if conversation_id and not await lookup.is_email(conversation_id):
            conversation_id = ""  # a customer never joins another channel's conversation by email
        if customer != mail.from_addr:
            data["from"] = mail.from_addr  # a web form or shop system writing for the customer
        return Message(kind="customer", channel=self.name, address=customer, dedupe_key=dedupe_key, text=text,
                       sender=sender, attachments=attachments, data=data, conversation_id=conversation_id,
                       platform_ms=mail.date_ms)

    def _customer_address(self, mail: ParsedMail) -> str:
        """Where answers go: the Reply-To when it names someone else (contact forms, shop
        systems send From a no-reply address on the customer's behalf), else the sender."""
        own = {base_address(a) for a in self.own}
        for address in mail.reply_to:
            if compose.valid_address(address) and base_address(address) not in own:
                return address
        return mail.from_addr

    async def _add_members(self, conversation_id: str, addresses: list[str]) -> None:
        if not addresses:
            return
        key = f"members:{conversation_id}"
        members = set((await self._get_json(key)).get("addresses", []))
        if not set(addresses) <= members:
            await self._set_json(key, {"addresses": sorted(members | set(addresses))[:50]})

    # -- attachments, for the agents ------------------------------------------------

    def routes(self) -> Iterable[web.AbstractRouteDef]:
        return [web.get(self.cfg.files_path + "/{ref}", self._serve_file)] if self.watcher is not None else []

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        ref = request.match_info["ref"]
        wanted = filelinks.linked_attachment(request.query, self._file_key, ref)
        if wanted is None:
            return web.Response(status=403, text="invalid or expired link")
        validity, uid, part = ref.split(":", 2)  # as to_message made it (the link is ours)
        assert self.watcher is not None  # the route exists only with IMAP
        try:
            async with self._mailbox_reads:
                raw = await self.watcher.fetch_mail(validity, int(uid), self.cfg.max_message_bytes)
        except LookupError as exc:
            return web.Response(status=404, text=f"email: {exc}")
        except MailTooLarge as exc:
            return web.Response(status=413, text=f"email: {exc}")
        except Exception as exc:  # the IMAP server is down or refused us
            return web.Response(status=503, text=f"email: the mailbox cannot be read now ({type(exc).__name__})")
        content = await self.reader.attachment(raw, part)
        if content is None:
            return web.Response(status=404, text="email: the mail has no such attachment")
        return web.Response(body=content, **filelinks.response_options(wanted.mime, wanted.name or "attachment"))

    # -- out -----------------------------------------------------------------------

    async def send(self, message: Message) -> Delivered:
        """A mail sent whole is noted beside its message id: a redelivery (the bridge
        stopped, or lost the stream to another process, between the SMTP server's 250 and
        the record) sends nothing again (`bridge.sentonce`)."""
        return await send_once(self.ctx.state, message, self._send)

    async def _send(self, message: Message) -> Delivered:
        if message.kind == "reply":
            return await self._send_reply(message)
        if message.kind == "event" and message.name == "ticket":
            return await self._send_ticket(message)
        if message.kind == "event" and message.name == "customer_message":
            return await self._send_ticket_followup(message)
        if message.kind == "event" and message.name == "translation":
            return await self._send_ticket_translation(message)
        return Delivered()  # other agent-side news has no email form

    def _reply_address(self, conversation_id: str) -> str:
        """support+<conversation id>@...: replies name their conversation (only for ids that
        fit an address; others rely on the subject token and the Message-IDs)."""
        if re.fullmatch(CONVERSATION_ID, conversation_id):
            return compose.plus_address(self.cfg.address, conversation_id)
        return ""

    def _message_id(self, message: Message) -> str:
        # stable per outbound message: a retried send carries the same Message-ID
        return f"{message.id}.{message.name or message.kind}@{self.domain}"

    async def _deliver(self, out: compose.Outgoing, remember: Callable[[str], Awaitable[None]]) -> Delivered:
        """Check the recipient, ``remember`` what an answer to this mail is threaded by (its
        Message-ID, the ticket), then send: an answer may be read from the mailbox before
        the SMTP server's 250 reaches us."""
        if not compose.valid_address(out.to_addr):
            raise PermanentError(f"not a valid email address: {out.to_addr!r}", unreachable=True)
        try:
            built = compose.build(out)
        except compose.UnsafeHeader as exc:
            raise PermanentError(str(exc)) from exc
        await remember(out.message_id)
        await smtp.send(self.cfg, built, sender=self.cfg.address, recipients=[out.to_addr])
        return Delivered(platform_id=out.message_id, ref=f"email:{out.message_id}")

    async def _send_reply(self, message: Message) -> Delivered:
        address = message.address.strip().lower()
        conversation_id = message.conversation_id
        info = await self._thread_info(message, address)
        subject = info.get("subject") or ""
        last = info.get("message_id") or ""
        references = [r for r in info.get("references", []) if isinstance(r, str)]
        agent = message.sender is not None and message.sender.is_agent
        if not agent and not await self._automatic_mail_allowed(address):
            return Delivered()
        from_name = f"{message.sender.name} ({self.cfg.from_name})" if agent and message.sender and \
            message.sender.name else self.cfg.from_name
        text = message.text
        if message.buttons:
            text += "\n\n" + "\n".join(f"- {b.label}" for b in message.buttons)
        if message.attachments:
            text += "\n\n" + "\n".join(f"[{a.name or 'attachment'}] {a.url}".rstrip() for a in message.attachments)
        out = compose.Outgoing(
            from_addr=self.cfg.address, from_name=from_name, to_addr=address, to_name=info.get("name") or "",
            subject=reply_subject(subject, conversation_id) if conversation_id else (f"Re: {subject}" if subject else
                                                                                     self.cfg.from_name),
            text=text, reply_to=self._reply_address(conversation_id),
            in_reply_to=last, references=references, auto_submitted="" if agent else "auto-replied",
            message_id=self._message_id(message),
            extra_headers={"X-Bridge-Conversation": conversation_id} if conversation_id else {},
        )

        async def remember(message_id: str) -> None:
            if not conversation_id:
                return
            await self._set_json(f"thread:{conversation_id}", {
                "message_id": last, "subject": subject, "name": info.get("name") or "", "at_ms": info.get("at_ms", 0),
                "references": [*references, message_id][-compose.MAX_REFERENCES:]})
            await self._remember_message_id(message_id, conversation_id)
            await self._remember_message_id(last, conversation_id)
            await self._add_members(conversation_id, [a for a in info.get("cc", []) if isinstance(a, str)])

        return await self._deliver(out, remember)

    async def _automatic_mail_allowed(self, address: str) -> bool:
        """No automatic mail (acknowledgement, instant reply, bot answer, survey) to an address
        that only a Reply-To named: anyone can write any Reply-To (or type any address into a
        contact form), and the desk would mail whoever they name (backscatter). Not even at
        the sender's domain: at a public mail provider that is anyone's domain. A person's
        answer still goes there (they read the mail first), and once the address writes to
        us itself it is answered as usual."""
        via = str((await self._get_json(f"addr:{address}")).get("via") or "")
        if not via:
            return True
        log.warning("email: no automatic mail to %s: named only as the Reply-To of a mail from %s", address, via)
        return False

    async def _thread_info(self, message: Message, address: str) -> dict[str, Any]:
        """What to thread a reply under: the mail it answers when known, else the newer of
        the conversation's thread (what we last sent) and the customer's latest mail."""
        if message.reply_to:
            exact = await self._get_json(f"in:{message.reply_to}")
            if exact:
                return exact
        thread = await self._get_json(f"thread:{message.conversation_id}") if message.conversation_id else {}
        latest = await self._get_json(f"addr:{address}")
        if not thread or (latest and latest.get("at_ms", 0) > thread.get("at_ms", 0)):
            if thread:  # keep our own sent ids in the chain even if their mail program dropped them
                refs = [*thread.get("references", []), *latest.get("references", [])]
                latest = {**latest, "references": list(dict.fromkeys(refs))[-compose.MAX_REFERENCES:]}
            return latest
        return thread

    async def _send_ticket(self, message: Message) -> Delivered:
        conversation_id = message.conversation_id
        summary: dict[str, Any] = message.data.get("conversation") or {}
        queue = str(message.data.get("queue") or summary.get("queue") or "default")
        sender = message.sender or Sender()
        customer = summary.get("customer") or sender.name or sender.username or summary.get("address") or "customer"
        first_line = next((line.strip() for line in message.text.splitlines() if line.strip()), "(no text)")
        subject = with_token(f"[{queue}] {customer}: {first_line[:80]}", conversation_id)
        contact = summary.get("email") or sender.email
        lines = [
            f"New case in queue {queue}.",
            "",
            f"Customer:     {customer}" + (f" <{contact}>" if contact else ""),
            f"Channel:      {summary.get('channel', '')} ({summary.get('address', '')})",
            f"Language:     {summary.get('language') or sender.language or '?'}",
            f"Urgency:      {summary.get('urgency', 'routine')}"
            + (f" ({summary['urgency_reason']})" if summary.get("urgency_reason") else ""),
        ]
        if summary.get("topic"):
            lines.append(f"Topic:        {summary['topic']}")
        if summary.get("tier"):
            lines.append(f"Tier:         {summary['tier']}")
        lines += [f"Conversation: {conversation_id}", "", "Message:", "", message.text or "(no text)"]
        if message.attachments:
            lines += ["", "Attachments:"]
            for a in message.attachments:
                lines.append(f"- {a.name} ({a.mime}, {a.size} bytes)" + (f"\n  {a.url}" if a.url else ""))
        lines += ["", "--", "Reply to this email to answer the customer on their own channel. "
                  "Quoted text and your signature are removed; keep the [#...] token in the subject."]
        out = compose.Outgoing(
            from_addr=self.cfg.address, from_name=self.cfg.from_name, to_addr=message.address.strip().lower(),
            subject=subject, text="\n".join(lines),
            reply_to=self._reply_address(conversation_id),
            auto_submitted="auto-generated", message_id=self._message_id(message),
            extra_headers={"X-Bridge-Conversation": conversation_id, "X-Bridge-Queue": queue},
        )

        async def remember(message_id: str) -> None:
            if conversation_id:
                await self._set_json(f"ticket:{conversation_id}", {"message_id": message_id, "team": out.to_addr,
                                                                   "subject": subject, "ids": [message_id]})
                await self._remember_message_id(message_id, conversation_id)

        return await self._deliver(out, remember)

    async def _send_ticket_followup(self, message: Message) -> Delivered:
        if message.data.get("auto"):  # an out-of-office or bounce: recorded, not mailed to the team
            return Delivered()
        ticket = await self._get_json(f"ticket:{message.conversation_id}") if message.conversation_id else {}
        if not ticket:
            # the dispatcher sends a conversation's events in order, so the ticket was sent
            # before this if it ever will be; none was (it failed, or email came later): the
            # team still gets the customer's words, as the case's ticket
            team = str(message.data.get("team") or "")
            if not team:  # not a case filed by email (an escalation): nothing to mail
                return Delivered()
            return await self._send_ticket(msgspec.structs.replace(message, address=team))
        sender = message.sender or Sender()
        who = sender.name or sender.email or sender.id
        return await self._ticket_thread(message, ticket, f"The customer ({who}) wrote again:\n\n{message.text}")

    async def _send_ticket_translation(self, message: Message) -> Delivered:
        """A customer message's translation (docs/translation.md), in its ticket's thread."""
        ticket = await self._get_json(f"ticket:{message.conversation_id}") if message.conversation_id else {}
        if not ticket:
            return Delivered()  # no ticket by email for this case: nothing to add to
        source, target = message.data.get("source") or "?", message.data.get("target") or "?"
        if message.data.get("error"):
            text = f"Translation unavailable ({message.data['error']}): the customer's original is above."
        else:
            text = f"Machine translation ({source} -> {target}) of the customer's message:\n\n{message.text}"
        return await self._ticket_thread(message, ticket, text)

    async def _ticket_thread(self, message: Message, ticket: dict[str, Any], text: str) -> Delivered:
        """Mail ``text`` to the team in the ticket's thread."""
        out = compose.Outgoing(
            from_addr=self.cfg.address, from_name=self.cfg.from_name, to_addr=ticket["team"],
            subject="Re: " + str(ticket.get("subject", "")),
            text=text,
            reply_to=self._reply_address(message.conversation_id),
            in_reply_to=ticket["message_id"], references=[ticket["message_id"]], auto_submitted="auto-generated",
            message_id=self._message_id(message),
            extra_headers={"X-Bridge-Conversation": message.conversation_id},
        )

        async def remember(message_id: str) -> None:
            await self._remember_message_id(message_id, message.conversation_id)
            ids = [i for i in ticket.get("ids", [ticket["message_id"]]) if i != message_id]
            await self._set_json(f"ticket:{message.conversation_id}", {**ticket, "ids": [*ids, message_id][-50:]})

        return await self._deliver(out, remember)

    async def check(self) -> tuple[HealthState, str]:
        cfg = self.cfg
        client = aiosmtplib.SMTP(hostname=cfg.smtp_host, port=cfg.smtp_port, use_tls=cfg.smtp_tls == "tls",
                                 start_tls=cfg.smtp_tls == "starttls", timeout=cfg.smtp_timeout_s,
                                 tls_context=cfg.tls_context() if cfg.smtp_tls != "none" else None)
        try:
            await client.connect()
            if cfg.smtp_user and cfg.smtp_password:
                await client.login(cfg.smtp_user, cfg.smtp_password.get_secret_value())
            await client.quit()
        except aiosmtplib.SMTPAuthenticationError:
            return ("broken", "SMTP login refused (check channels.email.smtp_user / smtp_password)")
        except (aiosmtplib.SMTPException, OSError) as exc:
            return ("degraded", f"SMTP {cfg.smtp_host}:{cfg.smtp_port}: {exc}")
        if self.watcher is not None:
            return await self.watcher.check()
        return ("ok", "")


class _Lookup:
    """Threading's view of the bridge: refs, conversations and who belongs to them."""

    def __init__(self, adapter: EmailAdapter, also: str = "", answers: set[str] | None = None) -> None:
        self.adapter = adapter
        self.also = also  # the customer's Reply-To address, which belongs wherever the sender does
        self.answers = answers or set()  # the Message-IDs the mail answers (In-Reply-To, References)
        self.cache: dict[str, Conversation | None] = {}

    async def _conversation(self, conversation_id: str) -> Conversation | None:
        if conversation_id not in self.cache:
            self.cache[conversation_id] = await self.adapter.ctx.conversations.get(conversation_id)
        return self.cache[conversation_id]

    async def conversation_for_message_id(self, message_id: str) -> str | None:
        found = await self.adapter.ctx.conversations.by_ref(f"email:{message_id}")
        return found or await self.adapter.ctx.state.get(f"mid:{message_id}")

    async def exists(self, conversation_id: str) -> bool:
        return await self._conversation(conversation_id) is not None

    async def is_email(self, conversation_id: str) -> bool:
        conversation = await self._conversation(conversation_id)
        return conversation is not None and conversation.channel == self.adapter.name

    async def team_member(self, conversation_id: str, sender: str) -> bool:
        """The sender answers this conversation's ticket (its Message-ID is among the ones the
        mail answers; customers never see tickets) from the domain of the team address the
        ticket went to, and is not the customer (a team at a public mail domain)."""
        ticket = await self.adapter._get_json(f"ticket:{conversation_id}")
        team = str(ticket.get("team", ""))
        if not team or sender.rsplit("@", 1)[-1] != team.rsplit("@", 1)[-1]:
            return False
        if base_address(sender) in {base_address(a) for a in self.adapter.own}:
            return False
        if not self.answers & set(ticket.get("ids") or [ticket.get("message_id")]):
            return False
        conversation = await self._conversation(conversation_id)
        return conversation is not None and sender != conversation.address

    async def belongs(self, conversation_id: str, sender: str) -> bool:
        conversation = await self._conversation(conversation_id)
        if conversation is None:
            return False
        if conversation.channel == self.adapter.name and conversation.address in (sender, self.also):
            return True
        if await self.team_member(conversation_id, sender):
            return True
        members = (await self.adapter._get_json(f"members:{conversation_id}")).get("addresses", [])
        if sender in members:
            return True
        if conversation.contact_id:
            contact = await self.adapter.ctx.conversations.contact(conversation.contact_id)
            if contact is not None and contact.email.lower() == sender:
                return True
        return False
