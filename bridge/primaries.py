"""Commands sent straight to their hash slots' primaries on a Redis Cluster: each primary's
share on one connection, in one round trip, the primaries at once, each share followed
there by a WAIT when the writes must reach a replica.

redis-py's cluster pipeline does the routing too, but a WAIT counts the writes of its own
connection only, and the pipeline cannot be told to send one to each primary on the
connection of that primary's writes (its ``target_nodes`` is lost when it retries after a
connection error, and the WAIT then goes to whichever node it picks). Replies are read
from hiredis as in `bridge.transaction`; a slot that moved (MOVED) or is moving (ASK,
TRYAGAIN) is followed (`follow_cluster_change`) and its commands sent again, a few times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.exceptions import AskError, MovedError, TryAgainError

from bridge.connection import follow_cluster_change
from bridge.transaction import pipelined

ROUNDS = 4  # sends of commands whose slot moved or is moving, before their error is returned


async def on_primaries(redis: Any, commands: Sequence[tuple[str, Sequence[Any]]],
                       wait: tuple[int, int] | None = None) -> tuple[list[Any], list[Any]]:
    """Each (key, command) on the primary of the key's slot. Returns the replies in the
    commands' order (an error reply as an exception instance, not raised) and, with
    ``wait`` (replicas, timeout ms), the WAIT replies of the primaries that got commands.
    A connection error is raised (the slot map asked for again first)."""
    await redis.initialize()  # (at once when it knows the cluster's map already)
    replies: list[Any] = [None] * len(commands)
    waits: list[Any] = []
    todo = list(range(len(commands)))
    for round_ in range(ROUNDS):
        shares: dict[str, tuple[str, list[int]]] = {}
        for n in todo:
            key = commands[n][0]
            shares.setdefault(redis.get_node_from_key(key).name, (key, []))[1].append(n)
        try:
            answers = await asyncio.gather(*(_send(redis, key, [commands[n][1] for n in share], wait)
                                             for key, share in shares.values()))
        except Exception as exc:
            await follow_cluster_change(redis, exc)
            raise
        moving: list[int] = []
        for (_, share), answer in zip(shares.values(), answers, strict=True):
            for n, reply in zip(share, answer, strict=False):
                replies[n] = reply
                if isinstance(reply, (AskError, TryAgainError)):  # (MOVED is an ASK)
                    moving.append(n)
            if wait:
                waits.append(answer[-1])
        if not moving or round_ == ROUNDS - 1:
            break
        errors = [replies[n] for n in moving]
        for error in [e for e in errors if isinstance(e, MovedError)] or errors[:1]:  # each move; one wait
            await follow_cluster_change(redis, error)
        todo = moving
    return replies, waits


async def _send(redis: Any, key: str, commands: list[Sequence[Any]], wait: tuple[int, int] | None) -> list[Any]:
    return await pipelined(redis, [*commands, ("WAIT", *wait)] if wait else commands, key)
