"""Run the whole bridge in-process for end-to-end tests.

    async with running_bridge(redis_url, {"channels": {...}}) as b:
        await b.post("/api/v1/messages", json=..., headers=...)
        await b.wait_for(lambda: ..., timeout_s=10)

The config dict is what a YAML file would hold; ``env`` sets environment variables for
``${VAR}`` interpolation while the config loads. HTTP binds 127.0.0.1 on a free port.
Engine timings are short (lease 1 s) so recovery tests stay fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bridge import config as config_module
from bridge import keys
from bridge.bus import Bus, entry_of
from bridge.model import Message, address_hash, decode, entry_order, now_ms, partition_of
from bridge.ops import Ops
from bridge.runner import Bridge
from tests.timing import scaled


@dataclass
class Clock:
    """A clock the test moves: pass it as ``clock_ms`` to run SLA timers and surveys at once."""

    now_ms: int = field(default_factory=now_ms)

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, *, minutes: float = 0, hours: float = 0, days: float = 0) -> int:
        self.now_ms += int(minutes * 60_000 + hours * 3_600_000 + days * 86_400_000)
        return self.now_ms

FAST_ENGINE = {"lease_ttl_s": 1.0, "claim_min_idle_s": 0.5, "block_ms": 100}


class RunningBridge:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.url = bridge.url
        self.redis = bridge.redis
        self.store = bridge.store
        self.bus = bridge.bus
        self.http = aiohttp.ClientSession()

    async def post(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        response = await self.http.post(self.url + path, **kwargs)
        await response.read()
        return response

    async def get(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        response = await self.http.get(self.url + path, **kwargs)
        await response.read()
        return response

    async def wait_for(self, predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "") -> Any:
        """Poll ``predicate`` (sync or async) until it returns something truthy."""
        return await wait_for(predicate, timeout_s, what)

    async def scheduled(self, name: str) -> list[Message]:
        """The timers committed for command ``name``, in every partition. A test that moves
        its clock waits for these first: a side effect seen before the commit (a request at
        a provider) may belong to a turn that a lost lease makes run again, after the move."""
        partitions = self.bus.partitions
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(partitions):
                pipe.zrange(keys.timers(p, partitions), 0, -1)
            found = await pipe.execute()
        return [m for members in found for m in map(decode, members) if m.name == name]


async def finished(task: asyncio.Task[Any], timeout_s: float = 10.0) -> None:
    """Wait for ``task`` to end (it was told to stop). Should it not, the failure shows
    where every task of the loop is waiting, instead of a bare pytest-timeout later."""
    done, _ = await asyncio.wait({task}, timeout=scaled(timeout_s))
    if done:
        task.result()
        return
    stacks = io.StringIO()
    for other in asyncio.all_tasks():
        print(f"{other!r}, awaiting:", file=stacks)
        awaited: Any = other.get_coro()
        while awaited is not None:  # the whole await chain (a task's own stack shows one frame)
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is not None:
                print(f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}", file=stacks)
            else:
                print(f"  {awaited!r}", file=stacks)
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    task.cancel()
    raise AssertionError(f"{task.get_name()} did not stop in {scaled(timeout_s)} s; the loop's tasks:\n"
                         f"{stacks.getvalue()}")


async def wait_for(predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` until truthy; the deadline is scaled for a busy machine (tests/timing.py)."""
    timeout_s = scaled(timeout_s)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")
        await asyncio.sleep(0.02)


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def test_config(redis_url: str, config: dict[str, Any]) -> dict[str, Any]:
    # the SQL history is off unless a test turns it on (history.url: a database of its own)
    base = {"redis": {"url": redis_url}, "http": {"host": "127.0.0.1", "port": 0}, "engine": dict(FAST_ENGINE),
            "history": {"enabled": False}, "log": {"format": "text", "level": "WARNING"}}
    return merged(base, config)


def load_config(tmp_dir: Path, data: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    path = tmp_dir / "bridge.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        return config_module.load(path)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.asynccontextmanager
async def running_bridge(redis_url: str, config: dict[str, Any], *, env: dict[str, str] | None = None,
                         clock_ms: Callable[[], int] = now_ms,
                         tmp_dir: Path | None = None) -> AsyncIterator[RunningBridge]:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        settings, channels = load_config(tmp_dir or Path(scratch), test_config(redis_url, config), env)
        bridge = Bridge(settings, channels, clock_ms=clock_ms)
        try:
            await bridge.start()
        except BaseException:
            await bridge.stop()
            raise
        running = RunningBridge(bridge)
        try:
            yield running
        finally:
            await running.http.close()
            await bridge.stop()


def outbound_of(channel: str, address: str, *, of: str = "", partitions: int = 8) -> str:
    """The outbound stream of ``channel`` a customer's conversation writes to (its
    partition's): the customer's address on ``of`` (default: ``channel`` itself)."""
    return keys.outbound(channel, partition_of(address_hash(of or channel, address), partitions), partitions)


async def outbound_entries(redis: Any, channel: str, partitions: int = 8) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every message of a channel's outbound streams, oldest first, as (entry id, fields):
    a commit's messages to a stream, one entry, each with its entry's id."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = []
    for stream in keys.outbound_streams(channel, partitions):
        for entry_id, fields in await redis.xrange(stream):
            entries += [(entry_id, {keys.PAYLOAD_FIELD.encode(): e.payload} if e.payload is not None else fields)
                        for e in entry_of(stream, entry_id.decode(), fields)]
    return sorted(entries, key=lambda entry: entry_order(entry[0]))  # (stable: a batch keeps its order)


async def commit(redis: Any, ops: Ops) -> None:
    """Write ``ops`` (from the store's op builders) the way the engine does: one commit."""
    await Bus(redis, partitions=1).commit_by_slot(ops, leases=[], owner="")
