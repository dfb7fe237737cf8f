"""A `Turn` is one message going through the pipeline, and everything it causes.

Steps read the message and the conversation, change the conversation in place and
call `reply`, `notify_agents`, `enqueue`, `schedule`; the engine then writes all of it
(and the ack) in one atomic commit. A step is any callable ``step(turn)`` returning
None or an awaitable; ``turn.stop()`` ends the pipeline for this message.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bridge.adapter import NO_CAPABILITIES, Capabilities
from bridge.config import Settings
from bridge.effects import Effects
from bridge.jobs import Jobs, not_started
from bridge.model import Attachment, Button, Contact, Conversation, Message, Sender
from bridge.store import Store
from bridge.templates import Templates

Step = Callable[["Turn"], Awaitable[None] | None]
StepFactory = Callable[["FlowConfig"], Step]


@dataclass
class FlowConfig:
    """What a step factory is given to build its step."""

    settings: Settings
    channels: frozenset[str]  # configured channel names
    templates: Templates
    clock_ms: Callable[[], int]
    store: Store | None = None  # read access for steps that look things up (contacts)
    jobs: Jobs | None = None  # slow calls that go on without holding the partition (set by the engine)
    #: what each configured channel can do (buttons, files, ...), as its adapter declares
    capabilities: Mapping[str, Capabilities] = field(default_factory=dict)

    def can(self, channel: str) -> Capabilities:
        return self.capabilities.get(channel, NO_CAPABILITIES)

    def email_channel(self) -> str | None:
        """The configured channel whose addresses are email addresses (tickets, written
        confirmations go there), if any."""
        return self._email_channel

    @functools.cached_property
    def _email_channel(self) -> str | None:
        return next((name for name, caps in self.capabilities.items() if caps.email_addresses), None)


class Turn(msgspec.Struct):
    message: Message
    conversation: Conversation
    contact: Contact | None
    config: FlowConfig
    now_ms: int
    previous_status: str | None = None  # the status before this message; None: new conversation
    previous_updated_ms: int = 0  # the conversation's updated_ms before this message
    # True once the turn's batch is committed, False if it is not (`start_job`)
    committed: asyncio.Future[bool] | None = None
    is_new: bool = False  # the conversation was opened by this message
    reopened: bool = False
    outbound: list[Message] = msgspec.field(default_factory=list)  # to outbound:<channel>
    queued: list[tuple[str, Message]] = msgspec.field(default_factory=list)  # (queue name, case)
    timers: list[tuple[int, Message]] = msgspec.field(default_factory=list)  # (due ms, command)
    contact_changed: bool = False
    contact_created: bool = False  # the contact is new with this conversation: no other worker has it
    contact_events: list[tuple[str, bytes]] = msgspec.field(default_factory=list)  # (contact id, bridge.contacts event)
    record: bool = True  # keep the message in the transcript
    notices: list[Message] = msgspec.field(default_factory=list)  # agent-side news kept in the transcript
    stopped: bool = False
    notes: dict[str, Any] = msgspec.field(default_factory=dict)  # what steps tell later steps

    @property
    def language(self) -> str:
        return self.conversation.language or self.config.settings.triage.default_language

    def stop(self) -> None:
        self.stopped = True

    def text(self, template: str, **values: Any) -> str:
        return self.config.templates.render(template, self.language, **values)

    def reply(self, text: str, *, buttons: list[Button] | None = None, sender: Sender | None = None,
              attachments: list[Attachment] | None = None, data: dict[str, Any] | None = None) -> Message:
        """Send ``text`` to the customer on the channel and address they wrote from."""
        conv = self.conversation
        reply = Message(kind="reply", channel=conv.channel, address=conv.address, conversation_id=conv.id,
                        text=text, buttons=buttons or [], sender=sender, attachments=attachments or [],
                        reply_to=self.message.id, data=data or {}, created_ms=self.now_ms)
        self.outbound.append(reply)
        return reply

    def notify_agents(self, name: str, *, text: str = "", data: dict[str, Any] | None = None,
                      channels: list[str] | None = None, record: bool = True) -> None:
        """Tell the agents' side (each channel in ``agents.channels``) about the conversation.

        With ``record`` (and a text) the news is also kept once in the transcript, where the
        console and reports show it (an SLA warning, a page, a state change); news that only
        carries the customer's words, already there, passes ``record=False``.
        """
        targets = self.config.settings.agents.channels if channels is None else channels
        if record and text:
            by = self.message.sender if self.message.sender and self.message.sender.is_agent else None
            self.notices.append(Message(kind="event", channel=self.conversation.channel, name=name, text=text,
                                        conversation_id=self.conversation.id, reply_to=self.message.id,
                                        sender=by, data=data or {}, created_ms=self.now_ms))
        payload = {"conversation": conversation_summary(self.conversation, self.contact), **(data or {})}
        for channel in targets:
            self.outbound.append(Message(kind="event", channel=channel, name=name, text=text,
                                         conversation_id=self.conversation.id, reply_to=self.message.id,
                                         sender=self.message.sender, attachments=self.message.attachments,
                                         data=payload, created_ms=self.now_ms))

    def enqueue(self, queue: str) -> None:
        """File the conversation as a case in an email queue (and send the ticket when
        an email channel is configured)."""
        self.conversation.queue = queue
        mail = self.config.email_channel()
        case = Message(kind="event", channel=mail or "", name="ticket", conversation_id=self.conversation.id,
                       address=self.config.settings.queues[queue].email, text=self.message.text,
                       sender=self.message.sender, attachments=self.message.attachments,
                       reply_to=self.message.id, created_ms=self.now_ms,
                       data={"queue": queue, "conversation": conversation_summary(self.conversation, self.contact)})
        self.queued.append((queue, case))
        if mail is not None:
            self.outbound.append(case)

    def effects(self, payload: bytes | None) -> Effects:
        """What this turn wrote, for the store; ``payload`` is the message as read from the
        stream, kept in the transcript as it arrived."""
        conversation, message = self.conversation, self.message
        conversation.updated_ms = self.now_ms
        kept: list[Message | bytes] = []
        is_note = message.kind == "command" and message.name == "note"
        if self.record and (message.kind in ("customer", "agent") or is_note):
            conversation.messages += 1
            kept.append(payload or message)
        kept.extend(self.notices)
        # an agent's words are kept once, as theirs; a reply sent in other words (translated) too
        for out in self.outbound:
            if out.kind == "reply" and (message.kind != "agent" or "translation_of" in out.data):
                kept.append(out)
        return Effects(conversation=conversation, previous_status=self.previous_status,
                       previous_updated_ms=self.previous_updated_ms,
                       kept=kept, outbound=self.outbound, queued=self.queued, timers=self.timers,
                       contact=self.contact if self.contact_changed else None,
                       contact_shared=self.contact_changed and not self.contact_created,
                       contact_events=self.contact_events, cause=message)

    def schedule(self, due_ms: int, name: str, data: dict[str, Any] | None = None) -> None:
        """Fire command ``name`` for this conversation at ``due_ms`` (SLA, follow-ups)."""
        command = Message(kind="command", channel="timer", name=name, conversation_id=self.conversation.id,
                          data=data or {}, created_ms=self.now_ms)
        self.timers.append((due_ms, command))

    def start_job(self, work: Awaitable[Message | None], what: str) -> bool:
        """Run ``work`` as a job (`bridge.jobs`) whose result is published once this turn's
        batch is committed; False (nothing started) without jobs or with too many running."""
        if self.config.jobs is None:
            return not_started(work)
        return self.config.jobs.start(work, what, self.committed)


def conversation_summary(conversation: Conversation, contact: Contact | None) -> dict[str, Any]:
    """The plain facts an agent sees about a conversation."""
    return {
        "id": conversation.id,
        "channel": conversation.channel,
        "address": conversation.address,
        "status": conversation.status,
        "language": conversation.language,
        "urgency": conversation.urgency,
        "urgency_reason": conversation.urgency_reason,
        "queue": conversation.queue,
        "topic": conversation.topic,
        "assignee": conversation.assignee,
        "customer": (contact.name if contact and contact.name else ""),
        "email": (contact.email if contact else ""),
        "tier": (contact.current_tier() if contact else ""),
    }
