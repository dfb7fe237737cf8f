"""Conversations under way through the HTTP API channel, as an integrator's system drives
them: customers write, agents answer, each side one message after another, each retried
(with the same message_id, after Retry-After) until the bridge answers 202.

What the user sees is then counted: every accepted customer message once and in order in
the conversation's transcript (the engine's commits), every accepted agent reply once and
in order at the customer's webhook (the dispatcher's sends).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.harness import wait_for
from tests.proc import BridgeProcess
from tests.test_api_e2e import AUTH
from tests.timing import scaled
from tests.webhook import WebhookReceiver

POST_PATIENCE_S = 20.0  # how long one message is retried (503s, dropped connections)


@dataclass
class Tally:
    """Lost, doubled and out-of-order messages, as the agent and the customer see them."""

    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.lost or self.doubled or self.out_of_order)

    def summary(self) -> str:
        """How many of each, and where: the first and last lost of each conversation's side."""
        sides: dict[str, list[str]] = {}
        for item in self.lost:
            side, _, text = item.partition(": ")
            sides.setdefault(side, []).append(text)
        return (f"{len(self.lost)} lost ({'; '.join(f'{s}: {len(t)}, {t[0]}..{t[-1]}' for s, t in sides.items())}), "
                f"{len(self.doubled)} doubled {self.doubled[:5]}, {len(self.out_of_order)} out of order "
                f"{[o[:300] for o in self.out_of_order[:2]]}")


class ConversationLoad:
    def __init__(self, url: str, webhook: WebhookReceiver, *, customers: int, prefix: str,
                 pace_s: float = 0.0) -> None:
        self.url = url
        self.pace_s = pace_s  # each side's pause between messages (the API shows a transcript's last 200)
        self.webhook = webhook
        self.customers = [f"{prefix}-{i}" for i in range(customers)]
        self.conversations: dict[str, str] = {}  # customer -> conversation id
        self.accepted: dict[str, list[str]] = {c: [] for c in self.customers}  # texts answered 202, in order
        self.statuses: Counter[int] = Counter()
        self.retry_after: set[str] = set()  # Retry-After values seen with 503
        self.sent = 0
        self._stop = asyncio.Event()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def close(self) -> None:
        await self._http.close()

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        """POST until 202: a 503 (with Retry-After) or a dropped connection is retried as is,
        for POST_PATIENCE_S at most (then the test fails saying so, rather than hanging)."""
        deadline = time.monotonic() + scaled(POST_PATIENCE_S)
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"no 202 for {path} in {scaled(POST_PATIENCE_S):.0f} s; statuses so far: "
                                     f"{dict(self.statuses)}")
            try:
                async with self._http.post(self.url + path, json=body, headers=AUTH) as response:
                    self.statuses[response.status] += 1
                    if response.status == 202:
                        return
                    assert response.status == 503, (response.status, await response.text())
                    self.retry_after.add(response.headers.get("Retry-After", ""))
                    await asyncio.sleep(float(response.headers.get("Retry-After") or 1))
            except aiohttp.ClientConnectionError:
                self.statuses[0] += 1
                await asyncio.sleep(0.2)

    async def open(self) -> None:
        """Each customer's first message; the acknowledgement names the conversation."""
        for customer in self.customers:
            await self._post("/api/v1/messages", {"customer_id": customer, "text": "c 0", "message_id": "c0"})
            self.accepted[customer].append("c 0")

        def known() -> bool:
            for message in self.webhook.messages:
                if message["customer_id"] in self.accepted:
                    self.conversations[message["customer_id"]] = message["conversation_id"]
            return len(self.conversations) == len(self.customers)

        await wait_for(known, 20, "every conversation's acknowledgement")

    async def _write(self, customer: str, side: str) -> None:
        """One side of a conversation: the customer's messages ("c n"), or an agent's replies ("r n")."""
        n = 0
        while not self._stop.is_set():
            n += 1
            if side == "agent":
                text = f"r {n}"
                await self._post(f"/api/v1/conversations/{self.conversations[customer]}/messages",
                                 {"text": text, "agent": "Ana", "message_id": f"r{n}"})
            else:
                text = f"c {n}"
                await self._post("/api/v1/messages", {"customer_id": customer, "text": text, "message_id": f"c{n}"})
            self.accepted[customer].append(text)
            self.sent += 1
            if self.pace_s:
                await asyncio.sleep(self.pace_s)

    async def run_until(self, fault: Any) -> None:
        """Both sides write in every conversation while ``fault()`` runs, and a little after it."""
        tasks = [asyncio.create_task(self._write(c, side)) for c in self.customers for side in ("customer", "agent")]
        try:
            await fault()
            after = self.sent
            await wait_for(lambda: self.sent >= after + 2 * len(self.customers), 30, "messages after the fault")
        finally:
            self._stop.set()
            await asyncio.gather(*tasks)

    async def _seen(self) -> dict[tuple[str, str], list[str]]:
        """(customer, "webhook" | "transcript") -> texts, in the order the user sees them."""
        seen: dict[tuple[str, str], list[str]] = {}
        for customer in self.customers:
            seen[customer, "webhook"] = [m["text"] for m in self.webhook.messages
                                         if m["customer_id"] == customer and m["text"].startswith("r ")]
            async with self._http.get(f"{self.url}/api/v1/conversations/{self.conversations[customer]}",
                                      headers=AUTH) as response:
                transcript = (await response.json())["transcript"]
            seen[customer, "transcript"] = [m["text"] for m in transcript if m["kind"] == "customer"]
        return seen

    def _wanted(self, customer: str, where: str) -> list[str]:
        return [t for t in self.accepted[customer] if t.startswith("r " if where == "webhook" else "c ")]

    async def tally(self) -> Tally:
        """Once every accepted message arrived (or a deadline passed), count."""
        async def arrived() -> bool:
            seen = await self._seen()
            return all(set(self._wanted(c, w)) <= set(texts) for (c, w), texts in seen.items())

        with contextlib.suppress(AssertionError):  # a timeout: what is missing is counted as lost
            await wait_for(arrived, 30, "every accepted message in its transcript and at the webhook")
        tally = Tally()
        for (customer, where), seen in (await self._seen()).items():
            wanted = self._wanted(customer, where)
            counts = Counter(seen)
            tally.lost += [f"{customer} {where}: {t}" for t in wanted if t not in counts]
            tally.doubled += [f"{customer} {where}: {t} x{k}" for t, k in counts.items() if k > 1]
            if list(dict.fromkeys(seen)) != [t for t in wanted if t in counts]:
                tally.out_of_order.append(f"{customer} {where}: {seen}")
        return tally


async def tally_under(bridge: BridgeProcess, load: ConversationLoad, fault: Callable[[], Awaitable[None]]
                      ) -> tuple[Tally, int]:
    """The bridge started, its conversations opened and written in while ``fault()`` runs,
    then counted; returns the tally and the bridge's exit status (its log printed with a
    failure, where pytest shows it)."""
    try:
        await bridge.start()
        await load.open()
        await load.run_until(fault)
        tally = await load.tally()
    except BaseException:
        print("bridge log (tail):", bridge.log())
        raise
    finally:
        await load.close()
        stopped = await bridge.stop()
    return tally, stopped
