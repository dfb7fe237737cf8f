"""A webhook receiver on loopback, as an integrator would run it: it checks each
signature and drops a redelivered message by its X-Bridge-Message-Id."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

from aiohttp import web

from adapters.api.signing import MESSAGE_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

WEBHOOK_SECRET = "webhook-secret-456"


class WebhookReceiver:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.received: list[dict[str, Any]] = []  # every accepted delivery, doubles included
        self.bad_signatures = 0
        self.fail_next: list[int] = []  # statuses to answer before accepting (e.g. [500, 429])
        self.retry_after = "0"
        self.fail_for: dict[str, int] = {}  # customer id -> status answered every time
        self.hang_for: set[str] = set()  # customer ids whose deliveries never get an answer
        self.tries: Counter[str] = Counter()  # delivery attempts per customer id, failures included
        self.arrivals: list[tuple[str, float]] = []  # (customer id, monotonic time) of each accepted delivery
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()  # set: hung deliveries get their answer
        self.url = ""

    @property
    def messages(self) -> list[dict[str, Any]]:
        """What the customer sees: each message once (doubles dropped by id)."""
        seen: dict[str, dict[str, Any]] = {}
        for item in self.received:
            seen.setdefault(item["id"], item)
        return list(seen.values())

    def texts_for(self, customer_id: str) -> list[str]:
        return [m["text"] for m in self.messages if m["customer_id"] == customer_id and m["kind"] == "reply"]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        ok = verify(self.secret, request.headers.get(TIMESTAMP_HEADER, ""), body,
                    request.headers.get(SIGNATURE_HEADER, ""))
        if not ok:
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.fail_next:
            status = self.fail_next.pop(0)
            return web.Response(status=status, headers={"Retry-After": self.retry_after} if status == 429 else {})
        payload = json.loads(body)
        customer = payload.get("customer_id", "")
        self.tries[customer] += 1
        if customer in self.hang_for:
            await self._stopping.wait()  # until the bridge gives up (its webhook_timeout_s)
        if customer in self.fail_for:
            return web.Response(status=self.fail_for[customer])
        assert payload["id"] == request.headers[MESSAGE_ID_HEADER]
        self.received.append(payload)
        self.arrivals.append((customer, time.monotonic()))
        return web.Response(status=204)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self.url

    def release_hung(self) -> None:
        """Answer the deliveries that hang now (and any later one at once)."""
        self._stopping.set()

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
