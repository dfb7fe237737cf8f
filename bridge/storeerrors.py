"""Redis' own errors, turned into the bridge's at the edge of the store.

Only `bus`, `store`, `lease` and `context` talk to Redis; each wraps its public async
methods with `typed_store_errors`, so the rest of the bridge catches `StoreUnavailable`
(try again later) and `StorageFull` (refuse, do not lose) instead of a client library's
exception classes. `typed_errors` does the same for another client (the SQL record's
readers: `bridge.history.db.typed_record_errors`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.errors import BridgeError, StorageFull, StoreUnavailable

# a replica promoted or demoted mid-call (Sentinel failover: READONLY, MASTERDOWN), a
# cluster slot moving (MOVED, ASK, TRYAGAIN, CLUSTERDOWN: redis-py follows them a few
# times, then raises ClusterError "TTL exhausted"), a restart reading its data back (LOADING).
# redis-py gives most of these a class of their own and strips the code from the message
# (MasterDownError is a ClusterDownError); the codes catch a reply that reached us whole.
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ReadOnlyError, ClusterError,
                TryAgainError, AskError, OSError)
_UNAVAILABLE_REPLIES = ("READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "LOADING")
# uvloop's word for a write to a socket closed meanwhile: redis-py's cluster client closes
# every connection of every node when a node answers CLUSTERDOWN (a failover under way),
# those in use by other commands too, and their next write raises it (asyncio's own loop
# drops the write, and the read after it fails as a connection error)
_CLOSED_UNDER_IT = "the handler is closed"

T = TypeVar("T")


def as_store_error(exc: BaseException) -> BaseException | None:
    """The bridge's error for a Redis client error, or None when it is not one."""
    if isinstance(exc, OutOfMemoryError):
        return StorageFull(f"Redis is full (maxmemory, redis.max_memory_mb): {exc}")
    if isinstance(exc, _UNAVAILABLE):
        return StoreUnavailable(f"Redis unavailable: {type(exc).__name__}: {exc}")
    if isinstance(exc, ResponseError) and str(exc).startswith(_UNAVAILABLE_REPLIES):
        return StoreUnavailable(f"Redis unavailable: {exc}")
    if isinstance(exc, RuntimeError) and _CLOSED_UNDER_IT in str(exc):
        return StoreUnavailable(f"Redis connection closed under a command: {exc}")
    return None


Translate = Callable[[BaseException], BaseException | None]


def _wrap(method: Callable[..., Coroutine[Any, Any, T]], translate: Translate) -> Callable[..., Coroutine[Any, Any, T]]:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> T:
        try:
            return await method(*args, **kwargs)
        except BridgeError:
            raise
        except Exception as exc:
            typed = translate(exc)
            if typed is None:
                raise
            raise typed from exc

    return call


C = TypeVar("C", bound=type)


def typed_errors(translate: Translate) -> Callable[[C], C]:
    """Class decorator: every public coroutine method raises ``translate(exc)`` instead of
    a client library's ``exc`` (when it names one; other errors pass as they are)."""
    def decorate(cls: C) -> C:
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and inspect.iscoroutinefunction(member):
                setattr(cls, name, _wrap(member, translate))
        return cls

    return decorate


typed_store_errors = typed_errors(as_store_error)  # the Redis client's errors
