"""The visitor's WebSocket: identity, limits, history, resume, live delivery.

Protocol (JSON text frames, one object each):

- client -> ``{"type": "hello", "token"?, "user_id"?, "user_hash"?, "name"?, "email"?, "language"?}``
  first, within ``limits.hello_timeout_s``; the server answers ``{"type": "welcome",
  "visitor", "token", "history": [item...], "status", "uploads": {max_bytes, types} | null}``.
  A missing, expired or forged token gets a fresh visitor (and an empty history): the client never names a
  conversation, so it can only ever read its own.
- client -> ``{"type": "profile", "name"?, "email"?}``: the pre-chat form. The email is a
  claim: agents see it, marked unconfirmed; it never links the visitor to a contact.
- client -> ``{"type": "message", "cid", "text", "files"?}``: ``files`` are ids of the
  visitor's own uploads (`adapters.widget.uploads`); ``cid`` is the client's own id for
  the message, kept in the browser's offline queue until acknowledged; the server
  publishes with ``dedupe_key = widget:<visitor>:<cid>`` and answers ``{"type": "ack",
  "cid"}``, so a message re-sent after a reconnect is stored once.
- server -> ``{"type": "item", "item": {...}}``: a message of the conversation (the
  visitor's own, from any tab, or a reply), pushed live to every tab of the visitor in
  every bridge process through the fanout.
- server -> ``{"type": "error", "code", "cid"?, "retry_after_ms"?}``: a refused message
  (too long, too fast); the client keeps it queued and retries when told.

Close codes: 1009 frame too big, 1007 invalid UTF-8 or JSON, 1003 binary frame, 1008
identity refused or a flood that ignores ``retry_after_ms``, 1013 too many connections,
1001 server going away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from adapters.widget.config import WidgetConfig
from adapters.widget.identity import VisitorTokens, new_visitor_id, user_visitor_id, verify_user
from adapters.widget.limits import Buckets, Counts
from adapters.widget.metrics import REFUSED, SOCKETS
from adapters.widget.peers import client_ip
from adapters.widget.quotas import Quota
from adapters.widget.uploads import Uploads
from bridge.adapter import AdapterContext
from bridge.errors import RecordUnavailable
from bridge.filelinks import web_url
from bridge.model import Message, Sender
from bridge.untrusted import BadJson, decode_json

log = logging.getLogger("adapters.widget")

CHANNEL = "widget"
TOPIC_VISITORS = "widget"  # fanout topic: {"visitor", "item"} for every tab of a visitor
PUBLISH_CONCURRENCY = 16  # visitor messages stored at once by this process
SEND_TIMEOUT_S = 5.0  # a tab that cannot take a frame this long is dropped, not waited for
_CID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LANG = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")


def dedupe_key(visitor: str, cid: str) -> str:
    return f"{CHANNEL}:{visitor}:{cid}"


def visitor_item(message: Message, visitor: str) -> dict[str, Any] | None:
    """What the visitor sees of one message, or None when it is not for their eyes.

    An agent's words are kept in the transcript once, as the agent's message; the reply
    that carries them to the visitor answers that message (``reply_to``), so both give
    the same item id and a tab never shows them twice.
    """
    if message.kind == "customer":
        prefix = dedupe_key(visitor, "")
        cid = message.dedupe_key[len(prefix):] if message.dedupe_key.startswith(prefix) else ""
        return {"id": message.id, "cid": cid, "from": "visitor", "name": "", "text": message.text,
                "ts": message.created_ms, "attachments": _links(message)}
    if message.kind == "agent" and message.data.get("translate"):
        return None  # sent by the reply that answers it, in the words the visitor got (translated)
    if message.kind == "agent" or (message.kind == "reply" and message.sender and message.sender.is_agent):
        if not message.text.strip() and not message.attachments:
            return None
        item_id = message.reply_to if message.kind == "reply" and message.data.get("agent_channel") else message.id
        return {"id": item_id or message.id, "from": "agent", "name": message.sender.name if message.sender else "",
                "text": message.text, "ts": message.created_ms, "buttons": [], "attachments": _links(message)}
    if message.kind == "reply":
        return {"id": message.id, "from": "bot", "name": "", "text": message.text, "ts": message.created_ms,
                "buttons": [{"label": b.label, "value": b.value} for b in message.buttons],
                "attachments": _links(message)}
    return None


def _links(message: Message) -> list[dict[str, str]]:
    return [{"name": a.name, "url": a.url} for a in message.attachments if web_url(a.url)]


_CLOSE_REASONS: dict[int, str] = {
    WSCloseCode.MESSAGE_TOO_BIG: "frame_too_big",
    WSCloseCode.INVALID_TEXT: "bad_frame",
    WSCloseCode.UNSUPPORTED_DATA: "bad_frame",
    WSCloseCode.POLICY_VIOLATION: "policy",
    WSCloseCode.TRY_AGAIN_LATER: "visitor_connections",
}


class BadFrame(Exception):
    """A frame that breaks the protocol; ``code`` is the close code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def refuse(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    """Close the socket with ``code`` and count why."""
    REFUSED.labels(_CLOSE_REASONS.get(code, "protocol")).inc()
    await ws.close(code=code, message=reason.encode()[:120])


def parse_frame(msg: Any) -> dict[str, Any]:
    """One client frame as a dict, or `BadFrame`."""
    if msg.type == WSMsgType.BINARY:
        raise BadFrame(WSCloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")
    if msg.type == WSMsgType.ERROR:  # aiohttp's reader refused it (too big, invalid UTF-8)
        raise BadFrame(int(getattr(msg.data, "code", WSCloseCode.PROTOCOL_ERROR)), str(msg.data)[:100])
    if msg.type != WSMsgType.TEXT:
        raise BadFrame(WSCloseCode.PROTOCOL_ERROR, "unexpected frame")
    try:
        data = decode_json(msg.data)
    except BadJson as exc:
        raise BadFrame(WSCloseCode.INVALID_TEXT, str(exc)[:100]) from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise BadFrame(WSCloseCode.INVALID_TEXT, "not a JSON object with a type")
    return data


def _clean_str(value: Any, limit: int) -> str:
    return value.strip()[:limit] if isinstance(value, str) else ""


@dataclass
class Visitor:
    id: str
    name: str
    language: str
    ip: str
    #: what the pre-chat form said; unconfirmed, so it is shown to agents and never used
    #: to link the visitor to a contact (that would let anyone read a customer's cases)
    claimed_email: str = ""
    fresh: bool = False  # a new anonymous visitor id was issued for this connection


_EMAIL = re.compile(r"^[^@\s<>\"]{1,64}@[^@\s<>\"]{1,190}\.[A-Za-z]{2,24}$")


def _profile(visitor: Visitor, frame: dict[str, Any]) -> None:
    name = _clean_str(frame.get("name"), 80)
    if name:
        visitor.name = name
    email = _clean_str(frame.get("email"), 254)
    if email and _EMAIL.match(email):
        visitor.claimed_email = email.lower()


class WidgetSockets:
    """Every visitor socket of this process, and the handler that serves them."""

    def __init__(self, config: WidgetConfig, ctx: AdapterContext, tokens: VisitorTokens,
                 identity_secret: bytes | None, origin_allowed: Callable[[web.Request], bool],
                 ensure_listening: Callable[[], Awaitable[None]], uploads: Uploads | None = None) -> None:
        self.config = config
        self.uploads = uploads
        self.limits = config.limits
        self.ctx = ctx
        self.tokens = tokens
        self.identity_secret = identity_secret
        self.origin_allowed = origin_allowed
        self.ensure_listening = ensure_listening
        self.by_visitor: dict[str, set[web.WebSocketResponse]] = {}
        self.per_ip = Counts(self.limits.connections_per_ip)
        self.per_visitor = Counts(self.limits.connections_per_visitor)
        self.visitor_rate = Buckets(self.limits.messages_per_minute / 60.0, self.limits.message_burst)
        self.ip_rate = Buckets(self.limits.ip_messages_per_minute / 60.0, self.limits.ip_message_burst)
        self.new_visitors = Quota(ctx.state, "visitors-ip", self.limits.new_visitors_per_ip_per_hour, 3600)
        self.closing = False
        # A burst of visitors must queue here, not take every Redis connection at once
        # (the client's pool is bounded; an exhausted pool fails every other part too).
        self.publishing = asyncio.Semaphore(PUBLISH_CONCURRENCY)

    # -- delivery (called for every fanout payload this process receives) -------------

    async def deliver(self, visitor: str, item: dict[str, Any]) -> int:
        """Push one item to this process's tabs of ``visitor``; returns how many got it."""
        frame = json.dumps({"type": "item", "item": item})
        sockets = [ws for ws in self.by_visitor.get(visitor, ()) if not ws.closed]
        results = await asyncio.gather(*(self._push(ws, frame) for ws in sockets))
        return sum(results)

    async def _push(self, ws: web.WebSocketResponse, frame: str) -> bool:
        """Send one frame; a tab that does not take it in time is closed (it resyncs on reconnect)."""
        try:
            await asyncio.wait_for(ws.send_str(frame), SEND_TIMEOUT_S)
            return True
        except (ConnectionError, RuntimeError):
            return False
        except TimeoutError:
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
            return False

    async def resync(self) -> None:
        """After the fanout was lost (a Redis restart): each visitor with a tab open here
        gets the conversation's recent items again, so a reply broadcast while nobody
        listened still shows (tabs drop the items they have, by id)."""
        for visitor in list(self.by_visitor):
            try:
                items = (await self._history(visitor))[0]
            except Exception as exc:  # Redis away again: the next resubscription tries again
                log.warning("widget resync stopped", extra={"error": str(exc)})
                return
            for item in items:
                await self.deliver(visitor, item)

    async def broadcast(self, visitor: str, item: dict[str, Any]) -> None:
        """Every tab of ``visitor`` in every bridge process gets ``item``."""
        payload = json.dumps({"visitor": visitor, "item": item}).encode()
        await self.ctx.fanout.broadcast(TOPIC_VISITORS, payload)

    async def close_all(self) -> None:
        self.closing = True
        for sockets in list(self.by_visitor.values()):
            for ws in list(sockets):
                with contextlib.suppress(Exception):
                    await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server restarting")

    # -- the handler ---------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.origin_allowed(request):
            REFUSED.labels("origin").inc()
            return web.Response(status=403, text="origin not allowed (channels.widget.allowed_origins)\n")
        if self.closing:
            return web.Response(status=503, text="shutting down\n")
        ip = client_ip(request, self.config.trust_forwarded_for)
        if not self.per_ip.acquire(ip):
            REFUSED.labels("ip_connections").inc()
            return web.Response(status=429, text="too many connections from this address\n")
        try:
            await self.ensure_listening()
            ws = web.WebSocketResponse(max_msg_size=self.limits.max_frame_bytes, heartbeat=30.0)
            await ws.prepare(request)
            SOCKETS.inc()
            try:
                await self._session(ws, ip)
            finally:
                SOCKETS.dec()
            return ws
        finally:
            self.per_ip.release(ip)

    async def _session(self, ws: web.WebSocketResponse, ip: str) -> None:
        try:
            msg = await asyncio.wait_for(ws.receive(), self.limits.hello_timeout_s)
        except TimeoutError:
            await refuse(ws, WSCloseCode.POLICY_VIOLATION, "no hello")
            return
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            return
        try:
            hello = parse_frame(msg)
        except BadFrame as exc:
            await refuse(ws, exc.code, exc.reason)
            return
        if hello.get("type") != "hello":
            await refuse(ws, WSCloseCode.POLICY_VIOLATION, "hello expected first")
            return
        visitor = self._identify(hello, ip)
        if visitor is None:
            await refuse(ws, WSCloseCode.POLICY_VIOLATION, "identity check failed")
            return
        if visitor.fresh and await self.new_visitors.take(ip):
            await ws.send_str(json.dumps({"type": "error", "code": "too_many_visitors"}))
            await refuse(ws, WSCloseCode.POLICY_VIOLATION, "too many new visitors from this address; try later")
            return
        if not self.per_visitor.acquire(visitor.id):
            await refuse(ws, WSCloseCode.TRY_AGAIN_LATER, "too many open tabs")
            return
        sockets = self.by_visitor.setdefault(visitor.id, set())
        sockets.add(ws)  # registered before history is read: nothing falls in between
        try:
            await ws.send_str(json.dumps(await self._welcome(visitor)))
            await self._receive_loop(ws, visitor)
        finally:
            sockets.discard(ws)
            if not sockets:
                self.by_visitor.pop(visitor.id, None)
            self.per_visitor.release(visitor.id)

    def _identify(self, hello: dict[str, Any], ip: str) -> Visitor | None:
        name = _clean_str(hello.get("name"), 80)
        language = _clean_str(hello.get("language"), 35)
        if not _LANG.match(language):
            language = ""
        user_id = _clean_str(hello.get("user_id"), 200)
        if user_id:
            if self.identity_secret is None:
                return None  # the site thinks it signs users, the bridge has no secret
            if not verify_user(self.identity_secret, user_id, str(hello.get("user_hash") or "")):
                return None
            visitor = Visitor(user_visitor_id(user_id), name, language, ip)
        elif self.config.require_identity:
            return None
        else:
            token = self.tokens.verify(str(hello.get("token") or ""))
            # user:<id> visitors exist only through the site's signature, never from a token alone
            known = token is not None and not token.visitor.startswith("user:")
            visitor = Visitor(token.visitor if token is not None and known else new_visitor_id(), name, language, ip,
                              fresh=not known)
        _profile(visitor, {"email": hello.get("email")})
        return visitor

    async def _history(self, visitor_id: str) -> tuple[list[dict[str, Any]], str]:
        """The visitor's recent items (`limits.history_messages`) and the conversation's status."""
        history: list[dict[str, Any]] = []
        conversation = await self.ctx.conversations.for_address(CHANNEL, visitor_id)
        if conversation is None or not self.limits.history_messages:
            return history, ""
        for message in await self.ctx.conversations.transcript(conversation.id, self.limits.history_messages):
            item = visitor_item(message, visitor_id)
            if item is not None:
                history.append(item)
        return history, conversation.status

    async def _welcome(self, visitor: Visitor) -> dict[str, Any]:
        history: list[dict[str, Any]] = []
        status = ""
        try:
            # a visitor id issued just now has no conversation to look up (in Redis or in the record)
            if not visitor.fresh:
                history, status = await self._history(visitor.id)
        except RecordUnavailable as exc:  # a case closed long ago, its record away: the chat opens without it
            log.warning("widget history not shown", extra={"error": str(exc)})
            history, status = [], ""
        uploads = self.config.uploads
        return {"type": "welcome", "visitor": visitor.id, "token": self.tokens.issue(visitor.id),
                "history": history, "status": status,
                "uploads": {"max_bytes": uploads.max_bytes, "types": uploads.types} if self.uploads else None}

    async def _receive_loop(self, ws: web.WebSocketResponse, visitor: Visitor) -> None:
        rejected_in_row = 0
        async for msg in ws:
            try:
                frame = parse_frame(msg)
            except BadFrame as exc:
                await refuse(ws, exc.code, exc.reason)
                return
            kind = frame["type"]
            if kind == "ping":
                await ws.send_str('{"type":"pong"}')
                continue
            if kind == "profile":  # the pre-chat form
                _profile(visitor, frame)
                continue
            if kind != "message":
                await ws.send_str(json.dumps({"type": "error", "code": "unknown_type"}))
                continue
            refused = await self._on_message(ws, visitor, frame)
            rejected_in_row = rejected_in_row + 1 if refused else 0
            if rejected_in_row >= self.limits.rejected_before_close:
                await refuse(ws, WSCloseCode.POLICY_VIOLATION, "too many messages")
                return

    async def _on_message(self, ws: web.WebSocketResponse, visitor: Visitor, frame: dict[str, Any]) -> bool:
        """Publish one visitor message; True when it was refused for a limit."""
        cid, text, files = frame.get("cid"), frame.get("text"), frame.get("files")
        if not isinstance(cid, str) or not _CID.match(cid):
            await ws.send_str(json.dumps({"type": "error", "code": "bad_cid"}))
            return True
        text = text if isinstance(text, str) else ""
        attachments = []
        if files:
            found = await self.uploads.attachments(visitor.id, files) if self.uploads is not None else None
            if found is None:  # not theirs, expired, or uploads are off
                await ws.send_str(json.dumps({"type": "error", "code": "bad_files", "cid": cid}))
                return True
            attachments = found
        if not text.strip() and not attachments:
            await ws.send_str(json.dumps({"type": "error", "code": "empty", "cid": cid}))
            return True
        if len(text) > self.limits.max_text_chars:
            await ws.send_str(json.dumps({"type": "error", "code": "too_long", "cid": cid,
                                          "max_chars": self.limits.max_text_chars}))
            return True
        wait_s = self.visitor_rate.take(visitor.id)
        if not wait_s:
            wait_s = self.ip_rate.take(visitor.ip)
            if wait_s:
                self.visitor_rate.refund(visitor.id)
        if wait_s:
            await ws.send_str(json.dumps({"type": "error", "code": "slow_down", "cid": cid,
                                          "retry_after_ms": int(wait_s * 1000) + 1}))
            return True
        message = Message(
            kind="customer", channel=CHANNEL, address=visitor.id, dedupe_key=dedupe_key(visitor.id, cid),
            text=text.strip(), sender=Sender(id=visitor.id, name=visitor.name, language=visitor.language),
            attachments=attachments,
        )
        if visitor.claimed_email:
            message.data["claimed_email"] = visitor.claimed_email
        button = frame.get("button")
        if isinstance(button, str) and button:
            message.data["button"] = button[:200]  # the value of a reply's button the visitor chose
        try:
            async with self.publishing:
                stored = await self.ctx.publish(message)
        except Exception:  # Redis down: not acknowledged, the browser keeps it queued
            log.warning("widget publish failed", exc_info=True)
            await ws.send_str(json.dumps({"type": "error", "code": "unavailable", "cid": cid,
                                          "retry_after_ms": 2000}))
            return False
        await ws.send_str(json.dumps({"type": "ack", "cid": cid}))
        if stored:
            item = visitor_item(message, visitor.id)
            if item is not None:
                with contextlib.suppress(Exception):  # other tabs catch up on their next connect
                    async with self.publishing:
                        await self.broadcast(visitor.id, item)
        return False
