"""Redis memory after N closed conversations, with and without retention.

    python -m bench.retention [--n 2000 5000] [--keep-days 30]

For each N, a fresh private redis-server and SQLite history: N customers write once, each
conversation is resolved, the projector writes it all to SQL and the acknowledged stream entries are trimmed;
then Redis' used_memory is read (without retention: what stays forever today). The clock then moves past
``history.keep_in_redis_days`` and the projector's retention drops the conversations from
Redis; used_memory is read again. What stays per conversation: its address pointer, its
contact and the address's counter, so a returning customer is found and the conversation
loaded back from SQL.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from adapters.null import NullConfig
from bench.__main__ import start_redis
from bridge import keys
from bridge.config import Settings
from bridge.model import Message
from bridge.runner import Bridge

DAY_MS = 86_400_000


class Clock:
    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms


async def wait(predicate: object, what: str, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"bench.retention: timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def used_mb(redis: aioredis.Redis) -> float:
    return int((await redis.info("memory"))["used_memory"]) / 1e6


async def run(n: int, keep_days: float) -> tuple[float, float, float]:
    """Redis MB before any conversation, after N closed ones, and after retention."""
    with tempfile.TemporaryDirectory() as scratch:
        process, url = await start_redis(Path(scratch))
        redis = aioredis.Redis.from_url(url)
        clock = Clock()
        settings = Settings.model_validate({
            "redis": {"url": url, "data_dir": scratch},
            "roles": ["engine", "dispatch", "projector"],
            "engine": {"partitions": 8, "block_ms": 50},
            "history": {"keep_in_redis_days": keep_days, "retention_interval_s": 0.5},
            "streams": {"max_len": 0, "trim_interval_s": 0.5},  # acknowledged entries go at once
            "log": {"level": "WARNING"},
        })
        bridge = Bridge(settings, {"null": NullConfig()}, clock_ms=clock)
        try:
            await bridge.start()
            empty = await used_mb(redis)
            for first in range(0, n, 200):
                await bridge.bus.publish_many([Message(kind="customer", channel="null", address=f"c-{i}",
                                                       text=f"Where is my order {i}? It was due last week.")
                                               for i in range(first, min(n, first + 200))])
            await wait(lambda: _count(redis, "open", n), "every conversation opened")
            ids = [i.decode() for i in await redis.zrange(keys.CONVERSATIONS_BY_STATUS + "open", 0, -1)]
            for first in range(0, n, 200):
                await bridge.bus.publish_many([Message(kind="command", channel="null", name="resolve",
                                                       conversation_id=c) for c in ids[first:first + 200]])
            await wait(lambda: _count(redis, "resolved", n), "every conversation resolved")
            assert bridge.projector is not None
            await wait(lambda: _projected(bridge), "the history caught up")
            await wait(lambda: _trimmed(redis), "acknowledged stream entries trimmed")
            closed = await used_mb(redis)
            clock.offset_ms += int((keep_days + 1) * DAY_MS)
            await wait(lambda: _count(redis, "resolved", 0), "retention")
            retained = await used_mb(redis)
            return empty, closed, retained
        finally:
            await bridge.stop()
            await redis.aclose()
            process.terminate()
            process.wait()


async def _count(redis: aioredis.Redis, status: str, n: int) -> bool:
    return int(await redis.zcard(keys.CONVERSATIONS_BY_STATUS + status)) == n


async def _trimmed(redis: aioredis.Redis) -> bool:
    streams = [keys.inbound(p) for p in range(8)] + [keys.outbox(p) for p in range(8)] + [keys.outbound("null")]
    async with redis.pipeline(transaction=False) as pipe:
        for stream in streams:
            pipe.xlen(stream)
        return sum(await pipe.execute()) == 0


async def _projected(bridge: Bridge) -> bool:
    from bridge.history.projector import backlog

    waiting, _ = await backlog(bridge.bus, bridge.settings.engine.partitions, 0)
    return waiting == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1_000, 4_000])
    parser.add_argument("--keep-days", type=float, default=30.0)
    args = parser.parse_args()
    print(f"{'closed conversations':>21} {'Redis MB, no retention':>23} {'Redis MB, retention':>20}"
          f" {'per conversation (bytes)':>25}")
    for n in args.n:
        empty, closed, retained = asyncio.run(run(n, args.keep_days))
        print(f"{n:>21,} {closed - empty:>23.2f} {retained - empty:>20.2f} "
              f"{(closed - empty) * 1e6 / n:>12,.0f} -> {(retained - empty) * 1e6 / n:,.0f}")
    print("(used_memory above an empty bridge; retention keeps each address pointer, contact and counter)")


if __name__ == "__main__":
    main()
