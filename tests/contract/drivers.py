"""One driver per adapter for the contract suite: it runs the real adapter against its fake
platform on loopback, injects platform events, and reads back what the platform received.

A driver speaks the platform's own language (a Telegram update, a signed Slack event, a
mail in a Dovecot mailbox, a widget WebSocket frame, an API POST) so the cases in
``test_*.py`` can be written once. The adapter's context is real: publish through the
`Bus` to the test's own redis-server (which a case may stop), state in Redis.
"""

from __future__ import annotations

import abc
import email
import email.policy
import html
import itertools
import json
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Any, Literal

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from pydantic import SecretStr

from bridge import keys
from bridge.adapter import Adapter, AdapterContext, Capabilities, HealthState
from bridge.bus import Bus, entry_of
from bridge.context import RedisFanout, RedisState
from bridge.model import Attachment, Message, Sender, decode, entry_order
from bridge.store import Store
from tests.fakes.slack_api import FakeSlack, sign
from tests.fakes.telegram_api import FakeTelegram
from tests.harness import wait_for
from tests.mailservers import Dovecot, smtp_server
from tests.webhook import WEBHOOK_SECRET, WebhookReceiver
from tests.widget_client import Tab

PARTITIONS = 4
Failure = Literal["rate_limited", "server_error", "permanent", "gone"]


@dataclass
class Received:
    """What the platform-side recipient got: each part's text as a person reads it, and
    the files as (name, bytes) or, where the platform shows a link, (name, URL)."""

    parts: list[str] = field(default_factory=list)
    files: list[tuple[str, bytes | str]] = field(default_factory=list)
    #: where the platform would read the text as markup: a ping, a tag, a format
    markup: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class Driver(abc.ABC):
    name: str
    #: why this adapter receives nothing from its platform (None: it does)
    no_inbound: str | None = None
    #: why this adapter has no platform answers to map (None: it has)
    no_platform_errors: str | None = None
    #: the platform says how long to wait on a rate limit (an HTTP Retry-After / retry_after)
    retry_after_given = True
    #: how the platform tells the sender it should never retry (for messages)
    permanent_example = ""
    #: the platform delivers an unconfirmed event again by itself (HTTP retries, a resent
    #: frame); False: the adapter fetches it again (a poll offset, an IMAP watermark)
    platform_retries = True
    #: a send returns before the recipient has it (the widget's fanout to its sockets)
    delivered_later = False
    #: why no platform answer means "this recipient is gone for good" (None: one does)
    no_gone: str | None = None
    #: why there is no credential the platform could refuse (None: there is)
    no_credentials: str | None = None
    #: why a redelivery of a message sent whole reaches the platform again (None: it does
    #: not, the adapter notes its sends: `bridge.sentonce`)
    sends_again: str | None = None

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.bus = Bus(redis, partitions=PARTITIONS)
        self.health: list[tuple[HealthState, str]] = []
        self.adapter: Adapter
        self._web: web.AppRunner | None = None
        # bound first (and held): the adapter's context names its public URL
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.web_url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self.platform_files: dict[str, tuple[str, bytes]] = {}

    @property
    def capabilities(self) -> Capabilities:
        return type(self.adapter).capabilities

    def context(self, channel: str) -> AdapterContext:
        async def report(state: HealthState, detail: str) -> None:
            self.health.append((state, detail))

        return AdapterContext(publish=self.bus.publish, state=RedisState(self.redis, channel),
                              conversations=Store(self.redis, partitions=PARTITIONS), fanout=RedisFanout(self.redis),
                              report_health=report, public_url=self.web_url)

    async def serve(self) -> None:
        """The adapter's routes on a real HTTP server, as the bridge's web server would."""
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.add_routes(list(self.adapter.routes()))
        app.router.add_get("/_platform/files/{name}", self._platform_file)
        self._web = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._web.setup()
        await web.SockSite(self._web, self._socket).start()

    async def _platform_file(self, request: web.Request) -> web.Response:
        """Files on a platform that hands out plain URLs (the API's integrators)."""
        mime, content = self.platform_files[request.match_info["name"]]
        return web.Response(body=content, content_type=mime)

    @abc.abstractmethod
    async def start(self) -> None: ...

    async def stop(self) -> None:
        await self.adapter.stop()
        if self._web is not None:
            await self._web.cleanup()
        self._socket.close()

    # -- in ------------------------------------------------------------------------------

    async def inject(self, event_id: str, text: str) -> None:
        """The platform delivers one event (``event_id``: the platform's own id for it)."""
        raise NotImplementedError

    async def redeliver(self, event_id: str, text: str) -> None:
        """The platform delivers the same event again, as it does when unsure it was taken."""
        await self.inject(event_id, text)

    async def inject_file(self, event_id: str, name: str, mime: str, content: bytes) -> None:
        """A person sends a file (no text) on the platform."""
        raise NotImplementedError

    async def deliver_twice(self, event_id: str, text: str) -> None:
        """The same event twice in a row, before the adapter has confirmed it."""
        await self.inject(event_id, text)
        await self.redeliver(event_id, text)

    async def confirmed(self, event_id: str) -> bool:
        """The platform was told the event is stored (and will not deliver it again)."""
        raise NotImplementedError

    async def attempted(self, event_id: str) -> bool:
        """The adapter has tried to take the event (whatever the outcome)."""
        raise NotImplementedError

    def inbound_text(self, text: str) -> str:
        """What the platform hands over when a person writes ``text`` (before the adapter)."""
        return text

    async def stored(self) -> list[Message]:
        """Every message in the inbound streams, in order of arrival."""
        found: list[tuple[tuple[int, int, int], Message]] = []
        for partition in range(PARTITIONS):
            stream = keys.inbound(partition, PARTITIONS)
            for entry_id, fields in await self.redis.xrange(stream):
                found.extend(((*entry_order(entry_id), e.index), decode(e.payload))
                             for e in entry_of(stream, entry_id.decode(), fields) if e.payload)
        found.sort(key=lambda pair: pair[0])
        return [m for _, m in found]

    # -- out -----------------------------------------------------------------------------

    @abc.abstractmethod
    def outbound(self, text: str, attachments: list[Attachment] | None = None) -> Message:
        """A message this adapter sends (to the one recipient the driver watches)."""

    @abc.abstractmethod
    def records(self) -> list[Any]:
        """Everything the watched recipient got so far, in order (platform records)."""

    @abc.abstractmethod
    def read(self, records: list[Any]) -> Received:
        """Those records as the recipient reads them."""

    def mark(self) -> int:
        return len(self.records())

    async def received(self, since: int = 0) -> Received:
        """What the recipient got after ``mark()`` returned ``since``."""
        if self.delivered_later:
            await wait_for(lambda: len(self.records()) > since, what=f"{self.name} delivery")
        return self.read(self.records()[since:])

    def fail_next(self, failure: Failure, retry_after_s: int = 7) -> None:
        raise NotImplementedError

    def recover(self) -> None:  # noqa: B027 - most platforms fail once and recover by themselves
        """The platform answers normally again (after a failure that lasts)."""

    async def before_send(self) -> None:  # noqa: B027 - most platforms need nothing
        """Anything the platform side needs before sends are watched (a thread to post in)."""

    def refused(self) -> Adapter:
        """The same adapter (not started) with a credential the platform refuses."""
        raise NotImplementedError


# -- Telegram ----------------------------------------------------------------------------

CHAT_ID = 4242


class TelegramDriver(Driver):
    name = "telegram"
    platform_retries = False
    permanent_example = "400 can't parse entities"

    async def start(self) -> None:
        from adapters.telegram.adapter import TelegramAdapter
        from tests.telegram_poller import make_config

        self.fake = FakeTelegram()
        await self.fake.start()
        config = make_config(self.fake.base_url, self.fake.base_file_url, self.fake.token,
                             rate_per_address_per_s=1000.0)
        self.adapter = TelegramAdapter(config, self.context("telegram"))
        revoked = make_config(self.fake.base_url, self.fake.base_file_url, "123456789:AAErevokedrevokedrevoked")
        self._refused = TelegramAdapter(revoked, self.context("telegram"))
        self._update_ids: dict[str, int] = {}
        self._ids = itertools.count(1000)
        await self.serve()  # file links
        await self.adapter.start()
        await wait_for(lambda: self.fake.requests["getUpdates"], what="telegram polling")

    async def stop(self) -> None:
        await super().stop()
        await self.fake.stop()

    def _update(self, event_id: str, text: str) -> dict[str, Any]:
        update_id = self._update_ids.setdefault(event_id, next(self._ids))
        return {"update_id": update_id, "message": {
            "message_id": update_id, "date": int(time.time()), "text": text,
            "chat": {"id": CHAT_ID, "type": "private", "first_name": "Ann"},
            "from": {"id": CHAT_ID, "is_bot": False, "first_name": "Ann", "language_code": "en"}}}

    async def inject(self, event_id: str, text: str) -> None:
        await self._deliver(event_id, self._update(event_id, text))

    async def _deliver(self, event_id: str, update: dict[str, Any]) -> None:
        await self.fake.push_update(update)  # for the next getUpdates

    async def inject_file(self, event_id: str, name: str, mime: str, content: bytes) -> None:
        update = self._update(event_id, "")
        file_id = f"BQAD{update['update_id']}"
        self.fake.add_file(file_id, f"documents/{file_id}.bin", content)
        message = update["message"]
        del message["text"]
        message["document"] = {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_name": name,
                               "mime_type": mime, "file_size": len(content)}
        await self._deliver(event_id, update)

    async def deliver_twice(self, event_id: str, text: str) -> None:
        # Telegram hands an update out again until an offset confirms it (a getUpdates
        # answer lost on the way): one batch holding the same update_id twice
        update = self._update(event_id, text)
        self.fake.updates.append(update)
        await self.fake.push_update(update)

    async def confirmed(self, event_id: str) -> bool:
        return self.fake.confirmed_below > self._update_ids[event_id]

    async def attempted(self, event_id: str) -> bool:
        update_id = self._update_ids[event_id]
        return any(update_id in batch for batch in self.fake.served)

    def outbound(self, text: str, attachments: list[Attachment] | None = None) -> Message:
        return Message(kind="reply", channel="telegram", address=str(CHAT_ID), conversation_id="c-tg",
                       text=text, attachments=attachments or [])

    def records(self) -> list[Any]:
        return [m for m in self.fake.sent if m["chat_id"] == str(CHAT_ID)]

    def read(self, records: list[Any]) -> Received:
        got = Received()
        for item in records:
            if "text" in item:
                got.parts.append(item["text"])
            elif item.get("uploaded"):
                got.files.append((item["filename"], item["content"]))
        return got

    def fail_next(self, failure: Failure, retry_after_s: int = 7) -> None:
        if failure == "rate_limited":
            self.fake.fail("sendMessage", 429, retry_after=retry_after_s)
        elif failure == "server_error":
            self.fake.fail("sendMessage", 502)
        elif failure == "gone":
            self.fake.fail("sendMessage", 403, "Forbidden: bot was blocked by the user")
        else:  # about the message, not the chat ("chat not found" is a chat gone: unreachable)
            self.fake.fail("sendMessage", 400, "Bad Request: can't parse entities: unsupported start tag")

    def refused(self) -> Adapter:
        return self._refused


class TelegramWebhookDriver(TelegramDriver):
    """Telegram in webhook mode: Telegram POSTs each update and delivers it again until
    it gets a 200."""

    platform_retries = True
    SECRET = "contract-webhook-secret"

    async def start(self) -> None:
        from adapters.telegram.adapter import TelegramAdapter
        from tests.telegram_poller import make_config

        self.fake = FakeTelegram()
        await self.fake.start()
        config = make_config(self.fake.base_url, self.fake.base_file_url, self.fake.token, mode="webhook",
                             webhook_secret=self.SECRET, rate_per_address_per_s=1000.0)
        self.adapter = TelegramAdapter(config, self.context("telegram"))
        revoked = make_config(self.fake.base_url, self.fake.base_file_url, "123456789:AAErevokedrevokedrevoked")
        self._refused = TelegramAdapter(revoked, self.context("telegram"))
        self._update_ids: dict[str, int] = {}
        self._ids = itertools.count(1000)
        self.statuses: dict[str, list[int]] = {}
        self.http = aiohttp.ClientSession()
        await self.serve()
        await self.adapter.start()
        await wait_for(lambda: self.fake.webhook.get("url"), what="the webhook registered")

    async def stop(self) -> None:
        await self.http.close()
        await super().stop()

    async def _deliver(self, event_id: str, update: dict[str, Any]) -> None:  # Telegram POSTs it
        async with self.http.post(self.fake.webhook["url"], json=update,
                                  headers={"X-Telegram-Bot-Api-Secret-Token": self.SECRET}) as response:
            self.statuses.setdefault(event_id, []).append(response.status)

    async def deliver_twice(self, event_id: str, text: str) -> None:
        await self.inject(event_id, text)
        await self.inject(event_id, text)

    async def confirmed(self, event_id: str) -> bool:
        return self.statuses.get(event_id, [0])[-1] == 200

    async def attempted(self, event_id: str) -> bool:
        return bool(self.statuses.get(event_id))


# -- Slack (the agents' side: a customer's words arrive in a conversation's thread) --------

SLACK_SECRET = "contract-signing-secret"


class SlackDriver(Driver):
    name = "slack"
    no_gone = "slack is the agents' side: its recipients are channels, an integration matter (permanent)"
    permanent_example = "channel_not_found"

    async def start(self) -> None:
        from adapters.slack.adapter import SlackAdapter
        from adapters.slack.config import SlackConfig

        self.fake = FakeSlack(channels={"C0AGENTS": "support", "C0URGENT": "support-urgent"})
        await self.fake.start()
        self.fake.add_user("U0ALICE", name="alice", display_name="Alice")
        config = SlackConfig(bot_token=SecretStr(self.fake.bot_token), signing_secret=SecretStr(SLACK_SECRET),
                             base_url=self.fake.base_url, agents_channel="C0AGENTS", urgent_channel="C0URGENT",
                             urgent_mention="<!here>", rate_per_address_per_s=1000.0, timeout_s=2.0)
        self.adapter = SlackAdapter(config, self.context("slack"))
        self._refused = SlackAdapter(config.model_copy(update={"bot_token": SecretStr("xoxb-revoked")}),
                                     self.context("slack"))
        await self.serve()
        self.http = aiohttp.ClientSession()
        self.statuses: dict[str, list[int]] = {}
        self.thread_ts = ""
        await self.adapter.start()
        await self._open_thread()  # the conversation's thread, where agents answer

    async def stop(self) -> None:
        await self.http.close()
        await super().stop()
        await self.fake.stop()

    async def _open_thread(self) -> str:
        if not self.thread_ts:
            await self.adapter.send(self._event("new_conversation", "hello"))
            (root,) = self.fake.top_level("C0AGENTS")
            self.thread_ts = root.ts
        return self.thread_ts

    def inbound_text(self, text: str) -> str:
        # Slack's wire text escapes these three; everything else arrives as typed
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    async def inject(self, event_id: str, text: str) -> None:
        await self._post(event_id, text, retry=0)

    async def redeliver(self, event_id: str, text: str) -> None:
        await self._post(event_id, text, retry=len(self.statuses.get(event_id, [])))

    async def inject_file(self, event_id: str, name: str, mime: str, content: bytes) -> None:
        shared = self.fake.add_file(f"F{event_id.upper()}", name, mime, content)
        await self._post(event_id, "", retry=0, files=[shared])

    async def _post(self, event_id: str, text: str, retry: int, files: list[dict[str, Any]] | None = None) -> None:
        thread_ts = await self._open_thread()
        ts = f"{time.time():.6f}"
        event: dict[str, Any] = {
            "type": "message", "text": self.inbound_text(text), "user": "U0ALICE", "ts": ts, "thread_ts": thread_ts,
            "parent_user_id": "UBOT", "channel": "C0AGENTS", "event_ts": ts, "channel_type": "channel"}
        if files:
            event.update(subtype="file_share", files=files)
        payload = {"type": "event_callback", "team_id": "T0001", "api_app_id": "A0001", "event_id": event_id,
                   "event_time": int(time.time()), "event": event}
        body = json.dumps(payload)
        extra = {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_error"} if retry else None
        async with self.http.post(self.web_url + "/slack/events", data=body.encode(),
                                  headers=sign(SLACK_SECRET, body, extra=extra)) as response:
            self.statuses.setdefault(event_id, []).append(response.status)

    async def confirmed(self, event_id: str) -> bool:
        return self.statuses.get(event_id, [0])[-1] == 200

    async def attempted(self, event_id: str) -> bool:
        return bool(self.statuses.get(event_id))

    def _event(self, name: str, text: str, attachments: list[Attachment] | None = None) -> Message:
        summary = {"id": "abc123abc123-1", "channel": "telegram", "address": "42", "language": "en",
                   "urgency": "routine", "urgency_reason": "", "queue": "default", "customer": "Maria"}
        return Message(kind="event", channel="slack", name=name, conversation_id="abc123abc123-1", text=text,
                       sender=Sender(id="42", name="Maria"), attachments=attachments or [],
                       data={"conversation": summary})

    def outbound(self, text: str, attachments: list[Attachment] | None = None) -> Message:
        return self._event("customer_message", text, attachments)

    async def before_send(self) -> None:
        await self._open_thread()

    def records(self) -> list[Any]:
        return self.fake.thread("C0AGENTS", self.thread_ts)[1:] if self.thread_ts else []

    def read(self, records: list[Any]) -> Received:
        # the customer's words are plain_text sections, which Slack shows literally; files
        # are links in a context block
        got = Received()
        for post in records:
            # the notification text is mrkdwn: any <...> left in it is a ping or a link
            got.markup += [f"slack reads {token!r} in the notification text"
                           for token in re.findall(r"<[^>]*>", post.text) if token != "<!here>"]
            got.parts.append("".join(b["text"]["text"] for b in post.blocks
                                     if b.get("type") == "section" and b["text"]["type"] == "plain_text"))
            for block in post.blocks:
                for element in block.get("elements", []) if block.get("type") == "context" else []:
                    for url, name in re.findall(r"<([^|>]+)\|([^>]+)>", element.get("text", "")):
                        got.files.append((html.unescape(name), html.unescape(url)))
        return got

    def fail_next(self, failure: Failure, retry_after_s: int = 7) -> None:
        if failure == "rate_limited":
            self.fake.fail("chat.postMessage", status=429, retry_after_s=retry_after_s)
        elif failure == "server_error":
            self.fake.fail("chat.postMessage", status=503)
        else:
            self.fake.fail("chat.postMessage", error="channel_not_found")

    def refused(self) -> Adapter:
        return self._refused


# -- Email -------------------------------------------------------------------------------

CUSTOMER = "ann@customer.example"


class EmailDriver(Driver):
    name = "email"
    retry_after_given = False  # SMTP has no Retry-After: a 4xx says "later", not when
    platform_retries = False
    permanent_example = "550 mailbox unknown"

    def __init__(self, redis: aioredis.Redis, dovecot: Dovecot) -> None:
        super().__init__(redis)
        self.dovecot = dovecot

    async def start(self) -> None:
        from adapters.email.adapter import EmailAdapter
        from adapters.email.config import EmailConfig

        self._smtp = smtp_server()
        self.smtp, smtp_port = self._smtp.__enter__()
        config = EmailConfig(address="support@example.com", imap_host="127.0.0.1", imap_port=self.dovecot.port,
                             imap_tls="none", imap_user="agent", imap_password=SecretStr("secret"),
                             imap_timeout_s=5, reconnect_min_s=0.05, reconnect_max_s=0.3,
                             smtp_host="127.0.0.1", smtp_port=smtp_port, smtp_tls="none", smtp_timeout_s=5)
        self.adapter = EmailAdapter(config, self.context("email"))
        await self.serve()  # file links
        self._refused = EmailAdapter(config.model_copy(update={"imap_password": SecretStr("wrong")}),
                                     self.context("email"))
        self._ids: dict[str, str] = {}
        await self.adapter.start()
        await wait_for(lambda: any(state == "ok" for state, _ in self.health), what="IMAP login")

    async def stop(self) -> None:
        await super().stop()
        self._smtp.__exit__(None, None, None)

    def _mail(self, event_id: str, text: str) -> bytes:
        message = EmailMessage(policy=email.policy.SMTP)
        message["From"] = f"Ann <{CUSTOMER}>"
        message["To"] = "support@example.com"
        message["Subject"] = "a question"
        message["Message-ID"] = self._ids.setdefault(event_id, f"<{event_id}@customer.example>")
        message.set_content(text, cte="base64")
        return message.as_bytes()

    async def inject(self, event_id: str, text: str) -> None:
        self.dovecot.deliver(self._mail(event_id, text))

    async def inject_file(self, event_id: str, name: str, mime: str, content: bytes) -> None:
        mail = email.message_from_bytes(self._mail(event_id, ""), policy=email.policy.SMTP)
        assert isinstance(mail, EmailMessage)
        maintype, _, subtype = mime.partition("/")
        mail.add_attachment(content, maintype=maintype, subtype=subtype, filename=name)
        self.dovecot.deliver(mail.as_bytes())

    async def confirmed(self, event_id: str) -> bool:
        return self._flagged(event_id, "S")

    async def attempted(self, event_id: str) -> bool:
        return any(s == "degraded" for s, _ in self.health)

    def _flagged(self, event_id: str, flag: str) -> bool:
        wanted = self._ids[event_id].encode()
        for path in (self.dovecot.maildir() / "cur").iterdir():
            _, _, flags = path.name.partition(":2,")
            if flag in flags and wanted in path.read_bytes():
                return True
        return False

    def outbound(self, text: str, attachments: list[Attachment] | None = None) -> Message:
        return Message(kind="reply", channel="email", address=CUSTOMER, conversation_id="abc123abc123-1",
                       text=text, attachments=attachments or [])

    def records(self) -> list[Any]:
        return list(self.smtp.received)

    def read(self, records: list[Any]) -> Received:
        got = Received()
        for mail in records:
            parsed = email.message_from_bytes(mail.data, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            body = parsed.get_body(("plain",))
            assert body is not None
            content = str(body.get_content()).replace("\r\n", "\n").removesuffix("\n")  # MIME's line ends
            html_part = parsed.get_body(("html",))
            if html_part is not None:
                got.markup += _html_problems(str(html_part.get_content()), content)
            got.parts.append(content)
            got.files += [(name, url) for name, url in re.findall(r"^\[(.+?)\] (\S+)$", content, re.MULTILINE)]
            got.files += [(str(part.get_filename()), bytes(part.get_content())) for part in parsed.iter_attachments()]
        return got

    def fail_next(self, failure: Failure, retry_after_s: int = 7) -> None:
        if failure == "gone":  # the server refuses the recipient itself
            self.smtp.reject_rcpt = f"550 5.1.1 <{CUSTOMER}>: mailbox unknown"
            self._gone = True
            return
        self.smtp.fail_times = 1
        self.smtp.fail_with = {"rate_limited": "421 4.7.0 Too many messages, try again later",
                               "server_error": "451 4.3.0 Local error in processing",
                               "permanent": "554 5.7.1 Message rejected as spam"}[failure]

    def recover(self) -> None:
        self.smtp.reject_rcpt = None

    def refused(self) -> Adapter:
        return self._refused


# -- Widget ------------------------------------------------------------------------------

WIDGET_SECRET = "contract-widget-secret-0123456789"


class WidgetDriver(Driver):
    name = "widget"
    sends_again = "the visitor's page drops an item it has by its id"
    delivered_later = True
    no_gone = "the widget's platform is the bridge's own WebSockets"
    no_credentials = "the widget has no platform credential"
    no_platform_errors = "the widget's platform is the bridge's own WebSockets: no remote API answers to map"

    async def start(self) -> None:
        from adapters.widget.adapter import WidgetAdapter
        from adapters.widget.config import WidgetConfig

        config = WidgetConfig.model_validate({
            "secret": WIDGET_SECRET, "console": {"enabled": False},
            "limits": {"max_text_chars": 200_000, "max_frame_bytes": 2_000_000}})
        self.adapter = WidgetAdapter(config, self.context("widget"))
        await self.serve()
        await self.adapter.start()
        self.tab = await Tab.connect(self.web_url, hello={"language": "en"})
        welcome = await self.tab.welcome()
        self.visitor, self.token = str(welcome["visitor"]), str(welcome["token"])

    async def stop(self) -> None:
        await self.tab.close()
        await super().stop()

    async def inject(self, event_id: str, text: str) -> None:
        await self.tab.say(event_id, text)

    async def inject_file(self, event_id: str, name: str, mime: str, content: bytes) -> None:
        async with self.tab.session.post(self.web_url + "/widget/upload", data=content, headers={
                "Origin": self.web_url, "Authorization": f"Bearer {self.token}", "Content-Type": mime,
                "X-File-Name": urllib.parse.quote(name)}) as response:
            assert response.status == 200, await response.text()
            uploaded = await response.json()
        await self.tab.ws.send_str(json.dumps({"type": "message", "cid": event_id, "text": "",
                                               "files": [uploaded["id"]]}))

    def _frames(self, event_id: str) -> list[dict[str, Any]]:
        return [f for f in self.tab.frames if f.get("cid") == event_id and f["type"] in ("ack", "error")]

    async def confirmed(self, event_id: str) -> bool:
        return any(f["type"] == "ack" for f in self._frames(event_id))

    async def attempted(self, event_id: str) -> bool:
        return bool(self._frames(event_id))

    def outbound(self, text: str, attachments: list[Attachment] | None = None) -> Message:
        return Message(kind="reply", channel="widget", address=self.visitor, conversation_id="c-w",
                       text=text, attachments=attachments or [], sender=Sender(name="Alice", is_agent=True))

    def records(self) -> list[Any]:
        return [f["item"] for f in self.tab.frames if f["type"] == "item" and f["item"].get("from") != "visitor"]

    def read(self, records: list[Any]) -> Received:
        return Received(parts=[i["text"] for i in records],
                        files=[(a["name"], a["url"]) for i in records for a in i.get("attachments", [])])


# -- HTTP API ----------------------------------------------------------------------------

API_TOKEN = "contract-api-token"


class ApiDriver(Driver):
    name = "api"
    sends_again = "a redelivery carries the same X-Bridge-Message-Id: the receiver drops it"
    no_credentials = "the API channel holds no credential the integrator's server checks (it signs)"
    permanent_example = "403 forbidden"

    async def start(self) -> None:
        from adapters.api.adapter import ApiAdapter
        from adapters.api.config import ApiConfig

        self.webhook = WebhookReceiver(WEBHOOK_SECRET)
        await self.webhook.start()
        config = ApiConfig(token=SecretStr(API_TOKEN), webhook_url=self.webhook.url,
                           webhook_secret=SecretStr(WEBHOOK_SECRET), max_message_bytes=2_000_000,
                           webhook_timeout_s=5)
        self.adapter = ApiAdapter(config, self.context("api"))
        await self.serve()
        await self.adapter.start()
        self.http = aiohttp.ClientSession()
        self.statuses: dict[str, list[int]] = {}

    async def stop(self) -> None:
        await self.http.close()
        await super().stop()
        await self.webhook.stop()

    async def inject(self, event_id: str, text: str, **extra: Any) -> None:
        async with self.http.post(self.web_url + "/api/v1/messages",
                                  json={"customer_id": "cust-1", "message_id": event_id, "text": text, **extra},
                                  headers={"Authorization": f"Bearer {API_TOKEN}"}) as response:
            self.statuses.setdefault(event_id, []).append(response.status)

    async def inject_file(self, event_id: str, name: str, mime: str, content: bytes) -> None:
        # an integrator's file is a URL on its own server
        self.platform_files = {event_id: (mime, content)}
        url = f"{self.web_url}/_platform/files/{event_id}"
        await self.inject(event_id, "", attachments=[{"name": name, "mime": mime, "size": len(content), "url": url}])

    async def confirmed(self, event_id: str) -> bool:
        return self.statuses.get(event_id, [0])[-1] == 202

    async def attempted(self, event_id: str) -> bool:
        return bool(self.statuses.get(event_id))

    def outbound(self, text: str, attachments: list[Attachment] | None = None) -> Message:
        return Message(kind="reply", channel="api", address="cust-1", conversation_id="c-api", text=text,
                       attachments=attachments or [])

    def records(self) -> list[Any]:
        return self.webhook.messages

    def read(self, records: list[Any]) -> Received:
        return Received(parts=[m["text"] for m in records],
                        files=[(a["name"], a["url"]) for m in records for a in m["attachments"]])

    def fail_next(self, failure: Failure, retry_after_s: int = 7) -> None:
        self.webhook.retry_after = str(retry_after_s)
        self.webhook.fail_next.append({"rate_limited": 429, "server_error": 503, "permanent": 403,
                                       "gone": 410}[failure])


# -- Null --------------------------------------------------------------------------------

class NullDriver(Driver):
    name = "null"
    sends_again = "the null channel sends nothing"
    no_gone = "the null channel has no platform"
    no_credentials = "the null channel has no platform"
    no_inbound = "the null channel receives nothing"
    no_platform_errors = "the null channel has no platform"

    async def start(self) -> None:
        from adapters.null import NullAdapter, NullConfig

        self.adapter = NullAdapter(NullConfig(), self.context("null"))
        await self.adapter.start()

    def outbound(self, text: str, attachments: list[Attachment] | None = None) -> Message:
        return Message(kind="reply", channel="null", address="x", text=text)

    def records(self) -> list[Any]:
        return []

    def read(self, records: list[Any]) -> Received:
        return Received()


DRIVERS: dict[str, type[Driver]] = {"telegram": TelegramDriver, "telegram-webhook": TelegramWebhookDriver,
                                    "slack": SlackDriver, "email": EmailDriver,
                                    "widget": WidgetDriver, "api": ApiDriver, "null": NullDriver}


_HTML_ALLOWED = {"html", "head", "meta", "body", "p", "br", "a", "div", "span", "blockquote"}


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in ("p", "br"):
            self.text.append("\n")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _html_problems(body: str, plain: str) -> list[str]:
    """An HTML alternative that shows something else than the text, or holds tags a
    sender's text put there."""
    parser = _HtmlText()
    parser.feed(body)
    problems = [f"the HTML part holds a <{tag}>" for tag in parser.tags if tag not in _HTML_ALLOWED]
    if "".join("".join(parser.text).split()) != "".join(plain.split()):
        problems.append("the HTML part shows other text than the plain part")
    return problems
