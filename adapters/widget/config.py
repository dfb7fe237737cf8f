"""Configuration of the widget channel and its agent console (``channels.widget``)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from bridge.adapter import ChannelConfig

_HASH = re.compile(r"^(scrypt\$\d+\$\d+\$\d+|pbkdf2_sha256\$\d+)\$[0-9a-f]+\$[0-9a-f]+$")


class LimitsConfig(BaseModel):
    """Abuse limits, per bridge process (each process counts its own sockets)."""

    model_config = ConfigDict(extra="forbid")

    max_frame_bytes: int = Field(default=16_384, ge=256)  # a bigger frame closes the socket with 1009
    max_text_chars: int = Field(default=4_000, ge=1)
    connections_per_ip: int = Field(default=20, ge=1)
    connections_per_visitor: int = Field(default=10, ge=1)  # open tabs of one visitor
    messages_per_minute: float = Field(default=30.0, gt=0)  # per visitor, refilled continuously
    message_burst: int = Field(default=8, ge=1)
    ip_messages_per_minute: float = Field(default=120.0, gt=0)  # per IP, all its visitors together
    ip_message_burst: int = Field(default=30, ge=1)
    rejected_before_close: int = Field(default=20, ge=1)  # rate-limited frames in a row before close 1008
    new_visitors_per_ip_per_hour: int = Field(default=30, ge=1)  # fresh visitor ids, all processes together
    hello_timeout_s: float = Field(default=10.0, gt=0)
    history_messages: int = Field(default=100, ge=0, le=1000)


class UploadsConfig(BaseModel):
    """Files visitors attach (a photo of the broken board, a PDF); kept in Redis."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_bytes: int = Field(default=5 * 1024 * 1024, ge=1, le=50 * 1024 * 1024)
    types: list[str] = Field(default_factory=lambda: [
        "image/jpeg", "image/png", "image/gif", "image/webp", "application/pdf", "text/plain"])
    keep_days: float = Field(default=30.0, gt=0)  # the file and its links expire together
    per_visitor_per_hour: float = Field(default=20.0, gt=0)  # paced per process
    per_message: int = Field(default=5, ge=1, le=20)
    # quotas shared by every process (counted in Redis)
    per_ip_per_hour: int = Field(default=60, ge=1)  # all the visitors of one address together
    total_per_hour: int = Field(default=2_000, ge=1)  # everyone together
    max_stored_mb: float = Field(default=512.0, gt=0)  # all files kept (keep_days) together


class AgentProfile(BaseModel):
    """How an agent appears: to customers (display name) and to other agents (initials)."""

    model_config = ConfigDict(extra="forbid")

    display_name: str = Field(min_length=1, max_length=60)
    initials: str = Field(default="", max_length=3)  # default: from the display name


class CannedReply(BaseModel):
    """A short named text an agent inserts into the reply box."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=60)
    text: str = Field(min_length=1, max_length=4000)


class ConsoleConfig(BaseModel):
    """The agent console at /agent."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    #: agent name -> password hash from ``python -m adapters.widget.console hash-password``
    agents: dict[str, str] = Field(default_factory=dict)
    #: a shared login token (``${CONSOLE_TOKEN}``); when neither agents nor token are set a
    #: token is generated once, kept in Redis, and printed at start
    token: SecretStr | None = None
    session_hours: float = Field(default=12.0, gt=0)
    poll_interval_s: float = Field(default=10.0, gt=0)  # fallback refresh when no live update arrives
    # failed logins in a window, counted in Redis: per (address, name), per address, and for
    # everyone together (a slow-down against guessing from many addresses)
    login_window_min: float = Field(default=15.0, gt=0)
    login_failures_per_ip_and_name: int = Field(default=10, ge=1)
    login_failures_per_ip: int = Field(default=30, ge=1)
    login_failures_total: int = Field(default=300, ge=1)
    #: login -> display name and initials; customers see the display name on replies
    profiles: dict[str, AgentProfile] = Field(default_factory=dict)
    #: what customers see for an agent who logged in with a password and has no profile
    #: (never the login id); a token login's typed name is already a display name
    default_display_name: str = Field(default="Support", min_length=1, max_length=60)
    #: language code -> short named texts; the console offers the conversation's language first
    canned_replies: dict[str, list[CannedReply]] = Field(default_factory=dict)
    #: how long an agent counts as viewing a case / online without a sign of life from the page
    presence_ttl_s: float = Field(default=30.0, ge=5)

    @field_validator("agents")
    @classmethod
    def _hashes(cls, value: dict[str, str]) -> dict[str, str]:
        for name, hashed in value.items():
            if not _HASH.match(hashed):
                raise ValueError(
                    f"agent {name!r}: not a password hash; make one with "
                    "`python -m adapters.widget.console hash-password`"
                )
        return value


class WidgetConfig(ChannelConfig):
    """``channels.widget``: the chat bubble for websites and the agent console."""

    #: signs visitor tokens and console sessions (``${WIDGET_SECRET}``); when unset one is
    #: generated once, in a 0600 file of the embedded Redis's data directory (with an
    #: external Redis: in Redis, so every process shares it; docs/security.md)
    secret: SecretStr | None = None
    #: pages allowed to open the widget's WebSocket, as origins ("https://shop.example").
    #: The bridge's own origin (http.public_url) is always allowed, never one taken from the
    #: request's Host header; "*" allows any page.
    allowed_origins: list[str] = Field(default_factory=list)
    #: logged-in users: the site signs its user id with this secret (HMAC-SHA256, hex)
    identity_secret: SecretStr | None = None
    #: refuse visitors whose site did not sign a user id (needs identity_secret)
    require_identity: bool = False
    token_days: int = Field(default=365, ge=1)
    trust_forwarded_for: bool = False  # behind a proxy: take the client IP from X-Forwarded-For
    title: str = "Support"
    color: str = "#1f6feb"
    demo_page: bool = True  # serve a demo shop page with the widget at /
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    uploads: UploadsConfig = Field(default_factory=UploadsConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        out = []
        for origin in value:
            origin = origin.strip().rstrip("/")
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(f"{origin!r} is not an origin like https://shop.example (scheme and host, no path)")
            out.append(origin)
        return out

    @field_validator("color")
    @classmethod
    def _color(cls, value: str) -> str:
        if not re.match(r"^#[0-9a-fA-F]{3,8}$", value):
            raise ValueError(f"{value!r} is not a hex colour like #1f6feb")
        return value
