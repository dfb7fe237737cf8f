"""The same load on a local Redis Cluster of three primaries: the bridge's throughput
beside one Redis's, and how the primaries share the work.

    python -m bench.cluster [--n 100000] [--conversations 1000]     (or python -m bench --cluster)

Three redis-server processes in cluster mode on loopback TCP ports (redis-py's cluster
client takes no Unix sockets), joined with ``redis-cli --cluster create``; one more, plain,
for the single-Redis figure, also on TCP so the two compare. Both bridges run in this
process with 24 partitions (8 per primary), the null channel, history on, as in
``python -m bench``. Per primary: its redis-server CPU time over the run (INFO cpu), as a
share of the three; the spread is the largest share over the smallest, minus one (target:
within 20%).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import redis.asyncio as aioredis

from adapters.null import NullConfig
from bench.__main__ import bridge_run, bridge_settings, redis_cpu_s
from bridge.runner import Bridge, settle_heap

PRIMARIES = 3
PARTITIONS = 24


def _free_port() -> int:
    while True:  # a cluster node also listens on its port + 10000
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port <= 55_535:
            return port


def _start(directory: Path, port: int, cluster: bool) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench: redis-server not found (apt-get install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(directory)]
    if cluster:
        args += ["--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf")]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL)


async def _answering(port: int) -> None:
    client = aioredis.Redis(port=port)
    try:
        for _ in range(500):
            try:
                await client.ping()
                return
            except Exception:
                await asyncio.sleep(0.01)
        raise SystemExit(f"bench: redis-server on {port} did not start")
    finally:
        await client.aclose()


async def _throughput(url: str, n: int, conversations: int) -> float:
    settings = bridge_settings(url, conversations)
    settings.engine.partitions = PARTITIONS
    bridge = Bridge(settings, {"null": NullConfig()})
    await bridge.start()
    settle_heap()
    try:
        await bridge_run(bridge, conversations, None, conversations, "w", outbound_each=2)
        return await bridge_run(bridge, n, None, conversations, "t")
    finally:
        await bridge.stop()


async def cluster_rows(n: int, conversations: int) -> list[str]:
    """The lines to print: throughput on one Redis and on the cluster, each primary's share."""
    processes: list[subprocess.Popen[bytes]] = []
    used: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        try:
            single = _free_port()
            processes.append(_start(Path(scratch) / "single", single, cluster=False))
            ports = [_free_port() for _ in range(PRIMARIES)]
            processes += [_start(Path(scratch) / f"node{i}", port, cluster=True) for i, port in enumerate(ports)]
            for port in [single, *ports]:
                await _answering(port)
            await asyncio.to_thread(subprocess.run, ["redis-cli", "--cluster", "create",
                                                     *(f"127.0.0.1:{p}" for p in ports), "--cluster-yes"],
                                    check=True, capture_output=True, timeout=60)
            clients = {port: aioredis.Redis(port=port) for port in ports}
            while not all([b"cluster_state:ok" in await c.execute_command("CLUSTER", "INFO")  # noqa: ASYNC110
                           for c in clients.values()]):
                await asyncio.sleep(0.1)
            one = await _throughput(f"redis://127.0.0.1:{single}/0", n, conversations)
            before = {port: await redis_cpu_s(client) for port, client in clients.items()}
            spread_over = await _throughput(f"redis+cluster://127.0.0.1:{ports[0]}", n, conversations)
            used = {port: await redis_cpu_s(client) - before[port] for port, client in clients.items()}
            for client in clients.values():
                await client.aclose()
        finally:
            for process in processes:
                process.terminate()
                process.wait()
    total = sum(used.values()) or 1.0
    shares = {port: cpu / total for port, cpu in used.items()}
    spread = max(shares.values()) / max(min(shares.values()), 1e-9) - 1
    return [
        f"Redis Cluster ({PRIMARIES} primaries, {PARTITIONS} partitions, N={n:,}, TCP on loopback):",
        f"  throughput (msg/s): one Redis {one:,.0f}, cluster {spread_over:,.0f} ({spread_over / one:.2f}x)",
        "  redis-server CPU per primary: " + ", ".join(
            f"{port} {used[port]:.1f} s ({shares[port]:.0%})" for port in sorted(used)) + f"; spread {spread:.0%}",
    ]


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--conversations", type=int, default=1_000)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    for line in asyncio.run(cluster_rows(args.n, args.conversations)):
        print(line)


if __name__ == "__main__":
    cli()
