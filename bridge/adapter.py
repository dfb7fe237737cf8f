"""The adapter contract: every channel implements `Adapter` and nothing else.

An adapter is a translator. It is built from its part of the config and an
`AdapterContext`; `start()` begins receiving and hands each normalized `Message` to
``ctx.publish`` (confirming the event to the platform only after publish returned);
`send()` delivers one outbound message and returns `Delivered` or raises
`TransientError` / `PermanentError` (bridge.errors); `stop()` stops cleanly. An adapter
never sees Redis: what it needs to keep (offsets, watermarks) goes through ``ctx.state``.
"""

from __future__ import annotations

import abc
import builtins
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

import msgspec
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bridge.contacts import ContactBook
from bridge.model import Contact, Conversation, Message

if TYPE_CHECKING:
    from bridge.history.privacy import Privacy
    from bridge.history.reader import Reader


class ChannelConfig(BaseModel):
    """Base of every channel's config section; each adapter extends it."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    rate_per_s: float | None = None  # overall sends per second; None: the adapter's default
    rate_per_address_per_s: float | None = None  # per chat / per recipient
    max_attempts: int = 8  # transient failures before the dead-letter stream
    max_in_flight: int | None = Field(None, ge=1)  # sends at once; None: the adapter's default
    max_in_hand: int = Field(10_000, ge=1)  # entries read ahead into the per-address lanes


class Delivered(msgspec.Struct, frozen=True):
    """A successful send. ``platform_id`` is the platform's id for what was sent.

    ``ref`` names a thread the platform created for the conversation (a Slack thread,
    an email Message-ID); the bridge remembers it so replies in that thread find the
    conversation again.
    """

    platform_id: str = ""
    ref: str = ""


class StateStore(Protocol):
    """Small durable key/value state, namespaced per adapter (offsets, watermarks; bytes
    for files a channel keeps itself, such as the widget's uploads)."""

    async def get(self, key: str) -> str | None: ...
    async def set(self, key: str, value: str, ttl_s: int | None = None) -> None: ...
    async def set_if_absent(self, key: str, value: str, ttl_s: int | None = None) -> bool: ...
    async def delete(self, key: str) -> None: ...
    async def get_bytes(self, key: str) -> bytes | None: ...
    async def set_bytes(self, key: str, value: bytes, ttl_s: int | None = None) -> None: ...
    async def incr(self, key: str, amount: int = 1, ttl_s: int | None = None) -> int:
        """Add to a counter shared by every process; a new counter expires after ``ttl_s``."""
        ...
    async def counts(self, keys: list[str]) -> list[int]: ...
    async def mark(self, key: str, member: str, ttl_s: float) -> None:
        """Put ``member`` in the expiring set ``key`` for ``ttl_s`` (again: renewed). For
        short-lived facts every process shares: who is online, who views a conversation."""
        ...
    async def unmark(self, key: str, member: str) -> None: ...
    async def marked(self, key: str) -> dict[str, int]:
        """The unexpired members of ``key`` and when each expires (ms)."""
        ...


class ConversationReader(Protocol):
    """Read-only view of the conversation store, for consoles and agent adapters."""

    async def get(self, conversation_id: str) -> Conversation | None: ...
    async def for_address(self, channel: str, address: str) -> Conversation | None: ...
    async def by_ref(self, ref: str) -> str | None: ...
    async def list(self, status: str | None = None, limit: int = 100) -> builtins.list[Conversation]: ...
    async def transcript(self, conversation_id: str, limit: int = 200) -> builtins.list[Message]: ...
    async def contact(self, contact_id: str) -> Contact | None: ...


class Fanout(Protocol):
    """Cross-process broadcast (Redis pub/sub): a reply for a WebSocket held by another
    process reaches it. At-most-once; durable state stays in streams."""

    async def broadcast(self, topic: str, payload: bytes) -> None: ...

    def subscribe(self, topic: str, on_subscribed: Callable[[], Awaitable[None]] | None = None
                  ) -> AsyncIterator[bytes]:
        """The payloads broadcast on ``topic`` from now on; ``on_subscribed`` is awaited
        each time the subscription is confirmed, the first time and again after the
        connection was lost and made again (what was broadcast meanwhile is lost: read it
        from where it is kept)."""
        ...


HealthState = Literal["ok", "degraded", "broken", "starting", "stopped"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a channel can show and carry, declared by its adapter, so flows decide by
    capability and never by channel name (the runner hands flows a map of these)."""

    buttons: bool = False  # renders a message's buttons; otherwise flows offer a numbered text
    files: bool = False  # carries attachments both ways
    edits: bool = False  # changes a message it sent before (Slack's thread header)
    #: one platform message's longest text (in the platform's own units); the adapter
    #: splits longer text into parts in order. None: no limit the bridge needs to mind
    max_text_length: int | None = None
    #: addresses are email addresses: queue tickets and written confirmations go here
    email_addresses: bool = False


NO_CAPABILITIES = Capabilities()


@dataclass(frozen=True, slots=True)
class DeskSettings:
    """The bridge-wide settings an adapter may read (from ``triage``, ``agents``, ``queues``
    and ``translation``)."""

    default_language: str = "en"  # triage.default_language: greetings when the customer's is unknown
    urgent_mention: str = ""  # agents.urgent_mention
    queue_slack_channels: Mapping[str, str] = field(default_factory=dict)  # queues.<name>.slack_channel
    queues: tuple[str, ...] = ()  # the queue names (the console's filter)
    auto_assign_queues: frozenset[str] = frozenset()  # queues.<name>.auto_assign: round-robin in the console
    translation_enabled: bool = False  # translation.provider is set (docs/translation.md)
    agents_language: str = "en"  # translation.agents_language, else triage.default_language
    agent_languages: Mapping[str, str] = field(default_factory=dict)  # translation.agent_languages


@dataclass(frozen=True, slots=True)
class AdapterContext:
    """What the bridge hands an adapter. Everything is plain callables and protocols."""

    publish: Callable[[Message], Awaitable[bool]]  # True: stored; False: a duplicate
    state: StateStore
    conversations: ConversationReader
    fanout: Fanout
    report_health: Callable[[HealthState, str], Awaitable[None]]
    public_url: str = "http://127.0.0.1:8080"
    #: False in processes without the ``ingest`` role: set up for sending, but do not
    #: poll or register webhooks (two pollers on one bot token conflict).
    receive: bool = True
    settings: DeskSettings = DeskSettings()
    #: a directory on this host that only the bridge reads (the embedded Redis's data
    #: directory), for generated secrets that must not sit in Redis; None with an external Redis
    private_dir: Path | None = None
    #: the SQL record (search, a contact's conversations) and data-protection requests;
    #: None when history is off (history.enabled)
    history: Reader | None = None
    privacy: Privacy | None = None
    #: contacts as agents see and change them (fields, links); None where no store is at hand
    contacts: ContactBook | None = None


IN_FLIGHT_WINDOW_S = 0.05  # a channel's default sends at once cover this much of its rate


class Adapter(abc.ABC):
    """Base class of every channel adapter."""

    name: ClassVar[str]
    config_model: ClassVar[type[ChannelConfig]] = ChannelConfig
    #: "customer": customers write here; "agent": agents work here; "both".
    side: ClassVar[Literal["customer", "agent", "both"]] = "customer"
    #: sends per second when the config does not say (platform limits)
    default_rate_per_s: ClassVar[float | None] = 50.0
    default_rate_per_address_per_s: ClassVar[float | None] = None
    default_max_in_flight: ClassVar[int] = 32  # sends at once; a hung send holds one until its timeout
    capabilities: ClassVar[Capabilities] = NO_CAPABILITIES

    def __init__(self, config: ChannelConfig, ctx: AdapterContext) -> None:
        self.config = config
        self.ctx = ctx

    @property
    def rate_per_s(self) -> float | None:
        """Sends per second: the config's, else the adapter's default (None: no limit)."""
        return self.config.rate_per_s or self.default_rate_per_s

    @property
    def max_in_flight(self) -> int:
        """Sends at once: the config's, else the adapter's default or, when more, the sends
        of IN_FLIGHT_WINDOW_S at the channel's rate. A send holds its slot until its outcome
        is recorded (tens of ms when the process is busy): a channel set to thousands of
        sends a second would be held to the default's pace."""
        if self.config.max_in_flight:
            return self.config.max_in_flight
        return max(self.default_max_in_flight, math.ceil((self.rate_per_s or 0) * IN_FLIGHT_WINDOW_S))

    async def start(self) -> None:  # noqa: B027 - receiving is optional (send-only channels)
        """Begin receiving. Return once started; run loops as background tasks."""

    @abc.abstractmethod
    async def send(self, message: Message) -> Delivered:
        """Deliver one outbound message (kind ``reply`` or ``event``)."""

    async def stop(self) -> None:  # noqa: B027
        """Stop receiving and release connections; in-flight sends have finished."""

    def routes(self) -> Iterable[web.AbstractRouteDef]:
        """HTTP endpoints this adapter serves on the bridge's one web server."""
        return ()

    async def close_connections(self) -> None:  # noqa: B027
        """The web server is stopping: close the long-lived connections this adapter holds
        open (WebSockets), which the server would otherwise wait for."""

    async def check(self) -> tuple[HealthState, str]:
        """An auth/health check against the platform, shown by ``bridge status``."""
        return ("ok", "")
