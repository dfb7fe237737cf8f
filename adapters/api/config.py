from __future__ import annotations

from pydantic import Field, SecretStr

from bridge.adapter import ChannelConfig


class ApiConfig(ChannelConfig):
    token: SecretStr  # clients send "Authorization: Bearer <token>"
    webhook_url: str | None = None  # replies are POSTed here; none: replies are dead-lettered
    webhook_secret: SecretStr | None = None  # HMAC-SHA256 key for X-Bridge-Signature
    max_message_bytes: int = Field(64 * 1024, ge=256, le=16 * 1024 * 1024)
    webhook_timeout_s: float = Field(10.0, gt=0)
