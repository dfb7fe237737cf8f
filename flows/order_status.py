"""Step ``order_status``: "where is my order 12345" and ``/status 12345`` answered from the shop.

The configured endpoint (``url`` with ``{order}`` and ``{language}`` placeholders) is
asked over HTTP with a timeout and retries (timeouts, connection errors and 5xx are
retried with backoff; 404 means no such order). The answer is a JSON object; the keys
named in ``fields`` (status, carrier, tracking, eta) fill the reply templates.

The endpoint is refused when its host is, or resolves to, any address that is not
globally routable (private, loopback, link-local, shared, reserved, multicast), unless
``allow_private`` is set: the bridge must not be turned into a probe of its own network.
Every resolved address is checked and the connection goes to those same addresses (the
resolver is aiohttp's, wrapped), and redirects are not followed, so neither DNS
rebinding nor a redirect can lead it elsewhere.

A lookup holds its partition at most ``hold_s``: a slower one goes on as a job (see
`bridge.jobs`), the partition commits and goes on, and the answer comes back as an
``order_status_result`` command that is answered in the conversation's order. A timer
committed with the message answers "a person will check" should the result never come
(the process died meanwhile).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge.model import Message
from bridge.turn import FlowConfig, Step, Turn
from flows.common import is_customer_text, render, step_settings

log = logging.getLogger("bridge.flows.order_status")

RESULT = "order_status_result"  # a lookup job's answer, as a command
OVERDUE = "order_status_overdue"  # the timer that answers when the job's result never came
PENDING = "order_lookups"  # conversation.data: job -> order number, while a job runs


class OrderStatusSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str  # e.g. https://shop.example.com/api/orders/{order}?lang={language}
    headers: dict[str, str] = {}  # e.g. Authorization: "Bearer ${SHOP_TOKEN}"
    timeout_s: float = Field(3.0, gt=0)
    retries: int = Field(2, ge=0, le=10)
    backoff_s: float = Field(0.25, ge=0)
    # after this many lookups in a row found the endpoint down, it is not asked for
    # pause_s: every customer meanwhile hears at once that a person will check (a down shop
    # API must not hold up the engine's other conversations for timeout_s x retries each)
    pause_after_failures: int = Field(3, ge=1)
    pause_s: float = Field(30.0, ge=0)
    hold_s: float = Field(1.0, ge=0)  # longest a lookup holds its partition; then it goes on as a job
    allow_private: bool = False
    # ASCII boundaries: a number written inside a Chinese sentence ("我的订单99999到哪了") is found
    order_pattern: str = r"(?<![A-Za-z0-9_-])#?(\d{4,12})(?![A-Za-z0-9_-])"
    command: str = "/status"
    topics: list[str] = ["order_status"]  # topics (from the topics step) that ask for a status
    fields: dict[str, str] = {"status": "status", "carrier": "carrier", "tracking": "tracking", "eta": "eta"}

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("order_pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if pattern.groups != 1:
            raise ValueError("needs exactly one group: the order number")
        return value


class AddressRefused(OSError):
    """The endpoint's host is, or resolves to, an address we do not connect to."""


def refused(address: str) -> bool:
    """True for any address that is not globally routable (or is multicast)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing hosts with any non-global address."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        bad = [r["host"] for r in results if refused(r["host"])]
        if bad:
            raise AddressRefused(f"{host} resolves to a private or local address ({', '.join(bad)})")
        return results

    async def close(self) -> None:
        await self._inner.close()


@dataclass
class Lookup:
    """The outcome of one status request: found (data), missing, or unavailable (why)."""

    outcome: str  # "found" | "missing" | "unavailable"
    data: dict[str, Any]
    detail: str = ""
    attempts: int = 0


class OrderClient:
    def __init__(self, settings: OrderStatusSettings, clock_s: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock_s = clock_s
        self.failures = 0  # lookups in a row that found the endpoint down
        self.paused_until = 0.0

    def url_for(self, order: str, language: str) -> str:
        return self.settings.url.replace("{order}", quote(order, safe="")).replace("{language}", quote(language))

    async def lookup(self, order: str, language: str = "en") -> Lookup:
        """Ask the endpoint, unless it failed ``pause_after_failures`` times in a row lately."""
        now = self.clock_s()
        if now < self.paused_until:
            return Lookup("unavailable", {}, f"not asked: the endpoint failed {self.failures} times in a row; "
                                             f"asking again in {self.paused_until - now:.0f}s")
        result = await self._ask(order, language)
        if result.outcome == "unavailable" and result.attempts:
            self.failures += 1
            if self.failures >= self.settings.pause_after_failures:
                self.paused_until = self.clock_s() + self.settings.pause_s
                log.warning("order status endpoint paused", extra={"failures": self.failures,
                                                                    "pause_s": self.settings.pause_s,
                                                                    "detail": result.detail})
        elif result.attempts:
            self.failures = 0
        return result

    async def _ask(self, order: str, language: str) -> Lookup:
        s = self.settings
        url = self.url_for(order, language)
        host = urlsplit(url).hostname or ""
        if not s.allow_private:
            try:
                if refused(host.strip("[]")):
                    return Lookup("unavailable", {}, f"{host} is a private or local address")
            except ValueError:
                pass  # a name: the resolver checks what it resolves to
        resolver = None if s.allow_private else GuardedResolver()
        timeout = aiohttp.ClientTimeout(total=s.timeout_s)
        attempts = 0
        detail = ""
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for attempt in range(s.retries + 1):
                if attempt:
                    await asyncio.sleep(s.backoff_s * 2 ** (attempt - 1))
                attempts += 1
                try:
                    async with session.get(url, headers=s.headers, allow_redirects=False) as response:
                        if response.status == 404:
                            return Lookup("missing", {}, "404", attempts)
                        if response.status >= 500 or response.status == 429:
                            detail = f"HTTP {response.status}"
                            continue
                        if response.status != 200:
                            return Lookup("unavailable", {}, f"HTTP {response.status}", attempts)
                        body = await response.json(content_type=None)
                        if not isinstance(body, dict):
                            return Lookup("unavailable", {}, "the answer is not a JSON object", attempts)
                        return Lookup("found", body, "", attempts)
                except AddressRefused as exc:
                    return Lookup("unavailable", {}, str(exc), attempts)
                except aiohttp.ClientConnectorError as exc:
                    if isinstance(exc.os_error, AddressRefused):
                        return Lookup("unavailable", {}, str(exc.os_error), attempts)
                    detail = f"cannot connect: {exc.os_error}"
                except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Lookup("unavailable", {}, detail, attempts)


def build(config: FlowConfig) -> Step:
    settings = step_settings(config, "order_status", OrderStatusSettings)
    client = OrderClient(settings, clock_s=lambda: config.clock_ms() / 1000)
    pattern = re.compile(settings.order_pattern)
    command = settings.command.lower()

    def wanted(turn: Turn) -> tuple[bool, str]:
        """(is this a status request, the order number or "")."""
        text = turn.message.text.strip()
        if command and text.lower().split(" ", 1)[0] == command:
            found = pattern.search(text[len(command):])
            return True, found.group(1) if found else ""
        if turn.notes.get("topic") in settings.topics:
            found = pattern.search(text)
            if found:
                return True, found.group(1)
        return False, ""

    def answer(turn: Turn, order: str, result: Lookup) -> None:
        turn.notes["order_status"] = {"order": order, "outcome": result.outcome, "detail": result.detail}
        if result.outcome == "unavailable":
            log.warning("order status unavailable", extra={"order": order, "detail": result.detail,
                                                             "attempts": result.attempts})
            turn.reply(render(turn, "order_unavailable", order=order))
            return  # a person takes it from here
        if result.outcome == "missing":
            turn.reply(render(turn, "order_not_found", order=order))
            return
        values = {name: str(result.data.get(key) or "") for name, key in settings.fields.items()}
        parts = [render(turn, "order_status", order=order, status=values.get("status") or "?")]
        if values.get("tracking"):
            parts.append(render(turn, "order_tracking", carrier=values.get("carrier") or "-",
                                tracking=values["tracking"]))
        if values.get("eta"):
            parts.append(render(turn, "order_eta", eta=values["eta"]))
        turn.reply(" ".join(parts), data={"order": order})

    def answer_later(turn: Turn, order: str, lookup: asyncio.Future[Lookup]) -> bool:
        """The lookup goes on as a job; its result (or the timer) is answered later."""
        job = f"{turn.message.id}:{order}"
        conversation = turn.conversation

        async def result() -> Message:
            found = await lookup
            return Message(kind="command", channel=conversation.channel, name=RESULT,
                           conversation_id=conversation.id, dedupe_key=f"{RESULT}:{job}",
                           data={"job": job, "result": dataclasses.asdict(found)})

        if not turn.start_job(result(), f"order_status {order}"):
            return False
        conversation.data.setdefault(PENDING, {})[job] = order
        overdue_ms = int(1000 * (settings.timeout_s * (settings.retries + 1)
                                 + settings.backoff_s * 2 ** settings.retries + 5))
        turn.schedule(turn.now_ms + overdue_ms, OVERDUE, {"job": job})
        return True

    def answer_job(turn: Turn) -> None:
        """A job's result, or its timer: answered once, whichever comes first."""
        pending = turn.conversation.data.get(PENDING) or {}
        order = pending.pop(str(turn.message.data.get("job", "")), None)
        if not pending:
            turn.conversation.data.pop(PENDING, None)
        if order is None:  # answered already
            return
        if turn.message.name == OVERDUE:
            answer(turn, order, Lookup("unavailable", {}, "no answer from the lookup job"))
        else:
            answer(turn, order, Lookup(**turn.message.data["result"]))

    async def order_status(turn: Turn) -> None:
        if turn.message.kind == "command" and turn.message.name in (RESULT, OVERDUE):
            answer_job(turn)
            turn.stop()
            return
        if not is_customer_text(turn):
            return
        asked, order = wanted(turn)
        if not asked:
            return
        urgent = turn.conversation.urgency == "urgent"
        if not order:
            turn.reply(render(turn, "order_ask_number"))
            if not urgent:
                turn.stop()
            return
        lookup = asyncio.ensure_future(client.lookup(order, turn.language))
        try:
            result = await asyncio.wait_for(asyncio.shield(lookup), settings.hold_s)
        except TimeoutError:
            if answer_later(turn, order, lookup):
                return  # routing acknowledges meanwhile; the status follows when the shop answers
            result = await lookup  # too many jobs already: this one waits here
        answer(turn, order, result)
        if result.outcome == "found" and not urgent:
            turn.stop()

    return order_status
