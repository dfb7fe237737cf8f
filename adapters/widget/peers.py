"""Who is calling: the client's address and whether the calling page's origin may.

Neither ever trusts what the request says about the server itself (its Host header): an
attacker chooses that. Origins are compared with configuration only.
"""

from __future__ import annotations

import logging
import time
import urllib.parse

from aiohttp import web

log = logging.getLogger("adapters.widget")

_LOOPBACK = ("localhost", "127.0.0.1", "[::1]")


def client_ip(request: web.Request, trust_forwarded_for: bool) -> str:
    """The client's IP. Behind a proxy (``trust_forwarded_for``) it is the last address of
    ``X-Forwarded-For``, the one our proxy appended; earlier ones are the client's own claim."""
    if trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last[:64]
    return request.remote or "unknown"


def own_origins(public_url: str) -> set[str]:
    """The bridge's own origin (``http.public_url``). When that is a loopback address (a
    desk on this machine), its loopback aliases on the same port too."""
    own = public_url.rstrip("/")
    parts = urllib.parse.urlsplit(own)
    origins = {f"{parts.scheme}://{parts.netloc}"} if parts.scheme and parts.netloc else {own}
    host = (parts.hostname or "").lower()
    if f"[{host}]" in _LOOPBACK or host in _LOOPBACK:
        port = f":{parts.port}" if parts.port else ""
        origins |= {f"{parts.scheme}://{alias}{port}" for alias in _LOOPBACK}
    return origins


def origin_of(request: web.Request) -> str:
    return request.headers.get("Origin", "").rstrip("/")


class RefusedOrigins:
    """Tells the operator which site was refused and which setting lets it in, at most
    once per ``every_s`` per origin: a busy site must not flood the log, and a widget
    that shows "Offline" forever must not stay a mystery either."""

    MAX_REMEMBERED = 1000

    def __init__(self, every_s: float = 300.0) -> None:
        self.every_s = every_s
        self._logged_s: dict[str, float] = {}

    def recent(self, within_s: float = 3600.0) -> list[str]:
        """Origins refused in the last ``within_s`` (by this process), for the console."""
        now = time.monotonic()
        return sorted(o for o, at in self._logged_s.items() if now - at < within_s)[:50]

    def note(self, origin: str) -> None:
        origin = origin[:200]  # the caller's header: kept short
        now = time.monotonic()
        if now - self._logged_s.get(origin, -self.every_s) < self.every_s:
            return
        if len(self._logged_s) >= self.MAX_REMEMBERED:
            self._logged_s.clear()
        self._logged_s[origin] = now
        log.warning("widget refused a page from origin %s: add it to channels.widget.allowed_origins "
                    "to let the widget connect there", origin or "(none)",
                    extra={"origin": origin, "setting": "channels.widget.allowed_origins"})
