"""The HTTP API channel.

In:  ``POST /api/v1/messages`` (a customer message), ``POST /api/v1/conversations/{id}/messages``
     (an agent's reply from another system), ``POST /api/v1/conversations/{id}/actions``
     (resolve, reopen, claim, ...), ``GET /api/v1/conversations/{id}``, and the contact
     endpoints (adapters/api/contacts.py). All need ``Authorization: Bearer <token>``.
Out: replies POSTed as JSON to ``webhook_url``, signed (see signing.py), with the message
     id in ``X-Bridge-Message-Id`` so a receiver can drop a redelivered reply.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Iterable
from typing import Any, ClassVar

import aiohttp
import msgspec
from aiohttp import web

from adapters.api.config import ApiConfig
from adapters.api.contacts import ContactRoutes
from adapters.api.signing import MESSAGE_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from bridge.adapter import Adapter, AdapterContext, Capabilities, Delivered
from bridge.errors import PermanentError, StorageFull, StoreUnavailable, TransientError
from bridge.model import Attachment, Message, Sender
from bridge.untrusted import TooLarge, read_capped

log = logging.getLogger("bridge.api")

ACTIONS = {"claim", "assign", "resolve", "reopen", "urgency", "link", "note", "dispute"}
NO_TOKEN = "missing or wrong token: send 'Authorization: Bearer <token>'"
HISTORY_OFF = "the SQL history is off (history.enabled)"


class IncomingMessage(msgspec.Struct, forbid_unknown_fields=True):
    customer_id: str
    text: str = ""
    message_id: str = ""  # your id for this message: a retry with the same id is not doubled
    name: str = ""
    email: str = ""
    language: str = ""
    attachments: list[Attachment] = []


class IncomingReply(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    agent: str = ""
    message_id: str = ""


class IncomingAction(msgspec.Struct, forbid_unknown_fields=True):
    action: str
    agent: str = ""
    assignee: str = ""
    urgency: str = ""
    email: str = ""
    text: str = ""
    message_id: str = ""
    # dispute: the step to go to ("start", "next" or a step name) and what it records
    step: str = ""
    claim: str = ""
    evidence: str = ""
    resolution: str = ""
    note: str = ""


def dedupe_key(customer_id: str, message_id: str, kind: str = "api") -> str:
    """``<kind>:<length of customer_id>:<customer_id>:<message_id>``: the length prefix
    makes the key injective, so ids containing ``:`` cannot collide across customers (or
    conversations, for agents' replies and actions). Keys stored in the older format
    (``api:<customer_id>:<message_id>``) are simply left to expire."""
    return f"{kind}:{len(customer_id)}:{customer_id}:{message_id}"


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def _unavailable(exc: StoreUnavailable | StorageFull, what: str) -> web.Response:
    """Not stored, or not known to be (Redis down, frozen past redis.publish_timeout_s, short
    of redis.wait_replicas, full): the caller retries; a retry with the same message_id is
    not doubled."""
    log.warning(what, extra={"error": str(exc)})
    return web.json_response({"error": "temporarily unavailable, retry later"}, status=503,
                             headers={"Retry-After": "1"})


class ApiAdapter(Adapter):
    name = "api"
    config_model = ApiConfig
    side = "both"
    capabilities = Capabilities(buttons=True, files=True)  # both go to the webhook as JSON
    config: ApiConfig
    # webhook receivers answer in parallel; a hung one holds a send until webhook_timeout_s
    default_max_in_flight: ClassVar[int] = 128
    default_rate_per_s: ClassVar[float | None] = 200.0  # POSTs to the integrator's server, per second

    def __init__(self, config: ApiConfig, ctx: AdapterContext) -> None:
        super().__init__(config, ctx)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.webhook_timeout_s),
                                              connector=aiohttp.TCPConnector(limit=self.max_in_flight))
        await self.ctx.report_health("ok", "accepting messages" if self.config.webhook_url else
                                     "accepting messages; no webhook_url, replies cannot be delivered")

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def routes(self) -> Iterable[web.AbstractRouteDef]:
        return [
            web.post("/api/v1/messages", self._post_message),
            web.post("/api/v1/conversations/{conversation_id}/messages", self._post_reply),
            web.post("/api/v1/conversations/{conversation_id}/actions", self._post_action),
            web.get("/api/v1/conversations/{conversation_id}", self._get_conversation),
            web.get("/api/v1/conversations", self._find_conversations),
            web.get("/api/v1/contacts/{contact_id}/export", self._export_contact),
            web.post("/api/v1/contacts/{contact_id}/erase", self._erase_contact),
            *ContactRoutes(self.ctx.contacts, self._body, self._authorized, _HttpError).routes(),
        ]

    # -- in ----------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        expected = self.config.token.get_secret_value().encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)

    async def _body(self, request: web.Request, model: type[Any]) -> Any:
        """Authenticate, bound the size, and decode; raise an HTTP error response otherwise."""
        if not self._authorized(request):
            raise _HttpError(_error(401, NO_TOKEN))
        limit = self.config.max_message_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _HttpError(_error(413, f"message too large: {request.content_length} bytes, limit {limit}"))
        try:
            body = await read_capped(request.content, limit)
        except TooLarge:
            raise _HttpError(_error(413, f"message too large: over {limit} bytes, limit {limit}")) from None
        try:
            return msgspec.json.decode(body, type=model)
        except msgspec.ValidationError as exc:
            raise _HttpError(_error(400, f"invalid message: {exc}")) from None
        except msgspec.DecodeError as exc:
            raise _HttpError(_error(400, f"invalid JSON: {exc}")) from None
        except RecursionError:
            raise _HttpError(_error(400, "invalid JSON: nested too deeply")) from None

    async def _publish(self, message: Message) -> web.Response:
        try:
            stored = await self.ctx.publish(message)
        except (StoreUnavailable, StorageFull) as exc:  # not stored: the caller sends it again
            return _unavailable(exc, "publish failed")
        return web.json_response({"id": message.id, "duplicate": not stored,
                                  "conversation_id": message.conversation_id or None}, status=202)

    async def _missing(self, conversation_id: str) -> web.Response | None:
        """404 for an unknown conversation, 503 when Redis cannot tell; None when it exists."""
        try:
            found = await self.ctx.conversations.get(conversation_id)
        except (StoreUnavailable, StorageFull) as exc:
            return _unavailable(exc, "conversation lookup failed")
        return None if found is not None else _error(404, f"no conversation {conversation_id!r}")

    async def _post_message(self, request: web.Request) -> web.Response:
        try:
            body: IncomingMessage = await self._body(request, IncomingMessage)
        except _HttpError as exc:
            return exc.response
        if not body.customer_id.strip():
            return _error(400, "invalid message: customer_id must not be empty")
        if not body.text.strip() and not body.attachments:
            return _error(400, "invalid message: give text or attachments")
        message = Message(kind="customer", channel=self.name, address=body.customer_id, text=body.text,
                          dedupe_key=dedupe_key(body.customer_id, body.message_id) if body.message_id else "",
                          sender=Sender(id=body.customer_id, name=body.name, email=body.email,
                                        language=body.language),
                          attachments=body.attachments)
        return await self._publish(message)

    async def _post_reply(self, request: web.Request) -> web.Response:
        try:
            body: IncomingReply = await self._body(request, IncomingReply)
        except _HttpError as exc:
            return exc.response
        conversation_id = request.match_info["conversation_id"]
        if (missing := await self._missing(conversation_id)) is not None:
            return missing
        key = dedupe_key(conversation_id, body.message_id, "api-agent") if body.message_id else ""
        message = Message(kind="agent", channel=self.name, conversation_id=conversation_id, text=body.text,
                          sender=Sender(name=body.agent or "agent", is_agent=True), dedupe_key=key)
        return await self._publish(message)

    async def _post_action(self, request: web.Request) -> web.Response:
        try:
            body: IncomingAction = await self._body(request, IncomingAction)
        except _HttpError as exc:
            return exc.response
        if body.action not in ACTIONS:
            return _error(400, f"unknown action {body.action!r}; use one of {', '.join(sorted(ACTIONS))}")
        conversation_id = request.match_info["conversation_id"]
        if (missing := await self._missing(conversation_id)) is not None:
            return missing
        data = {k: v for k, v in msgspec.structs.asdict(body).items() if v and k not in ("action", "message_id")}
        key = dedupe_key(conversation_id, body.message_id, "api-action") if body.message_id else ""
        message = Message(kind="command", channel=self.name, name=body.action, conversation_id=conversation_id,
                          text=body.text, data=data, sender=Sender(name=body.agent, is_agent=True), dedupe_key=key)
        return await self._publish(message)

    async def _get_conversation(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, NO_TOKEN)
        conversation_id = request.match_info["conversation_id"]
        conversation = await self.ctx.conversations.get(conversation_id)
        if conversation is None:
            return _error(404, f"no conversation {conversation_id!r}")
        transcript = await self.ctx.conversations.transcript(conversation_id)
        body = {"conversation": msgspec.to_builtins(conversation),
                "transcript": [msgspec.to_builtins(m) for m in transcript]}
        return web.json_response(body)

    # -- the SQL record ------------------------------------------------------------------

    async def _find_conversations(self, request: web.Request) -> web.Response:
        """Conversations from the SQL record: ``contact`` (id, email or channel:address),
        ``q`` (full-text), ``since_ms``/``until_ms`` (created), ``limit``."""
        if not self._authorized(request):
            return _error(401, NO_TOKEN)
        if self.ctx.history is None:
            return _error(503, HISTORY_OFF)
        query = request.query
        try:
            since_ms, until_ms = int(query.get("since_ms", 0)), int(query.get("until_ms", 0))
            limit = min(200, max(1, int(query.get("limit", 50))))
        except ValueError:
            return _error(400, "since_ms, until_ms and limit must be integers")
        hits = await self.ctx.history.conversations(contact=query.get("contact", ""), q=query.get("q", ""),
                                                    since_ms=since_ms, until_ms=until_ms, limit=limit)
        return web.json_response({"conversations": [
            {"conversation": msgspec.to_builtins(hit.conversation),
             "matches": [{"id": m.id, "kind": m.kind, "text": m.text, "created_ms": m.created_ms}
                         for m in hit.matches]} for hit in hits]})

    async def _export_contact(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, NO_TOKEN)
        if self.ctx.privacy is None:
            return _error(503, HISTORY_OFF)
        try:
            return web.json_response(await self.ctx.privacy.export(request.match_info["contact_id"]),
                                     dumps=lambda data: json.dumps(data, ensure_ascii=False, default=_plain))
        except LookupError as exc:
            return _error(404, str(exc))

    async def _erase_contact(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, NO_TOKEN)
        if self.ctx.privacy is None:
            return _error(503, HISTORY_OFF)
        try:
            counts = await self.ctx.privacy.erase(request.match_info["contact_id"], by="api")
        except LookupError as exc:
            return _error(404, str(exc))
        return web.json_response({"erased": counts})

    # -- out ---------------------------------------------------------------------------

    async def send(self, message: Message) -> Delivered:
        if not self.config.webhook_url:
            raise PermanentError("channels.api.webhook_url is not set: nowhere to deliver replies")
        if self._session is None:
            raise TransientError("the API channel is not started")
        payload = {
            "id": message.id,
            "kind": message.kind,
            "name": message.name or None,
            "conversation_id": message.conversation_id,
            "customer_id": message.address,
            "text": message.text,
            "sender": msgspec.to_builtins(message.sender) if message.sender else None,
            "buttons": [msgspec.to_builtins(b) for b in message.buttons],
            "attachments": [msgspec.to_builtins(a) for a in message.attachments],
            "created_ms": message.created_ms,
        }
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp, MESSAGE_ID_HEADER: message.id}
        if self.config.webhook_secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.config.webhook_secret.get_secret_value(), timestamp, body)
        try:
            async with self._session.post(self.config.webhook_url, data=body, headers=headers) as response:
                status = response.status
                text = (await response.text())[:300]
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientError(f"webhook unreachable: {type(exc).__name__}: {exc}") from None
        if 200 <= status < 300:
            return Delivered(platform_id=message.id)
        if status == 429 or status >= 500:
            raise TransientError(f"webhook answered {status}: {text}", retry_after_s=_seconds(retry_after))
        if status == 410:
            raise PermanentError(f"webhook answered 410 Gone: {text}", unreachable=True)
        raise PermanentError(f"webhook answered {status}: {text}")


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class _HttpError(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _plain(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
