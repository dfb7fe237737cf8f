"""The ``channels.email`` section of the config."""

from __future__ import annotations

import os
import ssl
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.adapter import ChannelConfig


class EmailConfig(ChannelConfig):
    """Email in over IMAP, out over SMTP. Passwords must be ``${ENV}`` references."""

    address: str  # our support address: From of what we send, plus-addressed for Reply-To tokens
    from_name: str = "Support"
    also_ours: list[str] = Field(default_factory=list)  # other addresses of ours (never answered, never a customer)

    imap_host: str | None = None  # unset: send-only (no inbound mail)
    imap_port: int = Field(993, ge=1, le=65535)
    imap_tls: Literal["tls", "starttls", "none"] = "tls"  # implicit TLS (993), STARTTLS (143), or plain
    imap_user: str | None = None
    imap_password: SecretStr | None = None
    imap_mailbox: str = "INBOX"
    imap_timeout_s: float = Field(30.0, gt=0)
    idle: bool = True  # use IDLE when the server has it; else poll
    idle_renew_s: float = Field(25 * 60, gt=0, le=29 * 60)  # servers drop IDLE after 30 min
    poll_interval_s: float = Field(60.0, gt=0)
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(300.0, gt=0)
    start_from: Literal["new", "all"] = "new"  # first run: only mail arriving from now on, or the whole mailbox
    mark_seen: bool = True  # set \\Seen on mail once it is stored (the UID watermark decides, not this)
    resync_dedupe_days: int = Field(30, ge=1)  # how long a Message-ID is remembered for a UIDVALIDITY resync

    smtp_host: str = "localhost"
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_tls: Literal["starttls", "tls", "none"] = "starttls"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = Field(30.0, gt=0)
    tls_verify: bool = True  # verify server certificates (turn off only for a private test server)
    tls_ca_file: str | None = None  # a CA bundle for servers with a private CA (PEM)

    # addresses whose mail is an agent's (their replies to tickets reach the customer)
    agents: list[str] = Field(default_factory=list)
    agent_domains: list[str] = Field(default_factory=list)  # every sender at these domains is an agent
    max_attachment_bytes: int = Field(25 * 1024 * 1024, ge=0)
    max_message_bytes: int = Field(50 * 1024 * 1024, ge=10_000)  # larger mail is read up to this much
    max_text_chars: int = Field(100_000, ge=100)
    # customers' attachments reach agents as signed links to the bridge, read from the
    # mailbox when opened (the key is derived from imap_password)
    files_path: str = "/email/files"
    file_link_ttl_s: int = Field(30 * 86400, ge=60)

    def tls_context(self) -> ssl.SSLContext:
        """The TLS settings for both IMAP and SMTP."""
        context = ssl.create_default_context(cafile=self.tls_ca_file)
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    @field_validator("address")
    @classmethod
    def _one_address(cls, value: str) -> str:
        value = value.strip().lower()
        if "@" not in value or any(c.isspace() for c in value) or "+" in value.split("@")[0]:
            raise ValueError(f"{value!r} is not a plain email address (user@domain, no plus-tag)")
        return value

    @field_validator("agents", "also_ours")
    @classmethod
    def _lower(cls, value: list[str]) -> list[str]:
        return [v.strip().lower() for v in value]

    @field_validator("agent_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [v.strip().lower().lstrip("@") for v in value]

    @model_validator(mode="after")
    def _imap_login(self) -> EmailConfig:
        if self.imap_host and not (self.imap_user and self.imap_password):
            raise ValueError("imap_host is set: imap_user and imap_password (${ENV}) are required too")
        if (self.smtp_user is None) != (self.smtp_password is None):
            raise ValueError("smtp_user and smtp_password (${ENV}) go together")
        if self.tls_ca_file and not os.path.isfile(self.tls_ca_file):
            raise ValueError(f"tls_ca_file: no such file {self.tls_ca_file!r}")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        return self
