"""Connection limits for the one HTTP server: slow clients and connection floods.

aiohttp bounds header sizes and idle keep-alive connections, but has no deadline for a
request's headers or body: a client sending one byte every few seconds holds a connection
(and, once its headers are in, a handler) for ever. So the server's protocol is aiohttp's
own ``RequestHandler`` subclassed with a watchdog per connection, served by ``GuardedSite``
(aiohttp's ``TCPSite`` with our protocol factory):

- headers: a request's head must be complete ``header_timeout_s`` after the connection
  opens, or after the first byte of a following keep-alive request (408, then close);
- body: ``body_timeout_s`` plus one second per ``body_min_rate_bytes_s`` bytes received
  (Apache's mod_reqtimeout rule), else the handler's body read raises 408 and the
  connection closes;
- idle keep-alive connections: aiohttp's ``keepalive_timeout``;
- a WebSocket, once upgraded, has no deadline;
- caps on open connections per peer address and in all, checked at accept: the excess is
  closed at once. The peer is the TCP peer (a reverse proxy, when there is one): no
  X-Forwarded-For exists before a request has been read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from bridge.metrics import HTTP_CONNECTIONS, HTTP_REJECTED, HTTP_TIMEOUTS

if TYPE_CHECKING:
    from bridge.config import HttpSettings

log = logging.getLogger("bridge.http")

_LATE_HEADERS = b"request headers not received in time\n"
_LATE_HEADERS_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(_LATE_HEADERS), _LATE_HEADERS))
LOG_EVERY_S = 60.0


class ConnectionCaps:
    """Counts open connections per peer address; refuses those over a cap, logging each
    refused address at most once a minute."""

    def __init__(self, max_total: int, max_per_ip: int, clock: Callable[[], float]) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip  # 0: no per-address cap
        self._clock = clock
        self._open: dict[str, int] = {}
        self._total = 0
        self._logged_at: dict[str, float] = {}

    def admit(self, ip: str) -> bool:
        if self._total >= self.max_total:
            self._refuse("total", "", f"http.max_connections ({self.max_total}) reached; refusing connections")
            return False
        count = self._open.get(ip, 0)
        if self.max_per_ip and count >= self.max_per_ip:
            self._refuse("per_ip", ip, f"{ip} holds http.max_connections_per_ip ({self.max_per_ip}) connections; "
                                       "refusing more from it")
            return False
        self._open[ip] = count + 1
        self._total += 1
        HTTP_CONNECTIONS.inc()
        return True

    def release(self, ip: str) -> None:
        count = self._open.pop(ip, 0) - 1
        if count > 0:
            self._open[ip] = count
        self._total -= 1
        HTTP_CONNECTIONS.dec()

    def _refuse(self, limit: str, key: str, text: str) -> None:
        HTTP_REJECTED.labels(limit).inc()
        now = self._clock()
        if now - self._logged_at.get(key, -LOG_EVERY_S) < LOG_EVERY_S:
            return
        if len(self._logged_at) > 4096:  # many addresses: forget the ones logged over a minute ago
            self._logged_at = {k: t for k, t in self._logged_at.items() if now - t < LOG_EVERY_S}
        self._logged_at[key] = now
        log.warning(text + " (logged once a minute)", extra={"peer": key or None, "limit": limit})


class GuardedRequestHandler(RequestHandler):
    """aiohttp's HTTP/1.1 protocol plus the deadlines above and the connection caps.

    It reads a few of aiohttp's protocol attributes (``_request_count``, ``_messages``,
    ``_current_request``); tests/test_http_limits.py fails if a new aiohttp changes them.
    """

    __slots__ = ("_admitted", "_answered", "_body", "_body_bytes", "_body_expired_for", "_body_started",
                 "_body_timer", "_caps", "_header_timer", "_ip", "_settings", "_upgrading", "_websocket")

    def __init__(self, manager: web.Server, *, settings: HttpSettings, caps: ConnectionCaps, **kwargs: Any) -> None:
        super().__init__(manager, keepalive_timeout=settings.keepalive_timeout_s, **kwargs)
        self._settings = settings
        self._caps = caps
        self._ip = ""
        self._admitted = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the body being received
        self._body_started = 0.0
        self._body_bytes = 0
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_expired_for: web.BaseRequest | None = None
        self._upgrading = False  # an upgrade request was read: no deadlines until it is answered
        self._websocket = False
        self._answered = 0  # responses written; equal to _request_count when nothing is in flight

    # -- connection lifetime ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._caps.admit(self._ip):
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._caps.release(self._ip)
        self._stop_timers()
        super().connection_lost(exc)

    def set_parser(self, parser: Any, data_received_cb: Callable[[], None] | None = None) -> None:
        """Called when a WebSocket is accepted: from now on the connection has no deadline."""
        self._websocket = True
        self._stop_timers()
        super().set_parser(parser, data_received_cb)

    # -- reading ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._websocket or self._upgrading:
            super().data_received(data)
            return
        parsed_before = self._request_count
        super().data_received(data)
        if self.transport is None:
            return
        if self._request_count != parsed_before and self._messages:
            self._cancel_header_timer()
            message, payload = self._messages[-1]
            self._stop_body_timer()
            if isinstance(message, RawRequestMessage) and message.upgrade:
                self._upgrading = True
            elif not payload.is_eof():
                self._start_body_timer(payload)
        elif self._body is not None:
            self._body_bytes += len(data)
            if self._body.is_eof():
                self._stop_body_timer()
        elif self._header_timer is None:  # the first bytes of the next request on a kept-alive connection
            self._start_header_timer()

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        result = await super().finish_response(request, resp, start_time)
        self._answered += 1
        if not self._websocket:
            self._upgrading = False  # an upgrade that was refused: back to plain HTTP
        if self._body_expired_for is request:
            self._body_expired_for = None
            self.force_close()  # the rest of a late body is not worth reading
        return result

    # -- deadlines ----------------------------------------------------------------------------

    def _start_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(self._settings.header_timeout_s, self._headers_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport is None:
            return
        HTTP_TIMEOUTS.labels("header").inc()
        if self._answered == self._request_count:  # no response in progress: the client can read a 408
            self.transport.write(_LATE_HEADERS_RESPONSE)
        self.force_close()

    def _start_body_timer(self, payload: StreamReader) -> None:
        self._body = payload
        self._body_started = self._loop.time()
        self._body_bytes = 0
        self._body_timer = self._loop.call_later(self._settings.body_timeout_s, self._check_body)

    def _stop_body_timer(self) -> None:
        self._body = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _check_body(self) -> None:
        self._body_timer = None
        payload = self._body
        if payload is None or payload.is_eof() or self.transport is None:
            self._body = None
            return
        allowed_s = self._settings.body_timeout_s
        if self._settings.body_min_rate_bytes_s:
            allowed_s += self._body_bytes / self._settings.body_min_rate_bytes_s
        due = self._body_started + allowed_s
        if self._loop.time() < due:  # the client kept the pace: look again when its allowance ends
            self._body_timer = self._loop.call_at(due, self._check_body)
            return
        self._body = None
        HTTP_TIMEOUTS.labels("body").inc()
        request = self._current_request
        if request is not None and request.content is payload and request.writer.output_size == 0:
            # the handler's read raises it and aiohttp answers 408; finish_response closes
            self._body_expired_for = request
            payload.set_exception(web.HTTPRequestTimeout(text="request body not received in time\n"))
        else:
            self.force_close()

    def _stop_timers(self) -> None:
        self._cancel_header_timer()
        self._stop_body_timer()
        self._upgrading = False


class GuardedSite(web.BaseSite):
    """A TCP site serving the runner's app through ``GuardedRequestHandler``."""

    __slots__ = ("_caps", "_settings")

    def __init__(self, runner: web.BaseRunner, settings: HttpSettings) -> None:
        super().__init__(runner)
        self._settings = settings
        self._caps = ConnectionCaps(settings.max_connections, settings.max_connections_per_ip,
                                    asyncio.get_running_loop().time)

    @property
    def name(self) -> str:
        return f"http://{self._settings.host}:{self.port}"

    @property
    def port(self) -> int:
        sockets = getattr(self._server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else self._settings.port

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None, "runner.setup() first"
        loop = asyncio.get_running_loop()

        def protocol() -> GuardedRequestHandler:
            return GuardedRequestHandler(server, loop=loop, settings=self._settings, caps=self._caps,
                                         access_log=None)

        self._server = await loop.create_server(protocol, self._settings.host, self._settings.port,
                                                backlog=self._backlog)
