"""A channel that delivers instantly and keeps nothing: for benchmarks and dry runs."""

from __future__ import annotations

from typing import ClassVar

from bridge.adapter import Adapter, Capabilities, ChannelConfig, Delivered
from bridge.model import Message


class NullConfig(ChannelConfig):
    pass


class NullAdapter(Adapter):
    name = "null"
    config_model = NullConfig
    side = "both"
    capabilities = Capabilities()  # keeps nothing, shows nothing
    default_rate_per_s: ClassVar[float | None] = None
    default_max_in_flight: ClassVar[int] = 1024  # nothing leaves the process: no platform to spare

    async def send(self, message: Message) -> Delivered:
        # a ref per send, as Slack's thread ts or an email's Message-ID: the bench sees refs grow or not
        return Delivered(platform_id=message.id, ref=f"null:{message.id}")
