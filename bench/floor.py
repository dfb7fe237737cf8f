"""The bridge's stream mechanics alone, beside the raw loop: what the ratio of
`python -m bench` would be for a bridge with none of its features.

    python -m bench.floor [--n 100000] [--repeat 3]

One private redis-server (as `python -m bench`), one process, uvloop. The skeleton keeps
what makes the bridge lose and double nothing, through the bridge's own `Bus`: publishing
with the dedupe script (one call per partition, pipelined); an engine-shaped loop that
reads the partitions (XREADGROUP), decodes each message, and per partition commits one
fenced transaction (its lease read under WATCH) that appends the message to a transcript,
writes one event to the partition's outbound stream and acks; a dispatcher-shaped loop
that reads the outbound streams, decodes, and commits the sent record and the acks,
fenced by their leases. Left out: the flow steps, conversation state and its caches and
indexes, contacts, history's outbox, lanes and pacing, metrics. The Python and the
redis-server time per message the features add is the gap between this and `python -m
bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from bench.__main__ import raw_run, redis_cpu_s, start_redis
from bench.stages import CONVERSATIONS, TEXTS
from bridge import keys
from bridge.bus import Bus, Entry, decode_entries
from bridge.config import Settings
from bridge.connection import connect
from bridge.model import Message, encode
from bridge.ops import Ops

OWNER = "floor"


def _by_stream(entries: list[Entry]) -> dict[str, list[Entry]]:
    grouped: dict[str, list[Entry]] = {}
    for entry in entries:
        grouped.setdefault(entry.stream, []).append(entry)
    return grouped


async def skeleton_run(bus: Bus, n: int, tag: str) -> float:
    """Messages per second through publish, the engine-shaped and the dispatcher-shaped loop."""
    partitions = bus.partitions
    inbound = [keys.inbound(p, partitions) for p in range(partitions)]
    outbound = [keys.outbound("null", p, partitions) for p in range(partitions)]
    delivered = 0

    async def engine() -> None:
        while delivered < n:
            for stream, entries in _by_stream(await bus.read(inbound, "engine", OWNER, count=100,
                                                             block_ms=100)).items():
                out = outbound[inbound.index(stream)]
                ops: Ops = []
                for entry, message in decode_entries(entries)[0]:
                    conversation = f"{message.partition_key}-1"
                    ops.append(("RPUSH", keys.transcript(conversation, partitions), entry.payload))
                    event = Message(kind="event", channel="null", name="customer_message", text=message.text,
                                    conversation_id=conversation, reply_to=message.id, created_ms=message.created_ms)
                    ops.append(("XADD", out, "*", keys.PAYLOAD_FIELD, encode(event)))
                ops += bus.ack_ops(stream, "engine", entries)
                await bus.commit(ops, leases=[keys.lease(stream)], owner=OWNER)

    async def dispatch() -> None:
        nonlocal delivered
        while delivered < n:
            entries = await bus.read(outbound, "dispatch", OWNER, count=100, block_ms=100)
            ops: Ops = []
            for stream, read in _by_stream(entries).items():
                sent = [(message.id, "-") for _, message in decode_entries(read)[0]]
                ops += bus.sent_ops(stream, 0, sent, keep_days=1)
                ops += bus.ack_ops(stream, "dispatch", read)
            if ops:
                await bus.commit(ops, leases=[keys.lease(s) for s in outbound], owner=OWNER)
            delivered += len(entries)

    async def produce() -> None:
        for first in range(0, n, 100):
            await bus.publish_many([Message(kind="customer", channel="null", address=f"{tag}-{i % CONVERSATIONS}",
                                            text=TEXTS[i % len(TEXTS)], dedupe_key=f"null:{tag}:{i}")
                                    for i in range(first, min(first + 100, n))])

    started = time.perf_counter()
    await asyncio.gather(produce(), engine(), dispatch())
    return n / (time.perf_counter() - started)


async def main(n: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        process, url = await start_redis(Path(scratch))
        plain = aioredis.Redis.from_url(url)
        redis = connect(Settings.model_validate({"redis": {"url": url}}).redis, url)
        try:
            bus = Bus(redis, partitions=Settings().engine.partitions)
            streams = [*(keys.inbound(p, bus.partitions) for p in range(bus.partitions)),
                       *(keys.outbound("null", p, bus.partitions) for p in range(bus.partitions))]
            for stream in streams:
                await bus.ensure_group(stream, "dispatch" if stream.startswith(keys.OUTBOUND) else "engine")
                await plain.set(keys.lease(stream), OWNER)  # held for the run (no keeper: nothing takes it)
            print(f"{'':<10} {'raw msg/s':>10} {'skeleton':>10} {'python µs':>10} {'redis µs':>9} {'ratio':>6}",
                  flush=True)
            ratios = []
            for run in range(repeat):
                raw, _ = await raw_run(plain, n, None, f"floor{run}")
                cpu, python = await redis_cpu_s(plain), time.process_time()
                ours = await skeleton_run(bus, n, f"r{run}-{time.monotonic_ns()}")
                ratios.append(ours / raw)
                python_us = (time.process_time() - python) / n * 1e6
                redis_us = (await redis_cpu_s(plain) - cpu) / n * 1e6
                print(f"run {run + 1:<6} {raw:>10,.0f} {ours:>10,.0f} {python_us:>10.1f} {redis_us:>9.1f} "
                      f"{ours / raw:>6.2f}", flush=True)
            print(f"skeleton/raw throughput ratio: {sorted(ratios)[len(ratios) // 2]:.2f}")
        finally:
            await redis.aclose()
            await plain.aclose()
            process.terminate()
            process.wait()


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="messages per run")
    parser.add_argument("--repeat", type=int, default=3, metavar="N", help="raw/skeleton pairs; the median ratio last")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.n, args.repeat))


if __name__ == "__main__":
    cli()
