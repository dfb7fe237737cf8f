"""The agent console at /agent: login, conversations of every channel, reply, resolve.

Agents log in with a name and password (hashes in config: scrypt or PBKDF2) or with a
shared token; the session is an HMAC-signed, HttpOnly, SameSite=Strict cookie. The page
reads conversations through ``ctx.conversations`` and writes only by publishing messages,
like every other agent side: a reply is ``kind="agent"`` on channel ``console``, resolve
and reopen are commands. Live updates reach open consoles over a WebSocket whenever the
engine announces a changed conversation on the fanout (``conversations`` topic) or sends
an event to the widget channel, and reads everything again when that subscription is
back after a loss (what was announced meanwhile reached nobody); the page also polls as
a fallback.

The list is a work queue (`adapters.widget.queue`: the customer's last words, waiting,
SLA due, order, filters, unread counts) with search (`adapters.widget.search`); the live
socket also carries who views or types in a case (`adapters.widget.presence`), which
round-robin assignment uses to know who is online (`adapters.widget.assign`). Customers
see an agent's display name (``console.profiles``), never the login.

``python -m adapters.widget.console hash-password`` prints a hash for the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import hmac
import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from adapters.widget import queue, search, translations
from adapters.widget.assign import RoundRobin
from adapters.widget.config import ConsoleConfig
from adapters.widget.identity import Signer
from adapters.widget.metrics import CONSOLES
from adapters.widget.peers import origin_of, own_origins
from adapters.widget.presence import Presence
from adapters.widget.quotas import Quota
from bridge.adapter import AdapterContext
from bridge.filelinks import web_url
from bridge.model import Message, Sender, now_ms
from bridge.untrusted import BadJson, TooLarge, decode_json, read_capped

log = logging.getLogger("adapters.widget.console")

COOKIE = "bridge_agent"
REVOKED = "console:revoked:"  # + session id, in the adapter state: sessions ended by a logout
TOPIC_LOGOUT = "console_logout"  # fanout: a session id whose live sockets every process closes
_MAX_BODY_BYTES = 256 * 1024  # a reply is at most 20,000 characters, up to 6 bytes each in JSON
CHANNEL = "console"
STATIC = Path(__file__).parent / "static"
_STATUSES = queue.STATUSES
_TOKEN_AGENT = "agent"  # who a token login is when the agent gives no name
_SEEN_TTL_S = 30 * 86400  # how long an agent's "last opened" mark of a case is kept (unread counts)
_AGENT_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,40}$")
_EMAIL = re.compile(r"^[^@\s<>\"]{1,64}@[^@\s<>\"]{1,190}\.[A-Za-z]{2,24}$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_PBKDF2_ITERATIONS = 600_000
#: (method, path, handler name): the adapter mounts these
ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/agent", "page"),
    ("GET", "/agent/", "page"),
    ("GET", "/agent/console.js", "asset"),
    ("GET", "/agent/console.css", "asset"),
    ("GET", "/agent/translation.js", "asset"),
    ("POST", "/agent/login", "login"),
    ("POST", "/agent/logout", "logout"),
    ("GET", "/agent/api/me", "me"),
    ("GET", "/agent/api/conversations", "list_conversations"),
    ("GET", "/agent/api/conversations/{id}", "conversation"),
    ("POST", "/agent/api/conversations/{id}/reply", "reply"),
    ("POST", "/agent/api/conversations/{id}/{command:resolve|reopen|claim|assign|note|link}", "command"),
    ("GET", "/agent/ws", "live"),
]
_LIST_CACHE_S = 3.0  # longest a list is reused when no change was announced
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# -- passwords ---------------------------------------------------------------------------

def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, hashed: str) -> bool:
    """Constant-time check against an ``scrypt$n$r$p$salt$hash`` or
    ``pbkdf2_sha256$iterations$salt$hash`` string."""
    parts = hashed.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            salt, expected = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
            digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(expected),
                                    maxmem=256 * 1024 * 1024)
        elif parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            salt, expected = bytes.fromhex(parts[2]), bytes.fromhex(parts[3])
            digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(parts[1]), dklen=len(expected))
        else:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(digest, expected)


_DUMMY_HASH = hash_password(secrets.token_hex(8))  # unknown names cost as much as known ones


def transcript_item(message: Message) -> dict[str, Any] | None:
    """What an agent sees of one transcript entry."""
    sender = message.sender
    if message.kind == "customer":
        who = "customer"
    elif message.kind == "reply":
        who = "agent" if sender and sender.is_agent else "bot"
    elif message.kind == "agent":
        who = "agent"
    elif message.kind == "command" and message.name == "note":
        who = "note"
    elif message.kind in ("command", "event"):
        who = "system"
    else:
        return None
    return {
        "id": message.id, "kind": message.kind, "who": who, "name": (sender.name if sender else ""),
        "text": message.text, "event": message.name, "channel": message.channel, "ts": message.created_ms,
        "status": str(message.data.get("status", "")) if message.kind == "event" else "",
        "attachments": [{"name": a.name, "mime": a.mime, "size": a.size, "url": web_url(a.url)}
                        for a in message.attachments],
    }


class Console:
    """Routes and live updates of the agent console."""

    def __init__(self, config: ConsoleConfig, ctx: AdapterContext, signer: Signer, token: str | None,
                 *, secure_cookie: bool, ensure_listening: Callable[[], Awaitable[None]],
                 ip_of: Callable[[web.Request], str],
                 refused_origins: Callable[[], list[str]] = list) -> None:
        self.config = config
        self.refused_origins = refused_origins  # sites whose widget the origin check refused
        self.ctx = ctx
        self.signer = signer
        self.token = token
        self.secure_cookie = secure_cookie
        self.ensure_listening = ensure_listening
        self.ip_of = ip_of
        self.sockets: dict[web.WebSocketResponse, str] = {}  # live console -> its session id
        window_s = config.login_window_min * 60
        self.failures_ip_name = Quota(ctx.state, "login-ip-name", config.login_failures_per_ip_and_name, window_s)
        self.failures_ip = Quota(ctx.state, "login-ip", config.login_failures_per_ip, window_s)
        self.failures_all = Quota(ctx.state, "login", config.login_failures_total, window_s)
        self._lists: dict[str, tuple[float, list[dict[str, Any]]]] = {}  # status -> (at monotonic s, rows)
        self.presence = Presence(ctx.state, ctx.fanout, config.presence_ttl_s)
        self.round_robin = RoundRobin(ctx, self.presence, CHANNEL)
        self.viewing: dict[web.WebSocketResponse, tuple[str, str]] = {}  # live console -> (agent, case open)
        self._last_frame: dict[web.WebSocketResponse, tuple[str, bool, int]] = {}
        for login in config.agents:
            if login not in config.profiles:
                log.warning("channels.widget.console.profiles.%s is not set: customers see %r on that agent's "
                            "replies", login, config.default_display_name)

    # -- who agents are ------------------------------------------------------------------

    def display_name(self, login: str) -> str:
        """What customers see: the profile's display name; never a password login's id (a
        token login's typed name is the name the agent chose to show)."""
        profile = self.config.profiles.get(login)
        if profile is not None:
            return profile.display_name
        if login in self.config.agents or login == _TOKEN_AGENT:
            return self.config.default_display_name
        return login

    def initials(self, login: str) -> str:
        profile = self.config.profiles.get(login)
        if profile is not None and profile.initials:
            return profile.initials
        parts = (profile.display_name if profile else login).split()
        return "".join(p[0] for p in parts[:2]).upper() or "?"

    def _sender(self, login: str) -> Sender:
        return Sender(id=f"{CHANNEL}:{login}", name=self.display_name(login), is_agent=True)

    async def agents(self) -> list[dict[str, Any]]:
        """Every agent one can assign a case to: configured ones and whoever is online."""
        online = set(await self.presence.online_agents())
        logins = sorted({*self.config.agents, *self.config.profiles, *online})
        return [{"login": a, "name": self.display_name(a), "initials": self.initials(a), "online": a in online}
                for a in logins]

    # -- sessions ----------------------------------------------------------------------

    def _session(self, request: web.Request) -> tuple[str, str] | None:
        """(agent name, session id) of a signed, unexpired session cookie."""
        data = self.signer.verify(request.cookies.get(COOKIE, ""), self.config.session_hours * 3600)
        name, sid = (data.get("a"), data.get("s")) if data else (None, None)
        if not isinstance(name, str) or not name or not isinstance(sid, str) or not sid:
            return None
        return name, sid

    async def agent(self, request: web.Request) -> str | None:
        """The logged-in agent: a valid cookie whose session was not ended by a logout (in
        any process: ended sessions are kept in Redis until the cookie would expire)."""
        session = self._session(request)
        if session is None or await self.ctx.state.get(REVOKED + session[1]) is not None:
            return None
        return session[0]

    async def _require(self, request: web.Request, *, write: bool = False) -> str:
        agent = await self.agent(request)
        if agent is None:
            raise web.HTTPUnauthorized(text=json.dumps({"error": "log in first"}), content_type="application/json")
        if write:
            # SameSite=Strict already keeps the cookie off cross-site requests; this also
            # refuses a same-site page on another origin and simple (form) posts.
            if not self._own_origin(request):
                raise web.HTTPForbidden(text=json.dumps({"error": "bad origin"}), content_type="application/json")
            if request.content_type != "application/json":
                raise web.HTTPUnsupportedMediaType(text=json.dumps({"error": "send JSON"}),
                                                   content_type="application/json")
        return agent

    def _own_origin(self, request: web.Request) -> bool:
        """No Origin (not a browser's cross-origin call), or the bridge's own (never the Host header)."""
        return "Origin" not in request.headers or origin_of(request) in own_origins(self.ctx.public_url)

    async def _check_login(self, body: dict[str, Any]) -> str | None:
        token = body.get("token")
        if isinstance(token, str) and token:
            if self.token and hmac.compare_digest(token.encode(), self.token.encode()):
                name = body.get("name")
                # a shared token names no one: the agent says who they are (shown to customers)
                return name.strip() if isinstance(name, str) and _AGENT_NAME.match(name.strip()) else "agent"
            return None
        name, password = body.get("name"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not name or len(password) > 1024:
            return None
        hashed = self.config.agents.get(name)
        ok = await asyncio.to_thread(verify_password, password, hashed or _DUMMY_HASH)
        return name if ok and hashed else None

    async def login(self, request: web.Request) -> web.Response:
        """Failed logins are counted in Redis (every process): per (address, name), so one
        guesser behind a shared proxy locks out only that name from that address; per
        address; and for everyone together, a ceiling on guessing from many addresses."""
        try:
            body = decode_json(await read_capped(request.content, _MAX_BODY_BYTES))
        except (BadJson, TooLarge):
            body = None
        if not isinstance(body, dict):
            return web.json_response({"error": "send JSON: {name, password} or {token}"}, status=400)
        ip = self.ip_of(request)
        name = "(token)" if body.get("token") else str(body.get("name"))[:80]
        pair = f"{ip}|{name}"
        for quota, key in ((self.failures_ip_name, pair), (self.failures_ip, ip), (self.failures_all, "")):
            wait_s = await quota.over(key)
            if wait_s:
                return web.json_response({"error": f"too many failed logins; try again in {int(wait_s) + 1} s"},
                                         status=429, headers={"Retry-After": str(int(wait_s) + 1)})
        agent = await self._check_login(body)
        if agent is None:
            for quota, key in ((self.failures_ip_name, pair), (self.failures_ip, ip), (self.failures_all, "")):
                await quota.add(key)
            return web.json_response({"error": "wrong name, password or token"}, status=401)
        response = web.json_response(self._me(agent))
        session = {"a": agent, "s": secrets.token_urlsafe(12), "iat": int(time.time())}
        response.set_cookie(COOKIE, self.signer.sign(session),
                            max_age=int(self.config.session_hours * 3600), path="/agent", httponly=True,
                            samesite="Strict", secure=self.secure_cookie)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        """End the session for good: a copy of the cookie (another tab, a stolen one) no
        longer works, and the session's live sockets close in every process (fanout)."""
        session = self._session(request)
        if session is not None:
            await self.ctx.state.set(REVOKED + session[1], "1", ttl_s=int(self.config.session_hours * 3600) + 60)
            await self.close_session(session[1])
            with contextlib.suppress(Exception):  # the revocation above already holds; this is quicker
                await self.ctx.fanout.broadcast(TOPIC_LOGOUT, session[1].encode())
        response = web.json_response({})
        response.del_cookie(COOKIE, path="/agent")
        return response

    # -- pages -------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "console.html", headers=_SECURITY_HEADERS)

    async def asset(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / request.path.rsplit("/", 1)[1], headers=_SECURITY_HEADERS)

    # -- API ---------------------------------------------------------------------------

    async def me(self, request: web.Request) -> web.Response:
        agent = await self.agent(request)
        if agent is None:
            return web.json_response({"agent": None, "password_login": bool(self.config.agents)}, status=401)
        return web.json_response(self._me(agent))

    def _me(self, agent: str) -> dict[str, Any]:
        return {"agent": agent, "poll_interval_s": self.config.poll_interval_s,
                "refused_origins": self.refused_origins(),
                "display_name": self.display_name(agent), "initials": self.initials(agent),
                "presence_ttl_s": self.config.presence_ttl_s,
                "canned_replies": {language: [r.model_dump() for r in replies]
                                   for language, replies in self.config.canned_replies.items()},
                "translation": translations.me(self.ctx.settings, agent)}

    async def list_conversations(self, request: web.Request) -> web.Response:
        """The work queue: ``status`` (active, open, pending, resolved, all), the filters
        ``queue``, ``channel``, ``agent`` (a login, or ``-`` for unassigned) and
        ``language``, and ``q``: full-text search (`adapters.widget.search`)."""
        agent = await self._require(request)
        status = request.query.get("status", "active")
        if status not in (*_STATUSES, "active", "all"):
            return web.json_response({"error": "status is one of active, open, pending, resolved, all"}, status=400)
        filters = {name: request.query.get(name, "")[:100] for name in queue.FILTERS}
        query = request.query.get("q", "").strip()
        note = ""
        if query:
            rows, note = await self._search_rows(query, status)
        else:
            cached = self._lists.get(status)
            if cached is None or time.monotonic() - cached[0] > _LIST_CACHE_S:
                cached = (time.monotonic(), await self._rows(status))
                self._lists[status] = cached
            rows = cached[1]
        shown = [r for r in rows if queue.matches(r, filters)]
        seen = await self.ctx.state.counts([f"seen:{agent}:{r['id']}" for r in shown])
        return web.json_response({
            "conversations": [queue.public(r, s) for r, s in zip(shown, seen, strict=True)],
            "facets": queue.facets(rows, list(self.ctx.settings.queues)),
            "agents": await self.agents(), "now_ms": now_ms(), "note": note})

    async def _rows(self, status: str) -> list[dict[str, Any]]:
        """The list one status shows. Every open console asks after each change; the rows
        are kept until the next change (or a few seconds), so a busy desk costs one read."""
        if status == "active":  # everything not resolved: waiting for us, or for the customer
            conversations = [c for s in ("open", "pending") for c in await self.ctx.conversations.list(s, limit=200)]
        else:
            conversations = await self.ctx.conversations.list(None if status == "all" else status, limit=200)
        return await self._build(conversations)

    async def _build(self, conversations: list[Any]) -> list[dict[str, Any]]:
        contacts = await asyncio.gather(*(self.ctx.conversations.contact(c.contact_id) if c.contact_id
                                          else _none() for c in conversations))
        tails = await asyncio.gather(*(self.ctx.conversations.transcript(c.id, queue.TAIL) for c in conversations))
        rows = [queue.row(c, contact, tail) for c, contact, tail in zip(conversations, contacts, tails, strict=True)]
        rows.sort(key=queue.sort_key)
        return rows

    async def _search_rows(self, query: str, status: str) -> tuple[list[dict[str, Any]], str]:
        """The rows the search found, and a note for the agent when it could not be whole."""
        wanted = {"active": ("open", "pending"), "all": _STATUSES}.get(status, (status,))
        found, note = await search.find(self.ctx.conversations, query, history=self.ctx.history)
        hits = [h for h in found if h.conversation.status in wanted]
        # the live state (the store reads a case only the record holds, closed long ago, from it)
        current = await asyncio.gather(*(self.ctx.conversations.get(h.conversation.id) for h in hits))
        rows = await self._build([now or h.conversation for h, now in zip(hits, current, strict=True)])
        snippets = {h.conversation.id: h.snippet for h in hits}
        for r in rows:
            r["snippet"] = snippets.get(r["id"], "")
        return rows, note

    async def conversation(self, request: web.Request) -> web.Response:
        """One case and its transcript; opening it marks it read for this agent."""
        agent = await self._require(request)
        conversation = await self.ctx.conversations.get(request.match_info["id"])
        if conversation is None:
            return web.json_response({"error": "no such conversation"}, status=404)
        contact = await self.ctx.conversations.contact(conversation.contact_id) if conversation.contact_id else None
        messages = await self.ctx.conversations.transcript(conversation.id, 500)
        items = [i for m in messages if (i := transcript_item(m)) is not None]
        items = translations.attach(messages, items, translations.agent_language(self.ctx.settings, agent))
        await self.ctx.state.set(f"seen:{agent}:{conversation.id}", str(now_ms()), ttl_s=_SEEN_TTL_S)
        summary = queue.public(queue.row(conversation, contact, messages[-queue.TAIL:]), now_ms())
        claims = [str(m.data["claimed_email"]) for m in messages
                  if m.kind == "customer" and m.data.get("claimed_email")]
        summary["claimed_email"] = claims[-1] if claims else ""
        summary["customer"] = contact.name if contact else ""
        summary["email"] = contact.email if contact else ""
        return web.json_response({"conversation": summary, "transcript": items})

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = decode_json(await read_capped(request.content, _MAX_BODY_BYTES))
        except TooLarge:
            raise web.HTTPRequestEntityTooLarge(_MAX_BODY_BYTES, request.content_length or 0, text=json.dumps(
                {"error": f"over {_MAX_BODY_BYTES} bytes"}), content_type="application/json") from None
        except BadJson:
            body = None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text=json.dumps({"error": "send a JSON object"}), content_type="application/json")
        return body

    async def reply(self, request: web.Request) -> web.Response:
        agent = await self._require(request, write=True)
        body = await self._body(request)
        conversation = await self.ctx.conversations.get(request.match_info["id"])
        if conversation is None:
            return web.json_response({"error": "no such conversation"}, status=404)
        text, client_id = body.get("text"), body.get("client_id")
        if not isinstance(text, str) or not text.strip() or len(text) > 20_000:
            return web.json_response({"error": "text: 1 to 20000 characters"}, status=400)
        if not isinstance(client_id, str) or not _CLIENT_ID.match(client_id):
            client_id = secrets.token_hex(8)
        # "send in <the customer's language>": the translation step sends it translated
        wanted = body.get("translate") is True and self.ctx.settings.translation_enabled
        data: dict[str, Any] = {"agent": agent, "translate": True} if wanted else {"agent": agent}
        message = Message(kind="agent", channel=CHANNEL, conversation_id=conversation.id, text=text.strip(),
                          dedupe_key=f"{CHANNEL}:{client_id}", data=data, sender=self._sender(agent))
        stored = await self.ctx.publish(message)
        return web.json_response({"id": message.id, "stored": stored})

    async def command(self, request: web.Request) -> web.Response:
        """resolve, reopen, claim (assign to me), assign (to ``assignee``, an agent's login),
        note (internal: never sent to the customer), link (the agent confirmed the
        customer's email: join the contact that has it)."""
        agent = await self._require(request, write=True)
        body = await self._body(request)
        conversation = await self.ctx.conversations.get(request.match_info["id"])
        if conversation is None:
            return web.json_response({"error": "no such conversation"}, status=404)
        name = request.match_info["command"]
        text = ""
        if name == "note":
            given = body.get("text")
            text = given if isinstance(given, str) else ""
            if not text.strip() or len(text) > 20_000:
                return web.json_response({"error": "text: 1 to 20000 characters"}, status=400)
        data: dict[str, Any] = {"agent": agent}
        if name == "link":
            email = body.get("email")
            if not isinstance(email, str) or not _EMAIL.match(email.strip()):
                return web.json_response({"error": "email: an address like ann@example.com"}, status=400)
            data["email"] = email.strip().lower()
        if name == "assign":
            assignee = body.get("assignee")
            known = {a["login"] for a in await self.agents()}
            if not isinstance(assignee, str) or assignee not in known:
                return web.json_response({"error": "assignee: the login of a configured or online agent"},
                                         status=400)
            data["assignee"] = assignee
        message = Message(kind="command", channel=CHANNEL, conversation_id=conversation.id, name=name,
                          text=text.strip(), data=data, sender=self._sender(agent))
        await self.ctx.publish(message)
        return web.json_response({"id": message.id})

    # -- live updates ------------------------------------------------------------------

    async def live(self, request: web.Request) -> web.StreamResponse:
        """Nudges out (``changed``, ``presence``); the page's presence in (``view`` a case,
        with ``typing``; renewed while the page is open, so a closed one expires)."""
        agent = await self._require(request)
        if not self._own_origin(request):
            return web.Response(status=403, text="origin not allowed\n")
        await self.ensure_listening()
        ws = web.WebSocketResponse(max_msg_size=1024, heartbeat=30.0)
        await ws.prepare(request)
        session = self._session(request)
        sid = session[1] if session else ""
        self.sockets[ws] = sid
        self.viewing[ws] = (agent, "")
        CONSOLES.inc()
        renew_s = min(self.config.poll_interval_s, self.config.presence_ttl_s / 3)
        try:
            await self._came_online(agent)
            while not ws.closed:
                try:
                    msg = await ws.receive(timeout=renew_s)
                except TimeoutError:
                    # the logout's fanout is at-most-once: the revocation in Redis is the record
                    if await self.ctx.state.get(REVOKED + sid) is not None:
                        await ws.close()
                    await self.presence.online(agent)
                    continue
                if msg.type != WSMsgType.TEXT:
                    break
                await self._frame(ws, agent, msg.data)
        finally:
            self.sockets.pop(ws, None)
            CONSOLES.dec()
            await self._went_away(ws, agent)
        return ws

    async def _came_online(self, agent: str) -> None:
        await self.presence.online(agent)
        with contextlib.suppress(Exception):  # best effort: the next change offers the cases again
            await self.round_robin.sweep()

    async def _went_away(self, ws: web.WebSocketResponse, agent: str) -> None:
        self._last_frame.pop(ws, None)
        _, case = self.viewing.pop(ws, (agent, ""))
        with contextlib.suppress(Exception):  # the marks expire by themselves
            if case and (agent, case) not in self.viewing.values():
                await self.presence.leave(agent, case)
            if all(a != agent for a, _ in self.viewing.values()):
                await self.presence.offline(agent)

    async def _frame(self, ws: web.WebSocketResponse, agent: str, raw: str) -> None:
        """``{"type": "view", "conversation_id": id | "", "typing": bool}``."""
        try:
            frame = decode_json(raw)
        except BadJson:
            return
        if not isinstance(frame, dict) or frame.get("type") != "view":
            return
        case = frame.get("conversation_id")
        case = case if isinstance(case, str) and len(case) <= 100 else ""
        typing = frame.get("typing") is True
        repeat = (case, typing, int(time.monotonic()))  # the same news twice in a second is said once
        if self._last_frame.get(ws) == repeat:
            return
        self._last_frame[ws] = repeat
        await self.presence.online(agent)
        _, before = self.viewing.get(ws, (agent, ""))
        self.viewing[ws] = (agent, case)
        if before and before != case and (agent, before) not in self.viewing.values():
            await self.presence.leave(agent, before)
        if case:
            await self.presence.view(agent, case, typing=typing)

    async def close_session(self, session_id: str) -> None:
        """Close this process's live sockets of a session that was logged out."""
        for ws, sid in list(self.sockets.items()):
            if sid == session_id:
                with contextlib.suppress(Exception):
                    await ws.close()

    async def changed(self, conversation_id: str) -> None:
        """Tell every open console of this process that a conversation changed (the engine
        names several at once, separated by spaces); offer new cases to round-robin."""
        self._lists.clear()
        await self._send_all({"type": "changed", "conversation_id": conversation_id})
        with contextlib.suppress(Exception):  # best effort: the next change offers the case again
            await self.round_robin.consider(conversation_id.split())

    async def resync(self) -> None:
        """The fanout was away (Redis restarting): what changed meanwhile was announced to
        nobody. Every open console reads its list and case again, as on a change."""
        self._lists.clear()
        await self._send_all({"type": "resync"})

    async def presence_changed(self, conversation_id: str) -> None:
        """Tell every open console of this process who views the case now."""
        if self.sockets:
            viewers = [{**v, "name": self.display_name(v["agent"]), "initials": self.initials(v["agent"])}
                       for v in await self.presence.of(conversation_id)]
            await self._send_all({"type": "presence", "conversation_id": conversation_id, "viewers": viewers})

    async def _send_all(self, data: dict[str, Any]) -> None:
        frame = json.dumps(data)
        for ws in list(self.sockets):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(frame)

    async def close_all(self) -> None:
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close()


async def _none() -> None:
    return None


def main(argv: list[str]) -> int:
    if argv[:1] != ["hash-password"]:
        print("usage: python -m adapters.widget.console hash-password", file=sys.stderr)
        return 2
    password = getpass.getpass("password: ")
    if password != getpass.getpass("again: "):
        print("the two passwords differ", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
