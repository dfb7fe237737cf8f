"""Helpers for the flow step tests: a controllable clock and turns built without Redis."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge import registry
from bridge.config import Settings
from bridge.model import Attachment, Contact, Conversation, Message, Sender
from bridge.templates import Templates
from bridge.turn import FlowConfig, Step, Turn
from tests import harness

ROOT = Path(__file__).resolve().parent.parent
FAQ = ROOT / "flows" / "data" / "faq.yaml"
T0_MS = 1_795_000_000_000  # Wednesday 2026-11-18 11:06:40 UTC


@dataclass
class Clock(harness.Clock):
    now_ms: int = T0_MS


def make_config(flows: dict[str, Any] | None = None, *, channels: tuple[str, ...] = ("api",),
                clock: Clock | None = None, **settings: Any) -> FlowConfig:
    settings.setdefault("agents", {"channels": ["slack"]})
    parsed = Settings.model_validate({"flows": flows or {}, **settings})
    return FlowConfig(settings=parsed, channels=frozenset(channels), capabilities=registry.capabilities(channels),
                      templates=Templates(parsed.replies, parsed.triage.default_language),
                      clock_ms=clock or Clock())


@dataclass
class Chat:
    """One customer's conversation, driven turn by turn through some steps (no Redis).

    Mirrors what the engine does around the steps: reopening a resolved conversation on
    a customer message, keeping timers that steps schedule, firing them when due.
    """

    config: FlowConfig
    steps: list[Step]
    channel: str = "api"
    address: str = "cust-1"
    contact: Contact = field(default_factory=lambda: Contact(id="contact-1", name="Ana"))
    conversation: Conversation | None = None
    timers: list[tuple[int, Message]] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)

    @property
    def clock(self) -> Clock:
        assert isinstance(self.config.clock_ms, Clock)
        return self.config.clock_ms

    async def run(self, message: Message) -> Turn:
        now = self.config.clock_ms()
        is_new = self.conversation is None
        if self.conversation is None:
            self.conversation = Conversation(id="abc123-1", channel=self.channel, address=self.address,
                                             contact_id=self.contact.id, created_ms=now, updated_ms=now)
        conv = self.conversation
        previous = None if is_new else conv.status
        reopened = False
        if message.kind == "customer":
            if conv.status == "resolved":
                reopened = True
                conv.resolved_ms = 0
            conv.status = "open"
            conv.last_customer_ms = now
        turn = Turn(message=message, conversation=conv, contact=self.contact, config=self.config, now_ms=now,
                    previous_status=previous, is_new=is_new, reopened=reopened)
        for step in self.steps:
            result = step(turn)
            if inspect.isawaitable(result):
                await result
            if turn.stopped:
                break
        conv.updated_ms = now
        self.timers.extend(turn.timers)
        self.timers.sort(key=lambda t: t[0])
        self.turns.append(turn)
        return turn

    async def say(self, text: str, **data: Any) -> Turn:
        attachments = data.pop("attachments", [])
        return await self.run(Message(kind="customer", channel=self.channel, address=self.address, text=text,
                                      sender=Sender(id="u1", name="Ana"), data=data,
                                      attachments=[Attachment(name=a) for a in attachments]))

    async def agent(self, text: str) -> Turn:
        assert self.conversation is not None
        turn = await self.run(Message(kind="agent", channel="slack", conversation_id=self.conversation.id,
                                      text=text, sender=Sender(id="U1", name="Bo", is_agent=True)))
        if not self.conversation.first_response_ms:
            self.conversation.first_response_ms = turn.now_ms
        return turn

    async def command(self, name: str, **data: Any) -> Turn:
        assert self.conversation is not None
        if name == "resolve":
            self.conversation.status = "resolved"
            self.conversation.resolved_ms = self.config.clock_ms()
        return await self.run(Message(kind="command", channel="slack", name=name,
                                      conversation_id=self.conversation.id, data=data,
                                      sender=Sender(id="U1", name="Bo", is_agent=True)))

    async def fire_due(self) -> list[Turn]:
        """Run every timer due by now, in due order (what the engine's timer loop does)."""
        fired = []
        while self.timers and self.timers[0][0] <= self.config.clock_ms():
            _, command = self.timers.pop(0)
            fired.append(await self.run(command))
        return fired


def replies(turns: list[Turn] | Turn) -> list[Message]:
    items = [turns] if isinstance(turns, Turn) else turns
    return [m for t in items for m in t.outbound if m.kind == "reply"]


def events(turns: list[Turn] | Turn, name: str | None = None) -> list[Message]:
    items = [turns] if isinstance(turns, Turn) else turns
    return [m for t in items for m in t.outbound if m.kind == "event" and (name is None or m.name == name)]
