"""Each stage of the hot path alone: what publish, the engine and the dispatcher cost per
message, without the others running beside them.

    python -m bench.stages [--n 100000]

One private redis-server (as `python -m bench`). 1,000 conversations are opened first
(the whole pipeline); then N messages are published by a bridge with the ``ingest`` role
only; then a bridge with only the ``engine`` role handles them all; then one with only
``dispatch`` delivers what the engine wrote (null channel). Each line gives the stage's
messages per second, its Python CPU and redis-server CPU per message; their sum is what
the three cost when nothing else competes (`python -m bench` runs them together). Under
each line, the stage's redis-server time by command (µs and calls per message; a Lua call's
time includes the commands it ran, also counted under their own names; the stage's own
"is it done" polling shows as xinfo).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis

from adapters.null import NullConfig
from bench.__main__ import bridge_settings, command_stats, redis_cpu_s, start_redis, stats_per_message
from bridge import keys
from bridge.bus import Bus
from bridge.config import Settings
from bridge.model import Message
from bridge.runner import Bridge, settle_heap

CONVERSATIONS = 1_000
TEXTS = ["Where is my order?", "Please send the invoice", "The board arrived, thanks", "Any update on this?"]


def settings(url: str, roles: list[str]) -> Settings:
    return Settings.model_validate({**bridge_settings(url, CONVERSATIONS).model_dump(), "roles": roles})


async def stage(redis: aioredis.Redis, url: str, name: str, roles: list[str], n: int,
                done: Callable[[Bridge], Awaitable[bool]], publish: range | None = None) -> None:
    bridge = Bridge(settings(url, roles), {"null": NullConfig()})
    await bridge.start()
    settle_heap()
    try:
        commands = await command_stats(redis)
        cpu, process, started = await redis_cpu_s(redis), time.process_time(), time.perf_counter()
        if publish is not None:
            for first in publish:
                await bridge.bus.publish_many([
                    Message(kind="customer", channel="null", address=f"s-{i % CONVERSATIONS}", text=TEXTS[i % 4],
                            dedupe_key=f"null:s:{i}") for i in range(first, min(first + 100, publish.stop))])
        while not await done(bridge):  # noqa: ASYNC110 - the stage's end is read from Redis
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - started
        print(f"{name:<10} {n / elapsed:>10,.0f} msg/s {(time.process_time() - process) / n * 1e6:>8.1f} "
              f"{(await redis_cpu_s(redis) - cpu) / n * 1e6:>8.1f}", flush=True)
        print(f"{'':<10} {stats_per_message(commands, await command_stats(redis), n, top=12)}", flush=True)
    finally:
        await bridge.stop()


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        process, url = await start_redis(Path(scratch))
        redis = aioredis.Redis.from_url(url)
        try:
            def delivered(count: int) -> Callable[[Bridge], Awaitable[bool]]:
                async def check(bridge: Bridge) -> bool:
                    return sum(d.delivered for d in bridge.dispatchers) >= count
                return check

            async def engine_idle(_: Bridge) -> bool:
                for p in range(8):
                    for group in await redis.xinfo_groups(keys.inbound(p, 8)):
                        if group["lag"] or group["pending"]:
                            return False
                return True

            async def published(_: Bridge) -> bool:
                return True

            print(f"{'':<10} {'throughput':>16} {'python µs':>8} {'redis µs':>8}  (per message)")
            await stage(redis, url, "warm-up", ["ingest", "engine", "dispatch"], CONVERSATIONS,
                        delivered(2 * CONVERSATIONS), range(0, CONVERSATIONS, 100))
            await stage(redis, url, "publish", ["ingest"], n, published, range(CONVERSATIONS, CONVERSATIONS + n, 100))
            partitions = bridge_settings(url, CONVERSATIONS).engine.partitions
            before = await outbound_length(redis, partitions)
            await stage(redis, url, "engine", ["engine"], n, engine_idle)
            written = await outbound_length(redis, partitions) - before
            await stage(redis, url, "dispatch", ["dispatch"], n, delivered(written))
        finally:
            await redis.aclose()
            process.terminate()
            process.wait()


async def outbound_length(redis: aioredis.Redis, partitions: int) -> int:
    """Messages in the null channel's outbound streams (a commit's to a stream: one entry)."""
    bus = Bus(redis, partitions=partitions)
    return sum([len(await bus.entries(stream)) for stream in keys.outbound_streams("null", partitions)])


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="messages through each stage")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.n))


if __name__ == "__main__":
    cli()
