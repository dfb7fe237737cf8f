"""What `bridge status` shows: streams, lengths, pending, lag per group, dead letters,
the history's backlog (outbox entries not yet in SQL) and each adapter's health."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from bridge import keys
from bridge.bus import Bus
from bridge.config import Settings
from bridge.connection import describe
from bridge.history.projector import backlog
from bridge.model import now_ms
from bridge.store import Store


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


async def gather(redis: Redis, settings: Settings) -> dict[str, Any]:
    streams: list[str] = []
    async for key in redis.scan_iter(match=keys.PREFIX + "*", count=1000, _type="stream"):
        streams.append(_text(key))
    dead = [s for s in streams if s.startswith(keys.dead_letters(""))]  # counted together, not listed
    queues: dict[str, int] = {}  # a queue's partitions' streams: one row, the cases they hold
    for stream in [s for s in streams if s.startswith(keys.PREFIX + "queue:")]:
        name = f"{keys.PREFIX}queue:{keys.tagged_id(stream)}"
        queues[name] = queues.get(name, 0) + int(await redis.xlen(stream))
        streams.remove(stream)
    rows: list[dict[str, Any]] = [{"stream": name, "length": length, "groups": []}
                                  for name, length in queues.items()]
    for stream in set(streams) - set(dead):
        length = int(await redis.xlen(stream))
        groups = []
        for group in await redis.xinfo_groups(stream):
            info = {_text(k): _text(v) for k, v in group.items()}
            groups.append({"group": info["name"], "pending": int(info.get("pending", 0)),
                           "lag": info.get("lag"), "consumers": int(info.get("consumers", 0))})
        rows.append({"stream": stream, "length": length, "groups": groups})
    rows = _channels_merged(rows)
    rows.sort(key=lambda row: _stream_order(row["stream"]))
    health = {_text(k): json.loads(v) for k, v in (await redis.hgetall(keys.HEALTH)).items()}
    partitions = await redis.hget(keys.META, "partitions")
    waiting, oldest_s = await backlog(Bus(redis, partitions=int(partitions or 1)), int(partitions or 0), now_ms())
    store = Store(redis, partitions=int(partitions or 1))
    return {
        "history": {"waiting": waiting, "oldest_age_s": round(oldest_s, 1)},
        "redis": await describe(redis, settings.redis),
        "streams": rows,
        "dead_letters": sum([int(await redis.xlen(stream)) for stream in dead]),
        "adapters": health,
        "partitions": int(partitions) if partitions else None,
        "conversations": {s: await store.count_with_status(s) for s in keys.STATUSES},
    }


def _channels_merged(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A channel's outbound streams (its own and one per partition) as one row: their
    lengths, and each group's pending entries and lag, added up."""
    merged: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for row in rows:
        if not row["stream"].startswith(keys.OUTBOUND):
            out.append(row)
            continue
        name = keys.channel_stream(keys.outbound_channel(row["stream"]))
        total = merged.get(name)
        if total is None:
            total = merged[name] = {"stream": name, "length": 0, "groups": []}
            out.append(total)
        total["length"] += row["length"]
        for group in row["groups"]:
            into = next((g for g in total["groups"] if g["group"] == group["group"]), None)
            if into is None:
                total["groups"].append(dict(group))
                continue
            into["pending"] += group["pending"]
            into["consumers"] = max(into["consumers"], group["consumers"])
            lags = (into["lag"], group["lag"])
            into["lag"] = None if None in lags else int(lags[0]) + int(lags[1])
    return out


def _stream_order(name: str) -> tuple[int, str, int]:
    kind = name[len(keys.PREFIX):].split(":", 1)[0]
    order = {"in": 0, "out": 1, "outbox": 2, "queue": 3}.get(kind, 4)
    tail = name.rsplit(":", 1)[-1]
    partition = tail[1:].split(".", 1)[0] if tail.startswith("{") else ""  # a partition's tag: {p.n}
    return (order, "" if partition.isdigit() else kind, int(partition) if partition.isdigit() else 0)


def render(status: dict[str, Any]) -> str:
    lines = [_redis_line(status["redis"]), ""]
    lines.append(f"{'STREAM':<34} {'LENGTH':>8} {'GROUP':<10} {'PENDING':>8} {'LAG':>8}")
    for row in status["streams"]:
        name = row["stream"][len(keys.PREFIX):]
        if not row["groups"]:
            lines.append(f"{name:<34} {row['length']:>8} {'-':<10} {'-':>8} {'-':>8}")
        for group in row["groups"]:
            lag = "?" if group["lag"] is None else str(group["lag"])
            lines.append(f"{name:<34} {row['length']:>8} {group['group']:<10} {group['pending']:>8} {lag:>8}")
    lines.append("")
    lines.append(f"dead letters: {status['dead_letters']}" + ("  (bridge dlq list)" if status["dead_letters"] else ""))
    history = status["history"]
    lines.append(f"history: {history['waiting']} outbox entries not yet in SQL"
                 + (f", the oldest {history['oldest_age_s']:.0f} s old" if history["waiting"] else ""))
    conv = status["conversations"]
    lines.append(f"conversations: {conv['open']} open, {conv['pending']} pending, {conv['resolved']} resolved")
    lines.append("")
    lines.append(f"{'ADAPTER':<12} {'STATE':<10} DETAIL")
    if not status["adapters"]:
        lines.append("(no adapter has reported yet)")
    for name, record in sorted(status["adapters"].items()):
        lines.append(f"{name:<12} {record.get('state', '?'):<10} {record.get('detail', '')}")
    return "\n".join(lines)


def _redis_line(redis: dict[str, Any]) -> str:
    where = f"primary {redis['primary']}"
    if redis["mode"] == "cluster":
        where = f"Redis Cluster of primaries {redis['primary']}"
    elif redis["mode"] == "sentinel":
        where += f" (named by Sentinel for service {redis['service']})"
    line = f"redis: {where}, {redis['replicas']} replica(s) connected"
    in_sync = redis["in_sync"]
    if in_sync < redis["replicas"]:
        line += f", {in_sync} in sync"
    if redis["role"] != "master":
        line += f"; it answers as a {redis['role']}, not the primary"
    if redis["wait_replicas"]:
        line += f"; writes wait for {redis['wait_replicas']}"
        if redis.get("short"):
            line += (f" (too few replicas in sync on {', '.join(redis['short'])}: publish and commit in their "
                     "slots fail until one is)")
        elif in_sync < redis["wait_replicas"]:
            line += " (too few replicas in sync: publish and commit fail until one is)"
    return line
