"""A fenced commit as one Redis transaction, in one round trip: WATCH the fences, check them,
then MULTI/EXEC.

The engine's and the dispatchers' commits were one Lua call each. Lua copies every byte a
commit writes twice more than a transaction does (the script's argument into Lua, the
unpacked commands into Redis' own strings), and a commit is mostly bytes: transcripts,
outbound messages, the history's turn records. Replayed on one engine commit of 144
messages (this VM, 2026-12-04), redis-server spent 11.3 µs per message under Lua and 5.9
µs in a transaction.

Optimistic: the fences (the leases, the guard keys and the once key) are WATCHed, and a
small script (`_CHECK`, sent in the same round trip, between the WATCH and the MULTI)
compares them with what they must hold; should one not hold, it writes the commit's *gate*,
a key the WATCH also names, and Redis refuses the EXEC behind it. Redis refuses it as well
should any of them change after the WATCH (a lease renewed or taken, a guard moved, the key
expired), and the commit runs again. (The fences were read in a round trip of their own
before, the writes sent only once they held: one more round trip per commit, about 45 µs of
the bridge's CPU on this VM.) The check is sent with its text (EVAL), never by its SHA-1:
a server that had lost the script would answer NOSCRIPT and run the EXEC unchecked.
Replies are read straight from hiredis' reader: redis-py's per-reply coroutine costs more
than Redis spends on a queued command.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import hiredis
from redis._parsers.hiredis import NOT_ENOUGH_DATA  # its parser's "no whole reply yet" (redis-py < 8, pinned)
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.exceptions import BusyLoadingError

from bridge import keys
from bridge.connection import is_cluster

_MULTI = hiredis.pack_command(("MULTI",))
_EXEC = hiredis.pack_command(("EXEC",))

# KEYS: the fences, the once key, the gate; ARGV: what each fence must hold ("" for none).
# Returns 0 when all hold and the once key is absent; else the failed fence's number (from
# 1), or -1 for the once key (an earlier try applied the commit), having written the gate.
_CHECK = """
local fences = #ARGV
for i = 1, fences do
  local value = redis.pcall('GET', KEYS[i])
  if type(value) ~= 'string' then value = '' end
  if value ~= ARGV[i] then
    redis.call('SET', KEYS[fences + 2], '1', 'PX', 10000)
    return i
  end
end
if redis.call('EXISTS', KEYS[fences + 1]) == 1 then
  redis.call('SET', KEYS[fences + 2], '1', 'PX', 10000)
  return -1
end
return 0
"""


class FenceFailed(Exception):
    """A fence did not hold: ``key`` (a lease or a guard) has another value than expected."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


# a command whose last argument is larger is framed here instead of by hiredis
LARGE_ARGUMENT = 16_384


def packed(commands: Sequence[Sequence[Any]]) -> bytes:
    """Commands in Redis' protocol, packed by hiredis (in C); one that ends in a large
    argument (a commit's outbox entry: its turns' records, tens of KB) is framed in
    Python around it: hiredis copies it twice through a buffer it allocates and frees
    each time, which took 25 µs for 48 KB against 2 µs here (this VM, 2026-12-04)."""
    return b"".join([_framed(c) if type(c[-1]) is bytes and len(c[-1]) > LARGE_ARGUMENT
                     else hiredis.pack_command(c if type(c) is tuple else tuple(c)) for c in commands])


def _framed(command: Sequence[Any]) -> bytes:
    """One command in Redis' protocol; hiredis packs all but its last argument (bytes)."""
    head = hiredis.pack_command(tuple(command[:-1]))
    last = command[-1]
    return b"".join([b"*%d\r\n" % len(command), head[head.index(b"\r\n") + 2:], b"$%d\r\n" % len(last), last,
                     b"\r\n"])


async def read_replies(connection: AbstractConnection, count: int) -> list[Any]:
    """``count`` replies, errors among them as exception instances (not raised). The
    connection's parser is hiredis' (a dependency: `bridge.connection` packs with it too)."""
    parser: Any = connection._parser
    reader = parser._reader
    replies: list[Any] = []
    while len(replies) < count:
        reply = reader.gets()
        if reply is NOT_ENOUGH_DATA:
            await parser.read_from_socket()
            continue
        replies.append(reply)
    return replies


async def fenced(redis: Redis, fences: Sequence[tuple[str, bytes]], once: str, writes: bytes,
                 queued: int, after: bytes = b"", after_replies: int = 0, retry: Retry | None = None
                 ) -> tuple[bool | None, list[Any]]:
    """One try, in one round trip: ``writes`` (``queued`` packed commands) run in MULTI/EXEC
    after ``SET once``, when every fence key holds its value (b"" for none) and ``once`` is
    absent.

    Returns (True, the replies of ``after``) when applied; (False, []) when ``once`` was
    there (applied by an earlier try whose reply was lost); (None, []) when a watched key
    changed before the EXEC (try again). Raises `FenceFailed`, or the first error reply.
    ``after`` (``after_replies`` commands, a WAIT) is sent behind the EXEC. With ``retry``,
    a send or read cut off is tried again on the connection, as in `pipelined` (``once``
    keeps the commit to one application)."""
    gate = keys.commit_gate(once)
    watched = [key for key, _ in fences] + [once, gate]
    command = packed([("WATCH", *watched), ("EVAL", _CHECK, len(watched), *watched, *(value for _, value in fences)),
                      ("MULTI",), ("SET", once, "1", "EX", keys.COMMIT_ONCE_TTL_S)]) + writes + _EXEC + after
    replies = await _sent(redis, once, command, queued + 5 + after_replies, retry)
    # the EXEC ended the WATCH whatever came before it: the connection is clean
    _raise_first_error(replies[:queued + 4])  # the WATCH or the check refused, or a command when queued
    checked, result = replies[1], replies[queued + 4]
    if checked > 0:  # (the gate refused the EXEC)
        raise FenceFailed(fences[checked - 1][0])
    if checked < 0:
        return False, []
    if isinstance(result, Exception):
        raise result
    if result is None:
        return None, []
    _raise_first_error(result)  # a command that failed as it ran: those before it were applied (as in Lua)
    return True, replies[queued + 5:]


async def pipelined(redis: Any, commands: Sequence[Sequence[Any]], key: str = "", retry: Retry | None = None
                    ) -> list[Any]:
    """``commands`` in one round trip on a connection of the pool (on a Redis Cluster, of
    ``key``'s primary), their replies (errors as instances), read as a commit's are:
    redis-py's pipeline reads each reply in a coroutine of its own, which cost more than a
    publish's script calls themselves. With ``retry``, a send or read cut off is tried
    again on the connection, as redis-py's pipeline does."""
    return await _sent(redis, key, packed(commands), len(commands), retry)


async def _sent(redis: Any, key: str, command: bytes, count: int, retry: Retry | None) -> list[Any]:
    """Send ``command`` (packed) and read its ``count`` replies. The connection is taken
    once, outside the retry: taking it retries its connect already, and with both inside
    the retry a Redis that was down was waited for about six times as long (a read failed
    after 15 s instead of 2.5, a commit after 17.5 s)."""
    connection, release = await connection_for(redis, key)
    try:
        if retry is None:
            return await _exchange(connection, command, count)
        replies: list[Any] = await retry.call_with_retry(lambda: _exchange(connection, command, count),
                                                         _nothing_to_undo)
        return replies
    finally:
        await release(connection)


async def _exchange(connection: AbstractConnection, command: bytes, count: int) -> list[Any]:
    try:
        await connection.send_packed_command(command)  # (connects again after a cut)
        replies = await read_replies(connection, count)
    except BaseException:  # cut off mid-reply (or cancelled): the connection's state is unknown
        await connection.disconnect()
        raise
    if replies and isinstance(replies[0], BusyLoadingError) and all(
            isinstance(reply, BusyLoadingError) for reply in replies):
        # a restart reading its data back refused every one: they are tried again, as
        # redis-py's retry does for a single command (none ran: trying again is safe)
        raise replies[0]
    return replies


async def _nothing_to_undo(error: Exception) -> None:
    """Between tries of a send (`_sent`): nothing to do, the broken connection was
    dropped where it broke."""


async def connection_for(redis: Any, key: str) -> tuple[AbstractConnection, Callable[[Any], Awaitable[None]]]:
    """A connection of the client's pool, or on a Redis Cluster one to the primary of
    ``key``'s slot (a commit's keys are all in that slot), and how to give it back."""
    if is_cluster(redis):
        await redis.initialize()  # (at once when it knows the cluster's map already)
        node = redis.get_node_from_key(key)
        assert node is not None

        async def back(connection: Any) -> None:
            node.release(connection)

        return node.acquire_connection(), back
    pool = redis.connection_pool
    return await pool.get_connection(), pool.release


def _raise_first_error(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
