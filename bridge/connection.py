"""The Redis client every part of the bridge shares: one Redis (``redis.url``) or the
primary that Sentinel names (``redis.sentinels`` + ``redis.service``).

With Sentinel, each new connection asks the sentinels where the primary is, so the bridge
follows a failover without a restart: connections to the old primary fail (it died) or
answer READONLY (it was demoted), redis-py drops them, and the retry below reconnects to
the new one. What fails past those retries reaches the callers' own loops (the engine and
the dispatchers retry; an adapter tells its platform "retry later").
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import hiredis  # redis[hiredis], a dependency
import redis.asyncio as aioredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import AskError, ClusterDownError, DataError, MovedError, NoScriptError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.config import RedisSettings, sentinel_address
from bridge.errors import BridgeError

log = logging.getLogger(__name__)

SENTINEL_TIMEOUT_S = 2.0  # a sentinel that does not answer in this time is skipped for the next
MIGRATING_WAIT_S = 0.05  # on a Redis Cluster, how long a write to a slot being migrated waits before it tries again


class _PackedByHiredis:
    """Commands packed by hiredis, in C, as redis-py's synchronous client packs them. Its
    asyncio client packs in Python and joins its buffer again for each argument: a commit
    declaring 124 keys took 225 µs to pack, 38 µs with hiredis (this VM, 2026-12-03)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):  # "CONFIG GET": the words of a command name go apart
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # as redis-py's encoder says it
            raise DataError(str(exc)) from None


def _packed_by_hiredis(client: aioredis.Redis) -> aioredis.Redis:
    """``client``, whose new connections pack commands with hiredis."""
    pool = client.connection_pool
    base = pool.connection_class
    pool.connection_class = type(f"HiredisPacked{base.__name__}", (_PackedByHiredis, base), {})
    return client


class _LeanCheckout:
    """A pool's checkout and return without what the bridge does not use. redis-py's own
    (7.x) takes a lock, records OpenTelemetry counts in four coroutines and, to find data
    left unread on the connection, reads from its socket under a zero timeout: a turn of
    the event loop and a cancelled read for every command. That cost 11.5 µs of CPU a
    checkout against 1.0 µs here, and a GET 67 µs against 47 (this VM, 2026-12-04).
    Unread data is looked for in what the event loop has already read (every path that
    abandons a reply disconnects: redis-py's reads and sends, `bridge.transaction`); a
    socket closed since is found by the command itself, whose retry reconnects."""

    _available_connections: list[AbstractConnection]
    _in_use_connections: set[AbstractConnection]
    if TYPE_CHECKING:  # redis-py's pool, the class this is mixed into
        def get_available_connection(self) -> AbstractConnection: ...

    async def get_connection(self, *_: Any, **__: Any) -> AbstractConnection:
        connection = self.get_available_connection()  # no await before it is marked in use: no lock needed
        try:
            await _connect(connection)  # (at once when connected)
            if _unread(connection):
                await connection.disconnect()
                await _connect(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        self._in_use_connections.remove(connection)
        if connection.should_reconnect():  # the server announced maintenance
            await connection.disconnect()
        self._available_connections.append(connection)


async def _connect(connection: AbstractConnection) -> None:
    """redis-py's `connect` (the socket and the handshake, tried again by the client's
    retry policy) without a health check before the handshake: that PING, on a connection
    its peer closed, reconnected inside its own retry, inside the connect's, so a server
    that accepts and drops every connection (a proxy whose Redis is down) was tried 36
    times over 17.6 s instead of 6 over 2.5 (retries=5). A connection class with a connect
    of its own (Sentinel's: it asks the sentinels where the primary is) keeps it."""
    if connection.is_connected:
        return
    if type(connection).connect is not AbstractConnection.connect:
        await connection.connect()
        return
    await connection.retry.call_with_retry(
        lambda: connection.connect_check_health(check_health=False, retry_socket_connect=False),
        lambda error, failure_count: connection.disconnect(error=error, failure_count=failure_count),
        with_failure_count=True)


def _unread(connection: AbstractConnection) -> bool:
    """The connection holds data no command asked for (or its peer closed it)."""
    parser: Any = connection._parser
    stream = parser._stream
    try:
        return parser._reader.gets() is not NOT_ENOUGH_DATA or bool(stream._buffer) or stream.at_eof()
    except hiredis.ProtocolError:
        return True


class _Pool(_LeanCheckout, ConnectionPool):  # type: ignore[misc]
    pass


class _SentinelPool(_LeanCheckout, SentinelConnectionPool):  # type: ignore[misc]
    pass


class SentinelRedis(aioredis.Redis):  # type: ignore[misc]
    """The primary's client; closing it closes the clients of the sentinels too."""

    sentinel: Sentinel

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for client in self.sentinel.sentinels:
            await client.aclose()


try:  # redis-py 7 reads its own version from the package's metadata (on disk) for every connection it makes
    from redis.driver_info import DriverInfo
    from redis.utils import get_lib_version

    _DRIVER: dict[str, Any] = {"driver_info": DriverInfo(name="redis-py", lib_version=get_lib_version())}
except ImportError:  # redis-py 6 reads it once
    _DRIVER = {}


def connect(settings: RedisSettings, url: str | None = None, *, retries: int = 5,
            connect_timeout_s: float = 2.0) -> aioredis.Redis:
    """A client that retries a command across a short restart or a failover (``retries``
    times, backoff up to 1 s). ``url`` overrides ``settings.url`` (the embedded Redis)."""
    common: dict[str, Any] = {
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=retries),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError, ConnectionResetError],
        "socket_connect_timeout": connect_timeout_s,
        "health_check_interval": 15,
        "max_connections": 1000,  # blocking reads, pub/sub and bursts of web publishes share the pool
        **_DRIVER,
    }
    target = url or settings.url or ""
    if is_cluster_url(target):  # redis+cluster://host:port: any node; the others are found from it
        scheme, _, rest = target.partition("://")
        # a MOVED moves its slot in the client's map; redis-py's default also reloads the whole
        # map every 5th MOVED, closing every connection in use (a reshard answers MOVED often)
        client: Any = RedisCluster.from_url(f"{scheme.removesuffix('+cluster')}://{rest}", reinitialize_steps=0,
                                            **common)
        return client
    if not settings.sentinels:
        files = _tls_files(settings) if target.lower().startswith("rediss") else {}
        return _packed_by_hiredis(aioredis.Redis.from_pool(_Pool.from_url(target, **common, **files)))
    addresses = [a for a in (sentinel_address(s) for s in settings.sentinels) if a is not None]
    # a sentinel is asked once per lookup: the next one is asked instead of this one again
    # (redis-py's default retried each three times, a wrong password too: 20 s before
    # `bridge status` said why), and the client's own retry repeats the whole lookup
    sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": SENTINEL_TIMEOUT_S,
                                       "socket_timeout": SENTINEL_TIMEOUT_S, "username": settings.sentinel_username,
                                       "retry": Retry(NoBackoff(), 0)}
    if settings.sentinel_password is not None:
        sentinel_kwargs["password"] = settings.sentinel_password.get_secret_value()
    if settings.sentinel_tls:
        sentinel_kwargs.update(ssl=True, **_tls_files(settings))
    sentinel = Sentinel(addresses, sentinel_kwargs=sentinel_kwargs)
    password = settings.password.get_secret_value() if settings.password is not None else None
    tls = {"ssl": True, **_tls_files(settings)} if settings.tls else {}
    client = sentinel.master_for(settings.service or "", redis_class=SentinelRedis, connection_pool_class=_SentinelPool,
                                 username=settings.username, password=password, **tls, **common)
    assert isinstance(client, SentinelRedis)
    client.sentinel = sentinel
    return _packed_by_hiredis(client)


_SENTINEL_ERROR = re.compile(r" - ([\w:]*(?:Error|Exception)\b(?:\((?:'[^']*'|\"[^\"]*\")?\))?)")  # "<client> - Error"


def unreachable(exc: BaseException, settings: RedisSettings) -> str:
    """Why Redis could not be reached, in the operator's words: redis-py names each
    sentinel it asked by its whole client, settings and all."""
    if not isinstance(exc, MasterNotFoundError):
        return str(exc)
    errors = sorted(set(_SENTINEL_ERROR.findall(str(exc))))
    reason = f"no sentinel named a primary for redis.service {settings.service!r}"
    if errors:
        reason += ": " + "; ".join(errors)
    if any("AuthenticationError" in error for error in errors):
        reason += " (the sentinels' own login: redis.sentinel_username, redis.sentinel_password)"
    return reason


def _tls_files(settings: RedisSettings) -> dict[str, str]:
    """redis-py's TLS arguments for the configured CA, certificate and key (servers'
    certificates are always checked, their host names too)."""
    files = {"ssl_ca_certs": settings.tls_ca_file, "ssl_certfile": settings.tls_cert_file,
             "ssl_keyfile": settings.tls_key_file}
    return {name: str(path) for name, path in files.items() if path is not None}


async def check_server(redis: aioredis.Redis, settings: RedisSettings) -> None:
    """Refuse a server the bridge cannot run on, saying why: a Redis Cluster node given as
    one Redis (it answers only for its own hash slots)."""
    if is_cluster(redis):
        return
    if int((await redis.info("cluster")).get("cluster_enabled", 0)):
        url = without_password(settings.url or "")
        raise BridgeError(f"{where(settings)} is a Redis Cluster node: it answers only for its own hash slots; "
                          f"give the cluster as redis+cluster://{url.partition('://')[2]} (any of its nodes)")


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0].lower().endswith("+cluster")


def is_cluster(redis: Any) -> bool:
    """A cluster client? (By its class, remembered: redis-py's classes derive from a typing
    Protocol, whose isinstance check walks the class's members, a microsecond a call on the
    hot path.)"""
    kind = type(redis)
    known = _CLUSTER_CLASSES.get(kind)
    if known is None:
        known = _CLUSTER_CLASSES[kind] = issubclass(kind, RedisCluster)
    return known


_CLUSTER_CLASSES: dict[type, bool] = {}


async def subscriber_for(redis: Any) -> aioredis.Redis:
    """A client that can subscribe: ``redis`` itself, or for a cluster client a plain one to
    one of the cluster's primaries."""
    if not is_cluster(redis):
        return redis
    await redis.initialize()  # the nodes are known once it asked one of them
    node = random.choice(redis.get_primaries())
    wanted = ("username", "password", "socket_connect_timeout", "health_check_interval", "retry")
    return aioredis.Redis(host=node.host, port=node.port,
                          **{k: v for k, v in node.connection_kwargs.items() if k in wanted})


async def follow_cluster_change(redis: Any, error: BaseException) -> bool:
    """What a command sent straight to a slot's primary (past redis-py's redirections, as
    `bridge.transaction.fenced` sends) does when the cluster changed under it. True when
    ``error`` says so and the slot map is up to date again, so the command can try again:
    the slot moved (MOVED names its new primary), a node died or a replica took over
    (connection errors, CLUSTERDOWN: the map is asked for again), or the slot is being
    migrated (ASK, TRYAGAIN: a short wait; the slot's keys are moving one batch at a time).
    False for any other error, or on a client that is not a cluster's."""
    if not is_cluster(redis):
        return False
    log.debug("the cluster changed under a command", extra={"error": f"{type(error).__name__}: {error}"})
    if isinstance(error, MovedError):
        redis.nodes_manager.move_slot(error)
    elif isinstance(error, (AskError, TryAgainError)):
        await asyncio.sleep(MIGRATING_WAIT_S)
    elif isinstance(error, (ClusterDownError, RedisConnectionError, RedisTimeoutError, ConnectionResetError)):
        await redis.nodes_manager.initialize()
    else:
        return False
    return True


class Script:
    """A Lua script, run by its SHA1 (EVALSHA); every one of the bridge's declares a key. A
    server that does not have it (restarted, or on a Redis Cluster a replica that took over
    its primary's slots: scripts are not replicated) gets it loaded, on a cluster into the
    primary of the call's first key (the one the call went to, as the client's map now
    names it), and the call runs again."""

    def __init__(self, redis: Any, script: str) -> None:
        self.redis = redis
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        try:
            return await self.redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load(str(keys[0]))
            return await self.redis.evalsha(self.sha, len(keys), *keys, *args)

    async def load(self, beside: str) -> None:
        """Into the one Redis, or into the primary of ``beside``'s slot."""
        if not is_cluster(self.redis):
            await self.redis.script_load(self.script)
            return
        await self.redis.initialize()  # (at once when it knows the cluster's map already)
        await self.redis.execute_command("SCRIPT LOAD", self.script, target_nodes=self.redis.get_node_from_key(beside))


def retry_of(redis: Any) -> Retry | None:
    """The client's retry policy (a cluster client keeps it as an attribute)."""
    return redis.retry if is_cluster(redis) else redis.get_retry()


async def mget(redis: Any, names: Sequence[str | bytes]) -> list[bytes | None]:
    """MGET of keys that may lie in several hash slots: on a Redis Cluster one per slot
    (redis-py's ``mget_nonatomic``, the values in the keys' order); one MGET otherwise."""
    if not names:
        return []
    if is_cluster(redis):
        return list(await redis.mget_nonatomic(list(names)))
    return list(await redis.mget(names))


CLOSE_TIMEOUT_S = 5.0


async def close(client: aioredis.Redis) -> None:
    """Close ``client``'s connections, waiting at most CLOSE_TIMEOUT_S: redis-py's
    ``aclose`` waits for every socket's ``wait_closed``, which can hang for ever
    (redis/redis-py#3941) and would stall a shutdown. Past the wait the sockets are
    closed already; only the confirmation is not awaited."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await client.aclose()
    except TimeoutError:
        log.warning("redis client did not close in %.0f s; going on", CLOSE_TIMEOUT_S)


def where(settings: RedisSettings) -> str:
    """Where the config says Redis is, by its keys, without a password."""
    if settings.sentinels:
        return f"redis.sentinels {', '.join(settings.sentinels)} (redis.service {settings.service})"
    if settings.url:
        return f"redis.url {without_password(settings.url)}"
    return f"the embedded Redis in redis.data_dir {settings.data_dir}"


def without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rsplit('@', 1)[-1]}" if "@" in rest else url


async def describe(redis: aioredis.Redis, settings: RedisSettings) -> dict[str, Any]:
    """Which Redis this client writes to now (for `bridge status`): with Sentinel, the
    primary the sentinels name; on a cluster, its primaries; and how many replicas are
    connected to it (them)."""
    if is_cluster(redis):
        await redis.initialize()  # the nodes are known once it asked one of them
        primaries = redis.get_primaries()
        infos = [await redis.info("replication", target_nodes=node) for node in primaries]
        in_sync = [sum(1 for k, v in i.items() if k.startswith("slave") and isinstance(v, dict)
                       and v.get("state") == "online") for i in infos]
        return {"mode": "cluster", "role": "master", "wait_replicas": settings.wait_replicas,
                "primary": ", ".join(sorted(f"{n.host}:{n.port}" for n in primaries)),
                "replicas": sum(int(i.get("connected_slaves", 0)) for i in infos), "in_sync": sum(in_sync),
                # each primary's writes wait for replicas of its own
                "short": sorted(f"{n.host}:{n.port}" for n, k in zip(primaries, in_sync, strict=True)
                                if k < settings.wait_replicas)}
    info = await redis.info("replication")
    replicas = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    out: dict[str, Any] = {"role": info.get("role"), "replicas": int(info.get("connected_slaves", 0)),
                           # a replica still at its first sync holds nothing yet and confirms no write
                           "in_sync": sum(1 for r in replicas if r.get("state") == "online"),
                           "wait_replicas": settings.wait_replicas}
    if isinstance(redis, SentinelRedis):
        host, port = await redis.connection_pool.get_master_address()
        out.update(mode="sentinel", service=settings.service, primary=f"{host}:{port}",
                   sentinels=list(settings.sentinels))
    else:
        out.update(mode="single", primary=without_password(settings.url) if settings.url else "embedded")
    return out
