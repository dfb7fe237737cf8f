"""Configuration of the Telegram channel (``channels.telegram``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.adapter import ChannelConfig

_TOKEN = re.compile(r"^\d{3,}:[A-Za-z0-9_-]{20,}$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class TelegramConfig(ChannelConfig):
    """``channels.telegram``: a bot customers write to (token from @BotFather)."""

    #: the bot token from @BotFather (``${TELEGRAM_TOKEN}``), like ``123456789:AAE...``
    token: SecretStr
    #: "polling" needs no public URL; "webhook" needs ``http.public_url`` reachable by Telegram
    mode: Literal["polling", "webhook"] = "polling"
    #: Bot API endpoints; point them at a local Bot API server (or a fake in tests)
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    local_mode: bool = False  # a local Bot API server started with --local
    #: long polling: how long Telegram holds an empty getUpdates open, and the batch size
    poll_timeout_s: int = Field(30, ge=0, le=50)
    poll_limit: int = Field(100, ge=1, le=100)
    #: webhook mode: Telegram sends this in X-Telegram-Bot-Api-Secret-Token (``${TELEGRAM_WEBHOOK_SECRET}``)
    webhook_secret: SecretStr | None = None
    webhook_path: str = "/telegram/webhook"
    #: the URL Telegram posts to; ``<http.public_url><webhook_path>`` when unset
    webhook_url: str | None = None
    #: register the webhook URL with Telegram at start (setWebhook); off when an operator does it
    set_webhook: bool = True
    #: answer /start with a greeting in the customer's language (language -> text, merged
    #: over the built-in greetings)
    greet_on_start: bool = True
    greeting: dict[str, str] = Field(default_factory=dict)
    #: inline keyboards for buttons; off: buttons are listed as numbered text lines
    buttons: bool = True
    #: put the agent's name on the first line of an agent's reply
    show_agent_name: bool = True
    #: HTTP timeouts of Bot API calls (sends; long polls add poll_timeout_s)
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(10.0, gt=0)
    write_timeout_s: float = Field(10.0, gt=0)
    media_write_timeout_s: float = Field(60.0, gt=0)
    #: outbound attachments are fetched by the bridge and uploaded; bigger ones are refused
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1)
    #: files customers send reach agents as signed links to the bridge, fetched from Telegram
    #: when opened (the Bot API hands out files of up to 20 MB)
    files_path: str = "/telegram/files"
    file_link_ttl_s: int = Field(30 * 86400, ge=60)
    max_file_bytes: int = Field(20 * 1024 * 1024, ge=1)

    @field_validator("token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        if not _TOKEN.match(value.get_secret_value()):
            raise ValueError("not a Telegram bot token (digits, a colon, then the secret, as @BotFather gives it)")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _SECRET.match(value.get_secret_value()):
            raise ValueError("1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule for secret_token)")
        return value

    @field_validator("webhook_path", "files_path")
    @classmethod
    def _path_shape(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("a path on the bridge's web server, starting with /")
        return value

    @field_validator("base_url", "base_file_url")
    @classmethod
    def _url_shape(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError("an http(s) URL such as https://api.telegram.org/bot")
        return value

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> TelegramConfig:
        if self.mode == "webhook" and self.webhook_secret is None:
            raise ValueError(
                "webhook_secret is required in webhook mode: write ${TELEGRAM_WEBHOOK_SECRET} and export it"
            )
        return self
