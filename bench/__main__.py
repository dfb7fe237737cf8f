"""Benchmark: the bridge's hot path against a raw redis-py loop on the same Redis.

    python -m bench [--n 100000] [--conversations 1000] [--rate 5000] [--repeat N] [--redis-url URL] [--cluster]

Both sides run in this one process against one redis-server (a private one on a Unix
socket unless --redis-url is given):

* raw: pipelined XADD -> XREADGROUP -> XADD -> XACK, no bridge code;
* bridge: publish (dedupe Lua) -> engine (conversation lookup, state, transcript, keyword
  triage, routing, one fenced commit per partition batch) -> outbound stream -> dispatcher
  (null adapter: record, ack). The multilingual triage (language detection, phrases per
  language, the learned model) costs far more than the rest of the path together; its
  throughput is printed on a line of its own, and ``python -m bench.triage_quality``
  prints its cost per message.

Throughput is N messages pushed as fast as the producer can; latency is measured at a
paced rate (inbound append -> outbound append, from the stream entry ids, so it is
millisecond-grained). Redis cost per message is the redis-server's CPU time (INFO cpu)
and the requests the client sent (a pipeline or a Lua call is one round trip), both over
the throughput run, and where that time goes by command (INFO commandstats: each command's
time as the server clocks it, so the figures run a little above the CPU time on a busy
machine). The throughput runs come in raw/bridge pairs, one right after the other
(``--repeat``, three unless told): each of their figures is the median of the pairs (the
commands those of the pair with the median redis-server CPU), since the machine's speed
moves from one minute to the next. The last line reads ``bridge/raw throughput ratio: X.XX``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection

from adapters.null import NullConfig
from bench.isolation import isolation_rows, print_rows
from bridge import keys
from bridge.bus import entry_of
from bridge.config import Settings
from bridge.model import Message, decode
from bridge.runner import Bridge, settle_heap

BATCH = 100


def rss_mb(pid: int | None = None) -> float:
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def current_rss_mb() -> float:
    return rss_mb(os.getpid())


def entry_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def percentile(values: list[int], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))])


async def produce(n: int, rate: float | None, push: Callable[[int, int], Awaitable[None]]) -> None:
    """Push n messages in batches, as fast as possible or at ``rate`` per second."""
    start = time.perf_counter()
    sent = 0
    while sent < n:
        count = min(BATCH if rate is None else max(1, int(rate / 200)), n - sent)
        await push(sent, count)
        sent += count
        if rate is not None:
            ahead = sent / rate - (time.perf_counter() - start)
            if ahead > 0:
                await asyncio.sleep(ahead)


# -- raw redis-py loop -------------------------------------------------------------------


async def raw_run(redis: aioredis.Redis, n: int, rate: float | None, tag: str) -> tuple[float, list[int]]:
    inbound, outbound, group = f"raw:{tag}:in", f"raw:{tag}:out", "g"
    await redis.delete(inbound, outbound)
    await redis.xgroup_create(inbound, group, id="0", mkstream=True)
    payload = b"x" * 60

    async def push(first: int, count: int) -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(first, first + count):
                pipe.xadd(inbound, {"m": payload, "i": i})
            await pipe.execute()

    done = 0

    async def consume() -> None:
        nonlocal done
        while done < n:
            reply = await redis.xreadgroup(group, "c", {inbound: ">"}, count=BATCH, block=100)
            if not reply:
                continue
            entries = reply[0][1]
            async with redis.pipeline(transaction=False) as pipe:
                for entry_id, fields in entries:
                    pipe.xadd(outbound, {"m": fields[b"m"], "in": entry_id})
                pipe.xack(inbound, group, *[e[0] for e in entries])
                await pipe.execute()
            done += len(entries)

    started = time.perf_counter()
    await asyncio.gather(produce(n, rate, push), consume())
    elapsed = time.perf_counter() - started
    latencies = []
    async for chunk in _chunks(redis, outbound):
        for entry_id, fields in chunk:
            latencies.append(entry_ms(entry_id) - entry_ms(fields[b"in"]))
    await redis.delete(inbound, outbound)
    return n / elapsed, latencies


async def _chunks(redis: aioredis.Redis, stream: str, size: int = 10_000) -> Any:
    start = "-"
    while True:
        rows = await redis.xrange(stream, min=start, count=size)
        if not rows:
            return
        yield rows
        last = rows[-1][0].decode()
        ms, seq = last.split("-")
        start = f"{ms}-{int(seq) + 1}"


# -- the bridge --------------------------------------------------------------------------


def bridge_settings(url: str, conversations: int, multilingual: bool = False, history: bool = True) -> Settings:
    return Settings.model_validate({
        # history on (the default): each turn's record also goes to the outbox; no projector
        # runs here, so the cost measured is the hot path's alone
        "history": {"enabled": history},
        "redis": {"url": url},
        "roles": ["ingest", "engine", "dispatch"],
        "engine": {"partitions": 8, "block_ms": 100, "conversation_cache": conversations * 2},
        "streams": {"max_len": 10_000_000, "trim_interval_s": 3600},
        "agents": {"channels": ["null"]},
        "triage": {"urgent_keywords": {"en": ["urgent", "production line stopped"]}},
        "flows": {"triage": {"multilingual": multilingual}},
        "log": {"level": "WARNING"},
    })


async def bridge_run(bridge: Bridge, n: int, rate: float | None, conversations: int, tag: str,
                     rss_samples: list[float] | None = None, outbound_each: int = 1) -> float:
    """Push n customer messages; return messages per second until every resulting outbound
    message was delivered. A conversation's first message causes two (acknowledgement and
    the agents' notice), later ones one (the agents' notice)."""
    texts = ["Where is my order?", "Please send the invoice", "The board arrived, thanks", "Any update on this?"]
    bus = bridge.bus
    run = time.monotonic_ns()

    async def push(first: int, count: int) -> None:
        await bus.publish_many([Message(kind="customer", channel="null", address=f"{tag}-{i % conversations}",
                                        text=texts[i % len(texts)], dedupe_key=f"null:{run}:{i}")
                                for i in range(first, first + count)])

    def delivered() -> int:
        return sum(d.delivered for d in bridge.dispatchers)

    base = delivered()
    started = time.perf_counter()
    producer = asyncio.create_task(produce(n, rate, push))
    marks = {int(n * f / 10) for f in range(1, 11)}
    while delivered() - base < n * outbound_each:
        await asyncio.sleep(0.002)
        if rss_samples is not None and marks and delivered() - base >= min(marks):
            marks.discard(min(marks))
            rss_samples.append(current_rss_mb())
    elapsed = time.perf_counter() - started
    await producer
    return n / elapsed


async def bridge_latencies(redis: aioredis.Redis, partitions: int, since_ms: int, tag: str) -> list[int]:
    """Inbound append -> outbound append, for the messages of one run (by tag)."""
    appended: dict[str, int] = {}
    for p in range(partitions):
        stream = keys.inbound(p, partitions)
        async for chunk in _chunks(redis, stream):
            for entry_id, fields in chunk:
                if entry_ms(entry_id) >= since_ms:
                    for entry in entry_of(stream, entry_id.decode(), fields):  # a batch entry: each message
                        message = decode(entry.payload or b"")
                        if message.address.startswith(tag):
                            appended[message.id] = entry_ms(entry_id)
    latencies = []
    for stream in keys.outbound_streams("null", partitions):
        async for chunk in _chunks(redis, stream):
            for entry_id, fields in chunk:
                if entry_ms(entry_id) >= since_ms:
                    for entry in entry_of(stream, entry_id.decode(), fields):
                        message = decode(entry.payload or b"")
                        if message.kind == "event" and message.reply_to in appended:
                            latencies.append(entry_ms(entry_id) - appended[message.reply_to])
    return latencies


# -- main --------------------------------------------------------------------------------


class RoundTrips:
    """Counts the requests redis-py's connections send (a pipeline, a transaction's send or
    a Lua call is one) while counting: their class's send is wrapped, once, so connections
    a pool made before counting began count too (a subclass for new connections missed a
    running bridge's, and read 0.05 for 0.07)."""

    count = 0
    counting = False

    @classmethod
    def install(cls) -> None:
        send = AbstractConnection.send_packed_command

        async def counted(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
            if cls.counting:
                cls.count += 1
            await send(self, command, check_health)

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]

    @classmethod
    def start(cls) -> None:
        cls.count, cls.counting = 0, True

    @classmethod
    def stop(cls) -> int:
        """The count since `start`."""
        cls.counting = False
        return cls.count


async def command_stats(redis: aioredis.Redis) -> dict[str, tuple[int, int]]:
    """INFO commandstats: command -> (calls, microseconds) since the server started."""
    return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
            for name, v in (await redis.info("commandstats")).items()}


def stats_per_message(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], n: int,
                      top: int = 9) -> str:
    """The commands that took the server's time between two snapshots, busiest first:
    microseconds per message and (calls per message). A Lua call's time includes the commands
    it ran, which are also counted under their own names."""
    rows = sorted(((usec - before.get(name, (0, 0))[1], calls - before.get(name, (0, 0))[0], name)
                   for name, (calls, usec) in after.items() if name != "info"), reverse=True)
    return ", ".join(f"{name} {usec / n:.1f} ({calls / n:.3f})" for usec, calls, name in rows[:top] if calls)


async def redis_cpu_s(redis: aioredis.Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench: redis-server not found (apt-get install redis-server) or pass --redis-url")
    sock = directory / "redis.sock"
    args = [binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no",
            "--dir", str(directory)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)  # noqa: ASYNC220 - once, before measuring
    url = f"unix://{sock}"
    for _ in range(500):
        if sock.exists():
            client = aioredis.Redis.from_url(url)
            try:
                await client.ping()
                await client.aclose()
                return process, url
            except Exception:
                await client.aclose()
        await asyncio.sleep(0.01)
    raise SystemExit("bench: redis-server did not start")


@dataclass(frozen=True)
class Measured:
    """One throughput run: messages per second, and per message the Python and
    redis-server CPU, the round trips and the server's time by command."""

    throughput: float
    python_us: float
    redis_us: float
    trips: float
    commands: str


async def measured(redis: aioredis.Redis, n: int, run: Callable[[], Awaitable[float]]) -> Measured:
    RoundTrips.start()
    stats_before = await command_stats(redis)
    cpu_before = await redis_cpu_s(redis)
    process_before = time.process_time()
    throughput = await run()
    python_us = (time.process_time() - process_before) / n * 1e6
    trips = (RoundTrips.stop() - 2) / n  # less the two INFOs before
    redis_us = (await redis_cpu_s(redis) - cpu_before) / n * 1e6
    commands = stats_per_message(stats_before, await command_stats(redis), n)
    return Measured(throughput, python_us, redis_us, trips, commands)


def median_of(runs: list[Measured], figure: Callable[[Measured], float]) -> float:
    return statistics.median(figure(run) for run in runs)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        process, url = (None, args.redis_url) if args.redis_url else await start_redis(Path(scratch))
        redis = aioredis.Redis.from_url(url)
        await redis.flushdb()
        redis_pid = process.pid if process else None
        isolation: list[tuple[str, str, str]] = []
        pairs: list[tuple[Measured, Measured]] = []  # (raw, bridge), each run right after the other
        try:
            print(f"bench: N={args.n:,} messages, {args.conversations:,} conversations, latency at {args.rate:,}/s, "
                  f"redis {(await redis.info('server'))['redis_version']}, "
                  f"{'uvloop' if args.uvloop else 'asyncio'} event loop", flush=True)
            RoundTrips.install()

            async def raw_throughput(tag: str) -> float:
                return (await raw_run(redis, args.n, None, tag))[0]

            raw = await measured(redis, args.n, lambda: raw_throughput("t"))
            _, raw_lat = await raw_run(redis, args.latency_n, args.rate, "l")
            print(f"  raw loop done: {raw.throughput:,.0f} msg/s", flush=True)

            settings = bridge_settings(url, args.conversations, history=args.history)
            bridge = Bridge(settings, {"null": NullConfig()})
            await bridge.start()
            settle_heap()  # as `bridge run` does
            try:
                await bridge_run(bridge, args.conversations, None, args.conversations, "t", outbound_each=2)
                rss_samples: list[float] = []
                rss_start = current_rss_mb()
                ours = await measured(redis, args.n, lambda: bridge_run(bridge, args.n, None, args.conversations,
                                                                        "t", rss_samples))
                pairs.append((raw, ours))
                print(f"  bridge done: {ours.throughput:,.0f} msg/s", flush=True)
                await bridge_run(bridge, args.conversations, None, args.conversations, "l", outbound_each=2)
                since = int(time.time() * 1000)
                await bridge_run(bridge, args.latency_n, args.rate, args.conversations, "l")
                rss_end = current_rss_mb()
                bridge_lat = await bridge_latencies(redis, settings.engine.partitions, since, "l")
                # more pairs, each run right after the other: on a shared machine the speed
                # moves from minute to minute, and a ratio is only fair within a pair
                for again in range(1, args.repeat):
                    tag = f"t{again}"
                    raw_again = await measured(redis, args.n, lambda: raw_throughput(tag))  # noqa: B023 - awaited here
                    ours_again = await measured(redis, args.n, lambda: bridge_run(bridge, args.n, None,
                                                                                  args.conversations, "t"))
                    pairs.append((raw_again, ours_again))
                    print(f"  pair {again + 1}: raw {raw_again.throughput:,.0f}, bridge {ours_again.throughput:,.0f} "
                          f"msg/s", flush=True)
            finally:
                await bridge.stop()
            redis_rss = rss_mb(redis_pid) if redis_pid else float("nan")
            await redis.flushdb()
            full = Bridge(bridge_settings(url, args.conversations, multilingual=True), {"null": NullConfig()})
            await full.start()
            settle_heap()
            try:
                await bridge_run(full, 50, None, 50, "m", outbound_each=2)  # the model ready
                full_tput = await bridge_run(full, args.triage_n, None, args.conversations, "m")
            finally:
                await full.stop()
            if args.isolation:
                print("  isolation runs (about a minute)...", flush=True)
                isolation = await isolation_rows(url)
        finally:
            await redis.aclose()
            if process is not None:
                process.terminate()
                process.wait()

    raws, bridges = [raw for raw, _ in pairs], [ours for _, ours in pairs]
    middle = sorted(pairs, key=lambda pair: pair[1].redis_us)[len(pairs) // 2]  # its commands are printed
    rows = [
        ("throughput (msg/s)", f"{median_of(raws, lambda m: m.throughput):,.0f}",
         f"{median_of(bridges, lambda m: m.throughput):,.0f}"),
        (f"latency p50 at {args.rate:,}/s (ms)", f"{percentile(raw_lat, 50):.0f}", f"{percentile(bridge_lat, 50):.0f}"),
        (f"latency p99 at {args.rate:,}/s (ms)", f"{percentile(raw_lat, 99):.0f}", f"{percentile(bridge_lat, 99):.0f}"),
        ("latency mean (ms)", f"{statistics.fmean(raw_lat):.2f}", f"{statistics.fmean(bridge_lat):.2f}"),
        ("python CPU per message (us)", f"{median_of(raws, lambda m: m.python_us):.1f}",
         f"{median_of(bridges, lambda m: m.python_us):.1f}"),
        ("redis-server CPU per message (us)", f"{median_of(raws, lambda m: m.redis_us):.1f}",
         f"{median_of(bridges, lambda m: m.redis_us):.1f}"),
        ("redis round trips per message", f"{median_of(raws, lambda m: m.trips):.2f}",
         f"{median_of(bridges, lambda m: m.trips):.2f}"),
    ]
    print()
    print(f"{'':<32} {'raw redis-py':>14} {'bridge':>14}")
    for name, raw, ours in rows:
        print(f"{name:<32} {raw:>14} {ours:>14}")
    print()
    samples = ", ".join(f"{s:.0f}" for s in rss_samples)
    print(f"bridge process RSS (MB): {rss_start:.0f} after warm-up, {samples} at each tenth of N, {rss_end:.0f} at end")
    print(f"redis-server RSS (MB): {redis_rss:.0f} (holds every transcript and stream entry of the run)")
    print("redis-server time per message by command, µs (calls), INFO commandstats; a Lua call (evalsha) "
          "includes the commands it ran, also counted under their names:")
    print(f"  raw:    {middle[0].commands}")
    print(f"  bridge: {middle[1].commands}")
    print(f"bridge with the multilingual triage (the default; language, phrases, model): {full_tput:,.0f} msg/s "
          f"on N={args.triage_n:,}")
    if args.isolation:
        print()
        print_rows(isolation)
    if args.cluster:
        from bench.cluster import cluster_rows  # it uses this module's bridge runs

        print()
        for line in await cluster_rows(args.n, args.conversations):
            print(line)
    ratios = [ours.throughput / raw.throughput for raw, ours in pairs]
    if len(pairs) > 1:
        print(f"redis-server CPU per message of each pair, raw/bridge (µs): "
              f"{', '.join(f'{raw.redis_us:.1f}/{ours.redis_us:.1f}' for raw, ours in pairs)} (the medians above)")
        print(f"bridge/raw ratio of each pair: {', '.join(f'{ratio:.2f}' for ratio in ratios)} (the median below)")
    print(f"bridge/raw throughput ratio: {statistics.median(ratios):.2f}")


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="messages for the throughput runs")
    parser.add_argument("--conversations", type=int, default=1_000)
    parser.add_argument("--rate", type=int, default=5_000, help="messages per second for the latency runs")
    parser.add_argument("--latency-n", type=int, default=25_000, help="messages for the latency runs")
    parser.add_argument("--triage-n", type=int, default=2_000, help="messages for the multilingual triage run")
    parser.add_argument("--redis-url", help="use this Redis instead of a private redis-server (it is flushed!)")
    parser.add_argument("--no-uvloop", dest="uvloop", action="store_false")
    parser.add_argument("--no-history", dest="history", action="store_false",
                        help="history off: no outbox record per turn (to measure what history costs)")
    parser.add_argument("--repeat", type=int, default=3, metavar="N",
                        help="N raw/bridge throughput pairs, one run after the other; each figure of the "
                             "throughput runs is the median of the N, the last line the median ratio. One pair "
                             "says little on a shared machine, whose speed moves by a third from one minute to "
                             "the next")
    parser.add_argument("--cluster", action="store_true",
                        help="also the same load on a local three-primary Redis Cluster (bench/cluster.py)")
    parser.add_argument("--no-isolation", dest="isolation", action="store_false",
                        help="skip the isolation figures (bench/isolation.py)")
    args = parser.parse_args()
    if args.uvloop:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            args.uvloop = False
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
