"""The concrete pieces of an `AdapterContext`: state in Redis, pub/sub fanout, health."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from redis.asyncio import Redis

from bridge import keys
from bridge.adapter import HealthState
from bridge.connection import mget, subscriber_for
from bridge.metrics import ADAPTER_UP
from bridge.model import now_ms
from bridge.storeerrors import typed_store_errors

log = logging.getLogger("bridge.context")
_MARK_KEEP_MS = 300_000  # an expiring set lasts this long after its last mark (members: their own ttl)


@typed_store_errors
class RedisState:
    """Durable key/value state for one channel (offsets, watermarks)."""

    def __init__(self, redis: Redis, channel: str) -> None:
        self.redis = redis
        self.channel = channel

    def _key(self, key: str) -> str:
        return keys.adapter_state(self.channel, key)

    async def get(self, key: str) -> str | None:
        value = await self.redis.get(self._key(key))
        return value.decode() if value is not None else None

    async def set(self, key: str, value: str, ttl_s: int | None = None) -> None:
        await self.redis.set(self._key(key), value, ex=ttl_s)

    async def set_if_absent(self, key: str, value: str, ttl_s: int | None = None) -> bool:
        return bool(await self.redis.set(self._key(key), value, ex=ttl_s, nx=True))

    async def delete(self, key: str) -> None:
        await self.redis.delete(self._key(key))

    async def get_bytes(self, key: str) -> bytes | None:
        value = await self.redis.get(self._key(key))
        return bytes(value) if value is not None else None

    async def set_bytes(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        await self.redis.set(self._key(key), value, ex=ttl_s)

    async def incr(self, key: str, amount: int = 1, ttl_s: int | None = None) -> int:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incrby(self._key(key), amount)
            if ttl_s is not None:
                pipe.expire(self._key(key), ttl_s, nx=True)
            result = await pipe.execute()
        return int(result[0])

    async def counts(self, keys: list[str]) -> list[int]:
        if not keys:
            return []
        return [int(v or 0) for v in await mget(self.redis, [self._key(k) for k in keys])]

    async def mark(self, key: str, member: str, ttl_s: float) -> None:
        """A sorted set scored by expiry (ms): stale members are skipped by score and swept
        on the next mark; the set itself goes a while after its last mark."""
        until_ms = now_ms() + int(ttl_s * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self._key(key), {member: until_ms})
            pipe.zremrangebyscore(self._key(key), "-inf", now_ms())
            pipe.pexpire(self._key(key), max(int(ttl_s * 1000), _MARK_KEEP_MS) + 1000)
            await pipe.execute()

    async def unmark(self, key: str, member: str) -> None:
        await self.redis.zrem(self._key(key), member)

    async def marked(self, key: str) -> dict[str, int]:
        found = await self.redis.zrangebyscore(self._key(key), now_ms(), "+inf", withscores=True)
        return {m.decode(): int(score) for m, score in found}


@typed_store_errors
class RedisFanout:
    """Broadcast to every bridge process (Redis pub/sub)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def broadcast(self, topic: str, payload: bytes) -> None:
        await self.redis.execute_command("PUBLISH", keys.FANOUT + topic, payload)

    async def subscribe(self, topic: str, on_subscribed: Callable[[], Awaitable[None]] | None = None
                        ) -> AsyncIterator[bytes]:
        # a Redis Cluster client has no pub/sub: a plain client to one of its nodes does (a
        # message published on any node reaches the subscribers of every node)
        client = await subscriber_for(self.redis)
        pubsub = client.pubsub()
        await pubsub.subscribe(keys.FANOUT + topic)
        try:
            async for item in pubsub.listen():
                kind = item.get("type")
                if kind == "message":
                    yield item["data"]
                elif kind == "subscribe" and on_subscribed is not None:
                    # also after redis-py reconnected and subscribed again by itself
                    await on_subscribed()
        finally:
            await pubsub.aclose()
            if client is not self.redis:
                await client.aclose()


@typed_store_errors
class HealthBoard:
    """Each adapter's last health report, kept in Redis so `bridge status` can show it."""

    def __init__(self, redis: Redis, worker_id: str) -> None:
        self.redis = redis
        self.worker_id = worker_id
        self.local: dict[str, tuple[str, str]] = {}

    def reporter(self, channel: str):  # type: ignore[no-untyped-def]
        async def report(state: HealthState, detail: str) -> None:
            await self.report(channel, state, detail)

        return report

    async def report(self, channel: str, state: HealthState, detail: str) -> None:
        self.local[channel] = (state, detail)
        ADAPTER_UP.labels(channel).set(1 if state == "ok" else 0)
        if state in ("broken", "degraded"):
            log.warning("adapter health", extra={"channel": channel, "state": state, "detail": detail})
        record = {"state": state, "detail": detail[:500], "at_ms": now_ms(), "worker": self.worker_id}
        try:
            await self.redis.hset(keys.HEALTH, channel, json.dumps(record))
        except Exception as exc:  # health is advisory; never fail a caller over it
            log.debug("health not stored", extra={"error": repr(exc)})

    async def read(self) -> dict[str, dict[str, object]]:
        raw = await self.redis.hgetall(keys.HEALTH)
        return {k.decode(): json.loads(v) for k, v in raw.items()}
