"""Run the Telegram adapter's receiving side alone, with a real AdapterContext over Redis.

Used by the Telegram tests in-process (`make_context`) and as a subprocess that a test
SIGKILLs between fetching updates and storing them:

    python -m tests.telegram_poller REDIS_URL BASE_URL BASE_FILE_URL TOKEN

It polls until SIGTERM. ``BRIDGE_FAILPOINTS=ingest.after_fetch`` (or
``telegram.after_publish``) makes it kill itself at that point, as a power cut would.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import redis.asyncio as aioredis

from adapters.telegram.adapter import TelegramAdapter
from adapters.telegram.config import TelegramConfig
from bridge.adapter import AdapterContext, HealthState
from bridge.bus import Bus
from bridge.connection import close
from bridge.context import RedisFanout, RedisState
from bridge.store import Store

PARTITIONS = 4


def make_context(redis: aioredis.Redis, channel: str = "telegram",
                 health: list[tuple[str, str]] | None = None) -> tuple[AdapterContext, Bus]:
    """A real context: publish through the bus (dedupe keys), state in Redis."""
    bus = Bus(redis, partitions=PARTITIONS)
    reports = health if health is not None else []

    async def report_health(state: HealthState, detail: str) -> None:
        reports.append((state, detail))

    ctx = AdapterContext(publish=bus.publish, state=RedisState(redis, channel),
                         conversations=Store(redis, partitions=PARTITIONS),
                         fanout=RedisFanout(redis), report_health=report_health)
    return ctx, bus


def make_config(base_url: str, base_file_url: str, token: str, **overrides: Any) -> TelegramConfig:
    values: dict[str, Any] = {"token": token, "base_url": base_url, "base_file_url": base_file_url,
                              "poll_timeout_s": 1, "read_timeout_s": 2.0, "connect_timeout_s": 2.0}
    values.update(overrides)
    return TelegramConfig.model_validate(values)


async def main(redis_url: str, base_url: str, base_file_url: str, token: str) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    ctx, _ = make_context(redis)
    adapter = TelegramAdapter(make_config(base_url, base_file_url, token), ctx)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await adapter.start()
    print("started", flush=True)
    await stop.wait()
    await adapter.stop()
    await close(redis)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
