"""The one HTTP server: adapters' endpoints, /healthz and /metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.errors import RecordUnavailable, StoreUnavailable

log = logging.getLogger("bridge.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def unavailable(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What only the SQL record holds cannot be read while its database does not answer,
    nor anything while Redis does not: an endpoint that does not say so itself answers 503
    with the reason and Retry-After (not a bare 500)."""
    try:
        return await handler(request)
    except (RecordUnavailable, StoreUnavailable) as exc:
        if request.headers.get("Upgrade", "").lower() == "websocket":  # the socket answers for itself
            raise
        log.warning("request refused", extra={"path": request.path, "error": str(exc)})
        away = isinstance(exc, RecordUnavailable)
        return web.json_response({"error": str(exc) if away else "temporarily unavailable, retry later"},
                                 status=503, headers={"Retry-After": "5" if away else "1"})


def build_app(routes: Iterable[web.AbstractRouteDef], bridge: Any) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024, middlewares=[unavailable])

    async def healthz(request: web.Request) -> web.Response:
        try:
            redis_ok = bool(await bridge.bus.ping())
        except Exception as exc:
            return web.json_response({"status": "unavailable", "redis": repr(exc)}, status=503)
        adapters = {name: {"state": state, "detail": detail} for name, (state, detail) in bridge.health.local.items()}
        # a channel that cannot work (broken) or works badly (degraded) degrades the bridge;
        # the answer stays 200: the process itself serves, and restarting it fixes neither
        impaired = [n for n, a in adapters.items() if a["state"] in ("broken", "degraded")]
        status = "degraded" if impaired else "ok"
        return web.json_response({"status": status, "redis": redis_ok, "adapters": adapters,
                                  "worker": bridge.worker_id})

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    async def close_connections(app: web.Application) -> None:
        await asyncio.gather(*(adapter.close_connections() for adapter in bridge.adapters.values()))

    app.on_shutdown.append(close_connections)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_routes(list(routes))
    return app
