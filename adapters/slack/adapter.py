"""Slack, the agents' side: a thread per conversation, agent replies back to the customer.

Out (`send`): the engine's ``event`` messages. ``escalation`` and ``new_conversation``
open a thread (urgent ones in the urgent channel with the mention) and return its ref
``slack:<channel id>:<thread ts>``; later events for the conversation (customer
follow-ups, delivery reports, state changes) are posted in that thread, found through
``ctx.state`` (conversation id -> channel and ts).

In: Events API over HTTP (``routes()``, bolt verifies the signature and the 5-minute
window on the raw body) or Socket Mode. An agent's message in one of our threads
becomes an ``agent`` message (to the customer), a ``command`` (claim, assign, resolve,
reopen, urgency, note) or nothing; the HTTP 200 / socket ack goes out only after
``ctx.publish`` returned, and Slack's retries are dropped by the dedupe key
``slack:<event_id>``. Messages from bots (ours included) are never ingested.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import aiohttp
import emoji
import msgspec
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack import blocks, commands, contact_commands
from adapters.slack.config import SlackConfig
from adapters.slack.escape import mention_markup, mentioned_users, to_plain
from bridge import filelinks
from bridge.adapter import Adapter, AdapterContext, Capabilities, ChannelConfig, Delivered, HealthState
from bridge.errors import IntegrationBroken, PermanentError, SendError, TransientError
from bridge.model import Attachment, Message, Sender
from bridge.sentonce import send_once

log = logging.getLogger("bridge.slack")

#: Slack errors that mean the integration itself needs a person (token, scopes, channel).
BROKEN_ERRORS = frozenset({
    "account_inactive", "invalid_auth", "not_authed", "token_revoked", "token_expired", "channel_not_found",
    "not_in_channel", "is_archived", "missing_scope", "no_permission", "team_access_not_granted",
    "ekm_access_denied", "org_login_required", "restricted_action",
})
#: the part of BROKEN_ERRORS that says the token itself is refused
TOKEN_ERRORS = ("account_inactive", "invalid_auth", "not_authed", "token_revoked", "token_expired")
#: the part of BROKEN_ERRORS that concerns one channel, not the whole integration
CHANNEL_ERRORS = ("channel_not_found", "not_in_channel", "is_archived")
#: Slack refused the Block Kit layout; the text alone still goes out
BLOCK_ERRORS = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_blocks_too_long"})
#: Slack errors worth another try.
TRANSIENT_ERRORS = frozenset({
    "ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout",
})
#: message subtypes an agent produces by writing; everything else (edits, joins, bots) is ignored
AGENT_SUBTYPES = frozenset({"", "file_share", "thread_broadcast"})

THREAD_KEY = "thread:"  # + conversation id -> "<channel id> <thread ts>"
REF_KEY = "ref:"  # + "<channel id>:<thread ts>" -> conversation id (until the bridge's own ref is stored)
PROGRESS_KEY = "progress:"  # + message id -> parts of a long text already posted
PROGRESS_TTL_S = 2 * 86400
ROOT_KEY = "root:"  # + conversation id -> JSON of what the first post showed (to re-render it)
ROOT_TEXT_MAX = 3000
USER_LOOKUP_TIMEOUT_S = 1.0


def _error_code(exc: SlackApiError) -> str:
    data = getattr(exc.response, "data", None)
    return str(data.get("error") or "") if isinstance(data, dict) else ""


def classify(exc: Exception, token_key: str = "bot_token") -> SendError:
    """Map a Slack client failure to the bridge's retry policy; a refused token names its
    setting (``token_key``)."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = int(getattr(response, "status_code", 0) or 0)
        data = getattr(response, "data", None)
        error = str(data.get("error") or "") if isinstance(data, dict) else ""
        if status == 429 or error in ("ratelimited", "rate_limited"):
            headers = getattr(response, "headers", None) or {}
            retry_after_s: float | None
            try:
                retry_after_s = float(headers.get("Retry-After") or headers.get("retry-after") or 1)
            except (TypeError, ValueError):
                retry_after_s = 1.0
            return TransientError("slack rate limit (429)", retry_after_s=retry_after_s)
        if error in TOKEN_ERRORS:
            return IntegrationBroken(f"slack: {error} (check channels.slack.{token_key})")
        if error in BROKEN_ERRORS:
            return IntegrationBroken(f"slack: {error}")
        if status >= 500 or error in TRANSIENT_ERRORS:
            return TransientError(f"slack: HTTP {status} {error}".rstrip())
        return PermanentError(f"slack: {error or f'HTTP {status}'}")
    if isinstance(exc, (aiohttp.ClientError, TimeoutError, OSError)):
        return TransientError(f"slack unreachable: {type(exc).__name__}: {exc}".rstrip(": "))
    return PermanentError(f"slack: {type(exc).__name__}: {exc}")


class _Pacer:
    """At most ``rate_per_s`` posts per Slack channel (Slack's ~1 message/s/channel).

    The dispatcher paces by message address; the engine's events carry none, so
    pacing per Slack channel lives here.
    """

    def __init__(self, rate_per_s: float) -> None:
        self.interval_s = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self._next: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def wait(self, channel: str) -> None:
        if self.interval_s <= 0:
            return
        lock = self._locks.setdefault(channel, asyncio.Lock())
        async with lock:
            now = time.monotonic()
            due = self._next.get(channel, now)
            if due > now:
                await asyncio.sleep(due - now)
                now = time.monotonic()
            self._next[channel] = max(now, due) + self.interval_s
        if len(self._next) > 10_000:  # forget idle channels
            cutoff = time.monotonic()
            for key in [k for k, v in self._next.items() if v < cutoff and not self._locks[k].locked()]:
                self._next.pop(key, None)
                self._locks.pop(key, None)


class _KnownBot(AsyncAuthorize):
    """Authorize every verified request as our one bot, from what `start` learned."""

    def __init__(self, adapter: SlackAdapter) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # bolt does not type it
        self.adapter = adapter

    async def __call__(self, *, context: Any, enterprise_id: str | None, team_id: str | None,
                       user_id: str | None, actor_enterprise_id: str | None = None,
                       actor_team_id: str | None = None, actor_user_id: str | None = None) -> AuthorizeResult:
        adapter = self.adapter
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id,
                               bot_token=adapter.config.bot_token.get_secret_value(),
                               bot_id=adapter._bot_id or None, bot_user_id=adapter._bot_user_id or None)


class SlackAdapter(Adapter):
    name: ClassVar[str] = "slack"
    config_model: ClassVar[type[ChannelConfig]] = SlackConfig
    side: ClassVar[Literal["customer", "agent", "both"]] = "agent"
    capabilities = Capabilities(buttons=True, files=True, edits=True, max_text_length=blocks.MESSAGE_TEXT_MAX)
    default_rate_per_s: ClassVar[float] = 20.0
    default_rate_per_address_per_s: ClassVar[float | None] = 1.0

    config: SlackConfig

    def __init__(self, config: ChannelConfig, ctx: AdapterContext) -> None:
        assert isinstance(config, SlackConfig)
        super().__init__(config, ctx)
        timeout_s = int(max(1, config.timeout_s))
        self.client = AsyncWebClient(token=config.bot_token.get_secret_value(), base_url=config.base_url,
                                     timeout=timeout_s, retry_handlers=[])
        events = config.mode == "events"
        secret = config.signing_secret.get_secret_value() if config.signing_secret else ""
        # bolt's default single-team authorization calls auth.test on the first request and,
        # when that fails, answers Slack 200 and drops the event; ours never calls Slack on
        # the request path. The app's own client carries no token (bolt gives each request
        # one from the authorize result), so bolt does not see a token/authorize conflict.
        app_client = AsyncWebClient(base_url=config.base_url, timeout=timeout_s, retry_handlers=[])
        self.app = AsyncApp(client=app_client, signing_secret=secret, process_before_response=True,
                            request_verification_enabled=events, authorize=_KnownBot(self), logger=log)
        self.app.event("message")(self._on_message)
        for action in (blocks.CLAIM_ACTION, blocks.RESOLVE_ACTION, blocks.REOPEN_ACTION):
            self.app.action(action)(self._on_action)
        self.app.error(self._on_error)
        rate = config.rate_per_address_per_s or self.default_rate_per_address_per_s or 0.0
        self._pacer = _Pacer(rate)
        self._bot_user_id = ""
        self._bot_id = ""
        self._identity_tried_s = 0.0
        self._users: dict[str, Sender] = {}
        self._health: tuple[str, str] | None = None
        self._socket: Any = None
        self._socket_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._file_key = filelinks.signing_key("slack", config.bot_token.get_secret_value())
        self._channel_ids: dict[str, str] = {}  # "#name" from the config -> channel id Slack answered
        self._broken_channel = ""
        self._http: aiohttp.ClientSession | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self._learn_identity()
        if self.config.mode == "socket":
            await self._start_socket()

    async def _learn_identity(self) -> None:
        self._identity_tried_s = time.monotonic()
        try:
            auth = await self.client.auth_test()
        except Exception as exc:
            await self._health_from(classify(exc))
            return
        self._bot_user_id = str(auth.get("user_id") or "")
        self._bot_id = str(auth.get("bot_id") or "")
        problem = await self._channel_problem()
        if problem:
            await self._set_health("broken", problem)
            return
        await self._set_health("ok", f"workspace {auth.get('team', '')} as {auth.get('user', '')}")

    def configured_channels(self) -> list[str]:
        cfg = self.config
        named = [cfg.agents_channel, cfg.urgent_channel, *cfg.queue_channels.values(), *cfg.urgency_channels.values()]
        named += self.ctx.settings.queue_slack_channels.values()
        return list(dict.fromkeys(c for c in named if c))

    async def _channel_problem(self) -> str:
        """Why a configured channel cannot take our posts (unknown, bot not invited), or ""."""
        for channel in self.configured_channels():
            if channel.startswith("#"):
                continue  # names are resolved by Slack at post time
            try:
                info = await self.client.conversations_info(channel=channel)
            except SlackApiError as exc:
                error = classify(exc)
                if "channel_not_found" in error.reason:
                    return f"channel {channel}: channel_not_found (check the id; invite the bot to private channels)"
                log.info("could not check a channel", extra={"channel": channel, "error": error.reason})
                continue
            except Exception as exc:
                log.info("could not check a channel", extra={"channel": channel, "error": repr(exc)})
                continue
            details = info.get("channel") or {}
            if details.get("is_archived"):
                return f"channel {channel}: is_archived"
            if details.get("is_member") is False:
                return f"channel {channel}: not_in_channel (invite the bot: /invite @<bot name>)"
        return ""

    async def _start_socket(self) -> None:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        assert self.config.app_token is not None
        token = self.config.app_token.get_secret_value()
        try:  # the handler retries a bad token forever, silently; ask once so the operator hears of it
            await self.client.apps_connections_open(app_token=token)
        except Exception as exc:
            error = classify(exc, token_key="app_token")
            await self._health_from(error, prefix="socket mode: ")
            if not isinstance(error, TransientError):
                return  # a wrong or revoked app token: fix the config and restart
        self._socket = AsyncSocketModeHandler(self.app, token, web_client=self.client, logger=log)
        self._socket_task = asyncio.create_task(self._socket.connect_async(), name="slack-socket-connect")

    async def stop(self) -> None:
        if self._socket_task is not None:
            self._socket_task.cancel()
            await asyncio.gather(self._socket_task, return_exceptions=True)
            self._socket_task = None
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def check(self) -> tuple[HealthState, str]:
        try:
            auth = await self.client.auth_test()
        except Exception as exc:
            error = classify(exc)
            return ("broken" if isinstance(error, IntegrationBroken) else "degraded", error.reason)
        problem = await self._channel_problem()
        if problem:
            return ("broken", problem)
        return ("ok", f"workspace {auth.get('team', '')} as {auth.get('user', '')}")

    async def _set_health(self, state: HealthState, detail: str) -> None:
        if self._health == (state, detail):
            return
        self._health = (state, detail)
        try:
            await self.ctx.report_health(state, detail)
        except Exception as exc:  # health is advisory; never fail a send for it
            log.warning("could not report health", extra={"error": repr(exc)})

    async def _health_from(self, error: SendError, prefix: str = "") -> None:
        if isinstance(error, IntegrationBroken):
            await self._set_health("broken", prefix + error.reason)
        elif isinstance(error, TransientError):
            await self._set_health("degraded", prefix + error.reason)

    # -- out -------------------------------------------------------------------------

    async def send(self, message: Message) -> Delivered:
        """Post an event; a redelivery of one posted already posts nothing again and
        answers as the post did (`bridge.sentonce`), so a thread is neither doubled nor
        left unknown to the bridge."""
        return await send_once(self.ctx.state, message, self._send)

    async def _send(self, message: Message) -> Delivered:
        if message.kind != "event":
            raise PermanentError(f"slack is an agent channel and sends only events, not {message.kind!r}")
        name = message.name
        if name in ("escalation", "new_conversation"):
            return await self._open_thread(message, urgent=name == "escalation")
        thread = await self._thread(message.conversation_id)
        if thread is None:  # the opening post never happened here (e.g. slack was added later)
            return await self._open_thread(message, urgent=self._is_urgent(message))
        channel, thread_ts = thread
        if name == "customer_message":
            return Delivered(platform_id=await self._post_text(message, channel, thread_ts))
        if name == "delivery":
            text, body = blocks.delivery(message)
        elif name == "state":
            text, body = blocks.state(message)
        elif name in ("translation", "reply_translation"):
            text, body = blocks.translation(message)
        else:  # an SLA breach on an urgent case calls the on-call people again
            urgent_breach = name == "sla_breach" and blocks.summary(message).get("urgency") == "urgent"
            text, body = blocks.generic(message, mention=self.mention(message) if urgent_breach else "")
        ts, _ = await self._post(channel, text, body, thread_ts=thread_ts)
        if name == "state":
            await self._refresh_root(message, channel, thread_ts)
        return Delivered(platform_id=ts)

    def _is_urgent(self, message: Message) -> bool:
        return message.name == "escalation" or blocks.summary(message).get("urgency") == "urgent"

    def mention(self, event: Message | None = None) -> str:
        """The operator's configured mention for urgent threads, in Slack syntax (it must ping)."""
        if self.config.urgent_mention is not None:
            return mention_markup(self.config.urgent_mention)
        if event is not None and event.data.get("mention"):
            return mention_markup(str(event.data["mention"]))
        return mention_markup(self.ctx.settings.urgent_mention)

    def channel_for(self, message: Message, *, urgent: bool) -> str:
        """Where a conversation's thread opens: urgency, then queue, then the agents' channel."""
        cfg = self.config
        if urgent:
            return cfg.urgency_channels.get("urgent") or cfg.urgent_channel or cfg.agents_channel
        queue = str(blocks.summary(message).get("queue") or message.data.get("queue") or "")
        if queue:
            channel = cfg.queue_channels.get(queue) or self.ctx.settings.queue_slack_channels.get(queue)
            if channel:
                return str(channel)
        return cfg.urgency_channels.get("routine") or cfg.agents_channel

    async def _open_thread(self, message: Message, *, urgent: bool) -> Delivered:
        channel = self.channel_for(message, urgent=urgent)
        existing = await self._thread(message.conversation_id)
        if existing is not None and (existing[0] == self._channel_ids.get(channel, channel) or not urgent
                                     or message.data.get("reopened")):
            # the conversation already has a thread: keep it, say what happened; a thread
            # moves only when a case turns urgent (to the urgent channel), never on a reopening
            if urgent:
                text, body = blocks.escalated(message, mention=self.mention(message))
                ts, _ = await self._post(existing[0], text, body, thread_ts=existing[1])
            else:
                ts = await self._post_text(message, existing[0], existing[1])
            await self._refresh_root(message, existing[0], existing[1])  # reopened or now urgent
            return Delivered(platform_id=ts)
        parts = blocks.split_text(message.text)
        first = msgspec.structs.replace(message, text=parts[0]) if len(parts) > 1 else message
        text, body = blocks.opening(first, urgent=urgent, mention=self.mention(message))
        ts, channel_id = await self._post(channel, text, body)
        if existing is not None:  # moved (escalated to the urgent channel): leave a pointer behind
            note, note_blocks = blocks.notice("escalated: the conversation continues in a new thread")
            try:
                await self._post(existing[0], note, note_blocks, thread_ts=existing[1])
            except SendError as exc:
                log.info("could not note the move in the old thread", extra={"error": exc.reason})
        if message.conversation_id:
            ttl_s = self.config.thread_ttl_days * 86400
            await self.ctx.state.set(THREAD_KEY + message.conversation_id, f"{channel_id} {ts}", ttl_s=ttl_s)
            # the bridge records the ref once send returns; an agent quicker than that is still found
            await self.ctx.state.set(REF_KEY + f"{channel_id}:{ts}", message.conversation_id, ttl_s=ttl_s)
            root = {"urgent": urgent, "text": message.text[:ROOT_TEXT_MAX],
                    "attachments": [msgspec.to_builtins(a) for a in message.attachments[:20]]}
            await self.ctx.state.set(ROOT_KEY + message.conversation_id, json.dumps(root), ttl_s=ttl_s)
        if len(parts) > 1:  # the rest of a long first message follows in the thread
            await self._post_text(msgspec.structs.replace(message, attachments=[]), channel_id, ts, first=1)
        return Delivered(platform_id=ts, ref=f"slack:{channel_id}:{ts}")

    async def _post_text(self, message: Message, channel: str, thread_ts: str, *, first: int = 0) -> str:
        """The customer's words in the thread, in posts of at most ``blocks.MESSAGE_TEXT_MAX``
        characters, in order (from part ``first``), files with the last; a retry resumes
        after the parts already posted. Returns the last post's ts."""
        parts = blocks.split_text(message.text)
        key = PROGRESS_KEY + message.id
        done = max(first, int(await self.ctx.state.get(key) or 0)) if len(parts) > 1 else first
        ts = ""
        for index in range(done, len(parts)):
            last = index == len(parts) - 1
            shown = msgspec.structs.replace(message, text=parts[index], attachments=message.attachments if last else [])
            text, body = blocks.customer_message(shown)
            ts, _ = await self._post(channel, text, body, thread_ts=thread_ts)
            if not last:
                await self.ctx.state.set(key, str(index + 1), ttl_s=PROGRESS_TTL_S)
        if len(parts) > 1:
            await self.ctx.state.delete(key)
        return ts

    async def _refresh_root(self, message: Message, channel: str, ts: str) -> None:
        """Show the new state on the thread's first post (status, assignee, buttons).

        Best effort: the state line in the thread is the record; a failed edit is logged.
        """
        raw = await self.ctx.state.get(ROOT_KEY + message.conversation_id)
        if not raw or not isinstance(message.data.get("conversation"), dict):
            return
        try:
            root = json.loads(raw)
            attachments = msgspec.convert(root.get("attachments") or [], list[Attachment])
        except (ValueError, msgspec.ValidationError):
            return
        urgent = bool(root.get("urgent"))
        shown = msgspec.structs.replace(message, text=str(root.get("text") or ""), attachments=attachments)
        text, body = blocks.opening(shown, urgent=urgent, mention=self.mention(message))
        try:
            await self.client.chat_update(channel=channel, ts=ts, text=text, blocks=body)
        except Exception as exc:
            log.info("could not update the thread's first post", extra={"error": classify(exc).reason})

    async def _thread(self, conversation_id: str) -> tuple[str, str] | None:
        if not conversation_id:
            return None
        value = await self.ctx.state.get(THREAD_KEY + conversation_id)
        if not value:
            return None
        channel, _, ts = value.partition(" ")
        return (channel, ts) if channel and ts else None

    async def _post(self, channel: str, text: str, body: list[blocks.Block], *,
                    thread_ts: str | None = None) -> tuple[str, str]:
        """Post one message (paced per channel); returns (ts, channel id)."""
        channel = self._channel_ids.get(channel, channel)
        await self._pacer.wait(channel)
        kwargs: dict[str, Any] = {"channel": channel, "text": text, "blocks": body, "unfurl_links": False,
                                  "unfurl_media": False}
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        try:
            try:
                response = await self.client.chat_postMessage(**kwargs)
            except SlackApiError as exc:
                if _error_code(exc) not in BLOCK_ERRORS:
                    raise
                # Slack refused our blocks: the agents still get the (escaped) text
                log.warning("slack refused the blocks; posting text only", extra={"error": _error_code(exc)})
                kwargs.pop("blocks")
                response = await self.client.chat_postMessage(**kwargs)
        except Exception as exc:
            error = classify(exc)
            if isinstance(error, IntegrationBroken):
                # a channel problem stays reported until that channel works again
                self._broken_channel = channel if any(e in error.reason for e in CHANNEL_ERRORS) else ""
            await self._health_from(error)
            raise error from exc
        channel_id = str(response.get("channel") or channel)
        if channel.startswith("#"):
            self._channel_ids[channel] = channel_id  # later posts and comparisons use the id
        if self._health is not None and self._health[0] != "ok" and self._broken_channel in ("", channel, channel_id):
            self._broken_channel = ""
            await self._set_health("ok", "posting again")
        return str(response.get("ts") or ""), channel_id

    # -- in --------------------------------------------------------------------------

    def routes(self) -> Iterable[web.AbstractRouteDef]:
        file_route = web.get(self.config.files_path + "/{file_id}", self._serve_file)
        if self.config.mode != "events":
            return (file_route,)
        return (web.post(self.config.events_path, self._handle_http), file_route)

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        """A file an agent shared, for the customer's channel: signed link in, Slack file out."""
        file_id = request.match_info["file_id"]
        if not filelinks.valid(self._file_key, file_id, request.query.get("exp", ""), request.query.get("sig", "")):
            return web.Response(status=403, text="invalid or expired link")
        try:
            info = await self.client.files_info(file=file_id)
        except Exception as exc:
            error = classify(exc)
            if "file_not_found" in error.reason or "file_deleted" in error.reason:
                return web.Response(status=404, text="the file is gone from Slack")
            status = 503 if isinstance(error, TransientError) else 502
            return web.Response(status=status, text=f"slack: {error.reason}")
        details = info.get("file") or {}
        url = str(details.get("url_private_download") or details.get("url_private") or "")
        if not url:
            return web.Response(status=404, text="the file has no content on Slack")
        limit = self.config.max_file_bytes
        if int(details.get("size") or 0) > limit:
            return web.Response(status=413, text=f"file over {limit} bytes (channels.slack.max_file_bytes)")
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        token = self.config.bot_token.get_secret_value()
        try:
            async with self._http.get(url, headers={"Authorization": f"Bearer {token}"}) as upstream:
                if upstream.status != 200:
                    return web.Response(status=503 if upstream.status >= 500 else 502,
                                        text=f"slack file download answered {upstream.status}")
                if upstream.content_type == "text/html" and details.get("mimetype") != "text/html":
                    # Slack's sign-in page instead of the file: the token may not read files
                    return web.Response(status=502, text="slack refused the download (the app needs files:read)")
                content = await upstream.content.read(limit + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.Response(status=503, text=f"slack file download failed: {type(exc).__name__}")
        if len(content) > limit:
            return web.Response(status=413, text=f"file over {limit} bytes (channels.slack.max_file_bytes)")
        name = str(details.get("name") or file_id)
        mime = str(details.get("mimetype") or "application/octet-stream")
        return web.Response(body=content, **filelinks.response_options(mime, name))

    def _attachments(self, event: dict[str, Any]) -> list[Attachment]:
        """Files shared with a reply; their URL is a signed link through the bridge."""
        found = []
        for f in event.get("files") or []:
            if not isinstance(f, dict) or not f.get("id"):
                continue
            file_id = str(f["id"])
            url = filelinks.link(self.ctx.public_url, self.config.files_path, self._file_key, file_id,
                             self.config.file_link_ttl_s)
            found.append(Attachment(name=str(f.get("name") or ""),
                                    mime=str(f.get("mimetype") or "application/octet-stream"),
                                    size=int(f.get("size") or 0), ref=file_id, url=url))
        return found

    async def _handle_http(self, request: web.Request) -> web.StreamResponse:
        """Slack's POST: verified and dispatched by bolt; answered within Slack's 3 s."""
        bolt_request = await to_bolt_request(request)
        try:
            # the listeners give up at ack_timeout_s; this also bounds verification and routing
            response = await asyncio.wait_for(self.app.async_dispatch(bolt_request),
                                              min(self.config.ack_timeout_s + 0.3, 2.9))
        except TimeoutError:
            log.warning("slack event not stored in time; slack will retry")
            return web.Response(status=503, text="busy, retry")
        if response.status == 404 and bolt_request.body.get("type") == "event_callback":
            return web.Response(status=200)  # an event we do not handle: acknowledge, never retried
        return await to_aiohttp_response(response)

    async def _on_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        # not stored in time: no ack, so Slack delivers again (HTTP and Socket Mode alike)
        async with asyncio.timeout(self.config.ack_timeout_s):
            await self._take_message(event, body)

    async def _on_error(self, error: Exception) -> BoltResponse | None:
        """A listener that could not store the event in time: 503, Slack delivers again."""
        if isinstance(error, TimeoutError):
            log.warning("slack event not stored in time; slack will retry")
            return BoltResponse(status=503, body="busy, retry")
        log.error("slack event failed", exc_info=error)
        return None  # bolt answers 500

    async def _on_action(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        async with asyncio.timeout(self.config.ack_timeout_s):
            await self._take_action(body, action)
        await ack()

    async def _take_message(self, event: dict[str, Any], body: dict[str, Any]) -> None:
        """A message in a channel the bot is in. Only agents' replies in our threads count."""
        if event.get("bot_id") or event.get("subtype", "") not in AGENT_SUBTYPES:
            return
        user = str(event.get("user") or "")
        if not user or user == self._bot_user_id:
            return
        if not self._bot_user_id and time.monotonic() - self._identity_tried_s > 30:
            self._spawn(self._learn_identity())  # start could not ask Slack who we are; try again
        thread_ts = str(event.get("thread_ts") or "")
        ts = str(event.get("ts") or "")
        channel = str(event.get("channel") or "")
        if not thread_ts or thread_ts == ts or not channel:
            return  # top-level chatter in the channel, not a conversation thread
        ref = f"slack:{channel}:{thread_ts}"
        conversation_id = (await self.ctx.conversations.by_ref(ref)
                           or await self.ctx.state.get(REF_KEY + f"{channel}:{thread_ts}") or "")
        if not conversation_id and not (self._bot_user_id and event.get("parent_user_id") == self._bot_user_id):
            return  # a thread the bridge did not open
        raw = str(event.get("text") or "")
        cfg = self.config
        parsed = commands.parse(raw, mode=cfg.replies, note_prefixes=cfg.note_prefixes,
                                reply_markers=cfg.reply_markers, command_prefix=cfg.command_prefix)
        event_id = str(body.get("event_id") or f"{channel}:{ts}")
        sender = await self._agent(user)
        common: dict[str, Any] = {"channel": self.name, "ref": ref, "conversation_id": conversation_id,
                                  "sender": sender, "dedupe_key": f"slack:{event_id}",
                                  "platform_ms": _ts_ms(ts)}
        if parsed.kind == "invalid":
            self._notice(channel, thread_ts, parsed.error)
            return
        if parsed.kind == "command" and parsed.name == "contact":
            # answered here, in the thread: a contact is the person's, not the conversation's
            if await self.ctx.state.set_if_absent(f"contact-command:{event_id}", "1", ttl_s=3600):
                self._spawn(self._contact_command(channel, thread_ts, conversation_id, parsed.data, sender.name))
            return
        if parsed.kind == "command":
            data = await self._command_data(parsed)
            await self.ctx.publish(Message(kind="command", name=parsed.name, data=data, **common))
            return
        users = await self._mentioned_names(parsed.text)
        # Slack writes emoji as :shortcodes:; the customer's app shows Unicode
        text = emoji.emojize(to_plain(parsed.text, users), language="alias").strip()
        attachments = self._attachments(event)
        if parsed.kind == "note":
            if cfg.record_notes and (text or attachments):
                await self.ctx.publish(Message(kind="command", name="note", text=text, data={"text": text},
                                               attachments=attachments, **common))
            return
        if not text and not attachments:
            return
        data = {}
        if parsed.data.get("translate"):
            if self.ctx.settings.translation_enabled:
                data["translate"] = True
            else:
                self._notice(channel, thread_ts, "Not translated: translation.provider is not set; sent as written.")
        await self.ctx.publish(Message(kind="agent", text=text, attachments=attachments, data=data, **common))

    async def _take_action(self, body: dict[str, Any], action: dict[str, Any]) -> None:
        """Claim / Resolve / Reopen buttons on the first post."""
        name = str(action.get("action_id", "")).split(":", 1)[-1]
        conversation_id = str(action.get("value") or "")
        user = str((body.get("user") or {}).get("id") or "")
        container = body.get("container") or {}
        channel = str(container.get("channel_id") or (body.get("channel") or {}).get("id") or "")
        message_ts = str(container.get("message_ts") or "")
        if conversation_id and user:
            sender = await self._agent(user)
            data = {"agent": sender.name, "agent_id": user} if name == "claim" else {}
            unique = body.get("trigger_id") or f"{action.get('action_ts', '')}:{user}"
            await self.ctx.publish(Message(
                kind="command", channel=self.name, name=name, conversation_id=conversation_id,
                ref=f"slack:{channel}:{message_ts}" if channel and message_ts else "", data=data,
                sender=sender, dedupe_key=f"slack:action:{unique}", platform_ms=_ts_ms(str(action.get("action_ts")))))

    async def _command_data(self, parsed: commands.Parsed) -> dict[str, Any]:
        data = dict(parsed.data)
        if parsed.name == "assign" and "assignee_id" in data:
            data["assignee"] = (await self._agent(data["assignee_id"])).name
        return data

    async def _mentioned_names(self, text: str) -> dict[str, str]:
        return {uid: (await self._agent(uid)).name for uid in dict.fromkeys(mentioned_users(text))}

    async def _agent(self, user_id: str) -> Sender:
        """Who a Slack user is to the customer: the configured agent name, else their Slack name."""
        cached = self._users.get(user_id)
        if cached is not None:
            return cached
        agents = self.config.agents
        mapped = agents.get(user_id)
        email = display = ""
        by_email = any("@" in key for key in agents)
        if mapped is None or by_email:
            try:
                # bounded: this runs before Slack's ack, and a name is not worth losing the event
                info = await asyncio.wait_for(self.client.users_info(user=user_id), USER_LOOKUP_TIMEOUT_S)
                user = info.get("user") or {}
                profile = user.get("profile") or {}
                email = str(profile.get("email") or "")
                display = str(profile.get("display_name") or profile.get("real_name") or user.get("real_name")
                              or user.get("name") or "")
            except Exception as exc:  # the name is cosmetic: never lose a reply over it
                log.info("users.info failed", extra={"user": user_id, "error": repr(exc)})
                sender = Sender(id=user_id, name=mapped or user_id, is_agent=True)
                return sender
        if mapped is None and email:
            lowered = {k.lower(): v for k, v in agents.items()}
            mapped = lowered.get(email.lower())
        sender = Sender(id=user_id, name=mapped or display or user_id, email=email, is_agent=True)
        if len(self._users) > 10_000:
            self._users.clear()
        self._users[user_id] = sender
        return sender

    async def _contact_command(self, channel: str, thread_ts: str, conversation_id: str, data: dict[str, Any],
                               agent: str) -> None:
        try:
            text, body = await contact_commands.run(self.ctx.contacts, conversation_id, data, agent,
                                                    self.config.command_prefix)
        except Exception:  # Redis away: say so in the thread rather than stay silent
            log.exception("contact command failed", extra={"conversation": conversation_id})
            text, body = blocks.notice("the contact command failed; try again in a moment")
        try:
            await self._post(channel, text, body, thread_ts=thread_ts)
        except SendError as exc:
            log.info("could not answer a contact command", extra={"error": exc.reason})

    def _notice(self, channel: str, thread_ts: str, text: str) -> None:
        """Tell the agents something in the thread, after the event was acknowledged."""
        async def post() -> None:
            line, body = blocks.notice(text)
            try:
                await self._post(channel, line, body, thread_ts=thread_ts)
            except SendError as exc:
                log.info("could not post a notice", extra={"error": exc.reason})

        self._spawn(post())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _ts_ms(ts: str) -> int:
    try:
        return int(float(ts) * 1000)
    except (TypeError, ValueError):
        return 0


