"""A channel that delivers instantly and keeps nothing: for benchmarks and dry runs."""

from __future__ import annotations

from typing import ClassVar

from bridge.adapter import Adapter, Capabilities, ChannelConfig, Delivered
from bridge.model import Message


class NullConfig(ChannelConfig):
    refs: bool = False  # each send returns a thread ref, as a Slack thread or a sent email's Message-ID


class NullAdapter(Adapter):
    name = "null"
    config_model = NullConfig
    config: NullConfig
    side = "both"
    capabilities = Capabilities()  # keeps nothing, shows nothing
    default_rate_per_s: ClassVar[float | None] = None
    default_max_in_flight: ClassVar[int] = 1024  # nothing leaves the process: no platform to spare

    async def send(self, message: Message) -> Delivered:
        return Delivered(platform_id=message.id, ref=f"null:{message.id}" if self.config.refs else "")
