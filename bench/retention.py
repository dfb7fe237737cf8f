"""Redis memory after N closed conversations, with and without retention.

    python -m bench.retention [--n 500 2000 5000] [--keep-days 30]

For each N, a fresh private redis-server and SQLite history: N customers write once, each
conversation is resolved, the projector writes it all to SQL and the acknowledged stream entries are trimmed;
then Redis' used_memory is read (without retention: what stays forever). The clock then moves past
``history.keep_in_redis_days``; the projector's retention drops the conversations, their
addresses (pointer, counter), their contacts and the queued cases from Redis, and once no key
naming a customer is left (their thread refs included: the null channel returns one per
send here, as Slack and email do), used_memory is read again. Flat means: what is left after retention
does not grow with N (a returning customer is found in SQL and loaded back).

Keys that expire by themselves (dedupe keys, the dispatcher's daily sent records, commit marks:
their TTLs run on Redis' clock, which the bench does not move) are counted apart (``of which
TTL``); the per-conversation figure after retention leaves them out.
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
from bridge.store import Store

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


async def run(n: int, keep_days: float) -> tuple[float, float, float, float]:
    """Redis MB before any conversation, after N closed ones, after retention, and the MB
    of keys with a TTL after retention."""
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
        bridge = Bridge(settings, {"null": NullConfig(refs=True)}, clock_ms=clock)
        try:
            await bridge.start()
            empty = await used_mb(redis)
            for first in range(0, n, 200):
                await bridge.bus.publish_many([Message(kind="customer", channel="null", address=f"c-{i}",
                                                       text=f"Where is my order {i}? It was due last week.")
                                               for i in range(first, min(n, first + 200))])
            await wait(lambda: _count(bridge.store, "open", n), "every conversation opened")
            ids = await bridge.store.ids_with_status("open")
            for first in range(0, n, 200):
                await bridge.bus.publish_many([Message(kind="command", channel="null", name="resolve",
                                                       conversation_id=c) for c in ids[first:first + 200]])
            await wait(lambda: _count(bridge.store, "resolved", n), "every conversation resolved")
            assert bridge.projector is not None
            await wait(lambda: _projected(bridge), "the history caught up")
            await wait(lambda: _trimmed(redis), "acknowledged stream entries trimmed")
            closed = await used_mb(redis)
            clock.offset_ms += int((keep_days + 1) * DAY_MS)
            await wait(lambda: _count(redis, "resolved", 0), "retention")
            await wait(lambda: _no_customer_left(redis), "every customer's keys dropped")
            retained = await used_mb(redis)
            return empty, closed, retained, await _expiring_mb(redis)
        finally:
            await bridge.stop()
            await redis.aclose()
            process.terminate()
            process.wait()


async def _count(store: Store, status: str, n: int) -> bool:
    return await store.count_with_status(status) == n


CUSTOMER_KEYS = [keys.PREFIX + f"{kind}:*" for kind in ("conv", "transcript", "addr", "convseq", "refs")] + [
    keys.contact("*"), keys.contact_by_address("*", "*"), keys.ref("*")]  # NullConfig(refs=True): a thread ref per send


async def _no_customer_left(redis: aioredis.Redis) -> bool:
    for pattern in CUSTOMER_KEYS:
        async for _ in redis.scan_iter(match=pattern, count=1000):
            return False
    return not await Store(redis, partitions=8).queued("default")


async def _expiring_mb(redis: aioredis.Redis) -> float:
    """MB held by keys that expire by themselves."""
    total = 0
    async for key in redis.scan_iter(count=1000):
        if int(await redis.ttl(key)) > 0:
            total += int(await redis.memory_usage(key) or 0)
    return total / 1e6


async def _trimmed(redis: aioredis.Redis) -> bool:
    streams = [keys.inbound(p, 8) for p in range(8)] + [keys.outbox(p, 8) for p in range(8)]
    streams += keys.outbound_streams("null", 8)
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
    parser.add_argument("--n", type=int, nargs="+", default=[500, 2_000, 5_000])
    parser.add_argument("--keep-days", type=float, default=30.0)
    args = parser.parse_args()
    print(f"{'closed':>7} {'no retention':>13} {'retention':>10} {'of which TTL':>13} {'without TTL':>12}"
          f" {'bytes per conversation':>23} {'growth from the N before':>25}")
    previous: tuple[int, float] | None = None
    for n in args.n:
        empty, closed, retained, expiring = asyncio.run(run(n, args.keep_days))
        kept = retained - empty - expiring
        growth = f"{(kept - previous[1]) * 1e6 / (n - previous[0]):,.0f} B each" if previous else ""
        print(f"{n:>7,} {closed - empty:>10.2f} MB {retained - empty:>7.2f} MB {expiring:>10.2f} MB {kept:>9.2f} MB"
              f" {(closed - empty) * 1e6 / n:>13,.0f} -> {kept * 1e6 / n:<6,.0f} {growth:>25}")
        previous = (n, kept)
    print("(used_memory above an empty bridge; after retention no key names a customer. TTL: keys that expire by"
          " themselves, on Redis' clock, left out of 'without TTL'. Flat: no growth from one N to the next)")

if __name__ == "__main__":
    main()
