"""The widget channel: chat bubble for websites (customers) and agent console (agents).

One adapter serves both sides on the bridge's web server:

- ``GET /widget.js`` (the embeddable script), ``GET /widget/ws`` (visitor WebSocket, see
  `adapters.widget.ws`), and a demo shop page at ``/`` unless ``demo_page: false``;
- ``/agent``: the agent console (`adapters.widget.console`).

``send()`` takes the engine's replies for a visitor and broadcasts them on the fanout;
every bridge process pushes them to the visitor's tabs it holds, so a reply reaches a
socket held by another process. The reply is also in the conversation's transcript, so a
tab that was offline gets it with the history when it reconnects. Events (when
``widget`` is listed in ``agents.channels``) just nudge the open consoles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from aiohttp import web

from adapters.widget.config import WidgetConfig
from adapters.widget.console import ROUTES as CONSOLE_ROUTES
from adapters.widget.console import TOPIC_LOGOUT, Console
from adapters.widget.contacts_console import ROUTES as CONTACT_ROUTES
from adapters.widget.contacts_console import ContactPanel
from adapters.widget.identity import Signer, VisitorTokens, derive_console_token
from adapters.widget.peers import RefusedOrigins, client_ip, origin_of, own_origins
from adapters.widget.presence import TOPIC as TOPIC_PRESENCE
from adapters.widget.uploads import Uploads
from adapters.widget.ws import TOPIC_VISITORS, WidgetSockets, visitor_item
from bridge import logs
from bridge.adapter import Adapter, AdapterContext, Capabilities, ChannelConfig, Delivered, HealthState
from bridge.embedded import local_secret
from bridge.errors import PermanentError, TransientError
from bridge.model import Message

log = logging.getLogger("adapters.widget")

STATIC = Path(__file__).parent / "static"
TOPIC_CONVERSATIONS = "conversations"  # the engine announces each changed conversation id here
TOPIC_CONSOLE = "console"  # events sent to this channel, for consoles in every process


class WidgetAdapter(Adapter):
    name: ClassVar[str] = "widget"
    config_model: ClassVar[type[ChannelConfig]] = WidgetConfig
    side: ClassVar[Any] = "both"
    capabilities = Capabilities(buttons=True, files=True)
    default_rate_per_s: ClassVar[float] = 1000.0
    default_max_in_flight: ClassVar[int] = 256  # sends are writes to local sockets

    def __init__(self, config: ChannelConfig, ctx: AdapterContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, WidgetConfig)
        self.cfg: WidgetConfig = config
        self._lock = asyncio.Lock()
        self._sockets: WidgetSockets | None = None
        self._console: Console | None = None
        self._contact_panel: ContactPanel | None = None
        self._listeners: list[asyncio.Task[None]] = []
        self.generated_console_token: str | None = None
        self._uploads: Uploads | None = None
        self._refused = RefusedOrigins()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self._ready()
        await self._ensure_listening()
        url = self.ctx.public_url.rstrip("/")
        if self.cfg.demo_page:
            log.info("widget demo page: %s/", url)
        if self.cfg.console.enabled and self.generated_console_token:
            # A generated dev credential, shown once so a new user can log in: the
            # fragment never reaches a server log.
            print(f"agent console: {url}/agent#token={self.generated_console_token}", file=sys.stderr, flush=True)

    async def close_connections(self) -> None:
        if self._sockets is not None:
            await self._sockets.close_all()
        if self._console is not None:
            await self._console.close_all()

    async def stop(self) -> None:
        for task in self._listeners:
            task.cancel()
        for task in self._listeners:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._listeners.clear()
        await self.close_connections()

    async def _ready(self) -> tuple[WidgetSockets, Console]:
        """Build what needs the shared secrets (kept in Redis when not configured)."""
        if self._sockets is not None and self._console is not None:
            return self._sockets, self._console
        async with self._lock:
            if self._sockets is None or self._console is None:
                secret = await self._shared_secret("secret", self.cfg.secret.get_secret_value()
                                                   if self.cfg.secret else None)
                identity = self.cfg.identity_secret.get_secret_value().encode() if self.cfg.identity_secret else None
                tokens = VisitorTokens(secret.encode(), max_age_s=self.cfg.token_days * 86400.0)
                console_token = self.cfg.console.token.get_secret_value() if self.cfg.console.token else None
                if console_token is None and not self.cfg.console.agents:
                    # derived from the secret: every process knows it, nothing more is stored
                    console_token = derive_console_token(secret)
                    self.generated_console_token = console_token
                    logs.add_secret(console_token)
                    await self.ctx.state.delete("console_token")  # kept in clear by older versions
                self._uploads = Uploads(self.cfg, self.ctx, tokens, secret.encode(), self._origin_allowed) \
                    if self.cfg.uploads.enabled else None
                self._sockets = WidgetSockets(self.cfg, self.ctx, tokens, identity, self._origin_allowed,
                                              self._ensure_listening, self._uploads)
                self._console = Console(self.cfg.console, self.ctx, Signer(secret.encode(), "console-session"),
                                        console_token, secure_cookie=self.ctx.public_url.startswith("https:"),
                                        ensure_listening=self._ensure_listening,
                                        ip_of=lambda r: client_ip(r, self.cfg.trust_forwarded_for),
                                        refused_origins=self._refused.recent)
                self._contact_panel = ContactPanel(self._console)
        return self._sockets, self._console

    async def _shared_secret(self, key: str, configured: str | None) -> str:
        """The configured secret, else one generated once: in a 0600 file of the embedded
        Redis's data directory (never in Redis), or, with an external Redis, in Redis so
        that every process shares it (a warning says to configure one)."""
        if configured:
            return configured
        if self.ctx.private_dir is not None:
            legacy = await self.ctx.state.get(key)  # kept in clear in Redis by older versions
            value = await asyncio.to_thread(local_secret, self.ctx.private_dir, f"widget-{key}", legacy)
            if legacy is not None:
                await self.ctx.state.delete(key)
        else:
            log.warning("channels.widget.secret is not set: a generated one is kept in Redis for every process "
                        "to share; set it (${WIDGET_SECRET}) to keep it out of Redis")
            await self.ctx.state.set_if_absent(key, secrets.token_urlsafe(32))
            stored = await self.ctx.state.get(key)
            assert stored is not None
            value = stored
        logs.add_secret(value)
        return value

    # -- fanout listeners ------------------------------------------------------------------

    async def _ensure_listening(self) -> None:
        if self._listeners:
            return
        self._listeners = [
            asyncio.create_task(self._listen(TOPIC_VISITORS, self._on_visitor_item, self._resync_visitors)),
            asyncio.create_task(self._listen(TOPIC_CONVERSATIONS, self._on_conversation, self._resync_consoles)),
            asyncio.create_task(self._listen(TOPIC_CONSOLE, self._on_conversation, self._resync_consoles)),
            asyncio.create_task(self._listen(TOPIC_LOGOUT, self._on_logout)),
            asyncio.create_task(self._listen(TOPIC_PRESENCE, self._on_presence)),
        ]

    async def _listen(self, topic: str, handle: Callable[[bytes], Awaitable[None]],
                      resync: Callable[[], Awaitable[None]] | None = None) -> None:
        """Follow one fanout topic for the adapter's life; resubscribe after failures.
        ``resync`` runs each time the subscription is back after a loss (a Redis restart):
        what was broadcast meanwhile never came, and is read from where it is kept."""
        delay_s = 0.2
        subscribed_before = False

        async def subscribed() -> None:
            nonlocal subscribed_before
            if subscribed_before and resync is not None:
                await resync()
            subscribed_before = True

        while True:
            try:
                async for payload in self.ctx.fanout.subscribe(topic, subscribed):
                    delay_s = 0.2
                    try:
                        await handle(payload)
                    except Exception:
                        log.warning("bad fanout payload on %s", topic, exc_info=True)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("fanout %s lost; resubscribing in %.1fs", topic, delay_s, exc_info=True)
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 5.0)

    async def _on_visitor_item(self, payload: bytes) -> None:
        data = json.loads(payload)
        if self._sockets is not None:
            await self._sockets.deliver(str(data["visitor"]), data["item"])

    async def _resync_visitors(self) -> None:
        if self._sockets is not None:
            await self._sockets.resync()

    async def _resync_consoles(self) -> None:
        if self._console is not None:
            await self._console.resync()

    async def _on_conversation(self, payload: bytes) -> None:
        if self._console is not None:
            await self._console.changed(payload.decode(errors="replace")[:200])

    async def _on_presence(self, payload: bytes) -> None:
        if self._console is not None:
            await self._console.presence_changed(payload.decode(errors="replace")[:200])

    async def _on_logout(self, payload: bytes) -> None:
        if self._console is not None:
            await self._console.close_session(payload.decode(errors="replace")[:100])

    # -- HTTP ------------------------------------------------------------------------------

    def _origin_allowed(self, request: web.Request) -> bool:
        """The page's origin is ours (``http.public_url``) or listed in ``allowed_origins``;
        the request's Host header is never taken for ours."""
        origin = origin_of(request)
        if not origin:
            return False
        allowed = self.cfg.allowed_origins
        if "*" in allowed or origin in allowed or origin in own_origins(self.ctx.public_url):
            return True
        self._refused.note(origin)
        return False

    def routes(self) -> Iterable[web.AbstractRouteDef]:
        routes: list[web.AbstractRouteDef] = [
            web.get("/widget.js", self._widget_js),
            web.get("/widget/ws", self._widget_ws),
        ]
        if self.cfg.demo_page:
            routes.append(web.get("/", self._demo))
        if self.cfg.uploads.enabled:
            routes += [web.options("/widget/upload", self._delegate("_uploads", "preflight")),
                       web.post("/widget/upload", self._delegate("_uploads", "upload")),
                       web.get("/widget/files/{id}", self._delegate("_uploads", "serve"))]
        if self.cfg.console.enabled:
            for method, path, handler in CONSOLE_ROUTES:
                routes.append(web.route(method, path, self._delegate("_console", handler)))
            for method, path, handler in CONTACT_ROUTES:
                routes.append(web.route(method, path, self._delegate("_contact_panel", handler)))
        return routes

    def _delegate(self, part: str, name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A route to ``self.<part>.<name>``, built on the first request (it needs the
        shared secrets from Redis)."""
        async def handler(request: web.Request) -> web.StreamResponse:
            await self._ready()
            method: Callable[[web.Request], Awaitable[web.StreamResponse]] = getattr(getattr(self, part), name)
            return await method(request)

        handler.__name__ = name
        return handler

    async def _widget_ws(self, request: web.Request) -> web.StreamResponse:
        sockets, _ = await self._ready()
        return await sockets.handle(request)

    async def _widget_js(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "widget.js", headers={
            "Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff",
            "Content-Type": "text/javascript; charset=utf-8"})

    async def _demo(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "demo.html", headers={
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                       "connect-src 'self'; img-src 'self' data:; base-uri 'none'",
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})

    # -- sending ---------------------------------------------------------------------------

    async def send(self, message: Message) -> Delivered:
        if message.kind == "reply":
            item = visitor_item(message, message.address)
            if not message.address or item is None:
                raise PermanentError("a widget reply needs the visitor id as its address")
            payload = json.dumps({"visitor": message.address, "item": item}).encode()
            topic = TOPIC_VISITORS
        elif message.kind == "event":
            summary = message.data.get("conversation")
            conversation_id = message.conversation_id or (summary.get("id", "") if isinstance(summary, dict) else "")
            payload = str(conversation_id).encode()
            topic = TOPIC_CONSOLE
        else:
            raise PermanentError(f"the widget channel cannot send a {message.kind!r} message")
        try:
            await self.ctx.fanout.broadcast(topic, payload)
        except Exception as exc:  # the fanout's backend (Redis) is down or restarting
            raise TransientError(f"fanout unavailable: {exc}") from exc
        # The reply is in the transcript too: a tab that is offline now gets it on reconnect.
        return Delivered(platform_id=message.id)

    async def check(self) -> tuple[HealthState, str]:
        return ("ok", "")
