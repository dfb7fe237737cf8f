"""A channel that delivers instantly and keeps nothing: for benchmarks and dry runs."""

from __future__ import annotations

from typing import ClassVar

from bridge.adapter import Adapter, ChannelConfig, Delivered
from bridge.model import Message


class NullConfig(ChannelConfig):
    pass


class NullAdapter(Adapter):
    name = "null"
    config_model = NullConfig
    side = "both"
    default_rate_per_s: ClassVar[float | None] = None

    async def send(self, message: Message) -> Delivered:
        return Delivered(platform_id=message.id)
