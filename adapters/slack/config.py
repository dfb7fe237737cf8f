"""The ``channels.slack`` section of the config.

Example::

    channels:
      slack:
        bot_token: ${SLACK_BOT_TOKEN}            # xoxb-...
        signing_secret: ${SLACK_SIGNING_SECRET}  # Events API over HTTP
        app_token: ${SLACK_APP_TOKEN}            # xapp-..., only for mode: socket
        mode: events                             # or socket (no public URL needed)
        agents_channel: C0123456789              # routine conversations
        urgent_channel: C0987654321              # escalations
        urgent_mention: "<!here>"
        queue_channels: {billing: C0BILLING1}
        replies: default_out                     # or explicit
        agents: {U0ALICE: Alice, bob@example.com: Bob}
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.adapter import ChannelConfig

_CHANNEL = re.compile(r"^([CGD][A-Z0-9]{2,}|#[a-z0-9][a-z0-9_-]{0,79})$")


class SlackConfig(ChannelConfig):
    bot_token: SecretStr
    signing_secret: SecretStr | None = None  # required for mode "events"
    app_token: SecretStr | None = None  # required for mode "socket"
    mode: Literal["events", "socket"] = "events"
    base_url: str = "https://slack.com/api/"
    events_path: str = "/slack/events"
    files_path: str = "/slack/files"  # signed links to files agents share, for the customer's channel
    file_link_ttl_s: int = Field(7 * 86400, ge=60)
    max_file_bytes: int = Field(50 * 1024 * 1024, ge=1)
    timeout_s: float = Field(10.0, gt=0)  # one Web API call
    ack_timeout_s: float = Field(2.5, gt=0, le=3.0)  # Slack wants its HTTP 200 within 3 s

    agents_channel: str
    urgent_channel: str | None = None  # None: urgent threads go to agents_channel too
    urgent_mention: str | None = None  # None: agents.urgent_mention from the bridge settings
    # queue name -> channel (beats queues.<name>.slack_channel)
    queue_channels: dict[str, str] = Field(default_factory=dict)
    urgency_channels: dict[str, str] = Field(default_factory=dict)  # "urgent"/"routine" -> channel

    replies: Literal["default_out", "explicit"] = "default_out"
    note_prefixes: list[str] = Field(default_factory=lambda: ["note:"])
    reply_markers: list[str] = Field(default_factory=lambda: ["reply:", ">>"])
    command_prefix: str = "!"
    record_notes: bool = True  # publish notes as command "note" (kept internal) instead of dropping them
    agents: dict[str, str] = Field(default_factory=dict)  # Slack user id or email -> the name customers see
    thread_ttl_days: int = Field(180, ge=1)  # how long a conversation remembers its thread

    @field_validator("bot_token")
    @classmethod
    def _bot_token_shape(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("xoxb-"):
            raise ValueError("a bot token starts with xoxb- (Slack app > OAuth & Permissions > Bot User OAuth Token)")
        return value

    @field_validator("app_token")
    @classmethod
    def _app_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError("an app-level token starts with xapp- (Slack app > Basic Information > App-Level Tokens)")
        return value

    @field_validator("agents_channel", "urgent_channel")
    @classmethod
    def _channel_shape(cls, value: str | None) -> str | None:
        if value is not None and not _CHANNEL.match(value):
            raise ValueError(f"{value!r} is not a Slack channel id (C0123ABCD) or #name")
        return value

    @field_validator("queue_channels", "urgency_channels")
    @classmethod
    def _channels_shape(cls, value: dict[str, str]) -> dict[str, str]:
        for key, channel in value.items():
            if not _CHANNEL.match(channel):
                raise ValueError(f"{key}: {channel!r} is not a Slack channel id (C0123ABCD) or #name")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must be an http(s) URL such as https://slack.com/api/")
        return value if value.endswith("/") else value + "/"

    @model_validator(mode="after")
    def _mode_needs(self) -> SlackConfig:
        if self.mode == "events" and self.signing_secret is None:
            raise ValueError("mode events needs signing_secret (Slack app > Basic Information > Signing Secret)")
        if self.mode == "socket" and self.app_token is None:
            raise ValueError("mode socket needs app_token (an xapp- token with connections:write)")
        if not self.note_prefixes or any(not p.strip() for p in self.note_prefixes):
            raise ValueError("note_prefixes needs at least one non-empty prefix, such as 'note:'")
        if self.replies == "explicit" and (not self.reply_markers or any(not m.strip() for m in self.reply_markers)):
            raise ValueError("replies: explicit needs non-empty reply_markers, such as 'reply:'")
        return self
