"""Redis commands as data, framed for the commit's Lua script (`Bus.commit`):
one msgpack string instead of dozens of arguments per message (redis-py spends
microseconds packing each argument; Lua's cmsgpack unpacks them at C speed)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import msgspec

_encoder = msgspec.msgpack.Encoder()
_pack_u8, _pack_u16, _pack_u32 = struct.Struct(">B").pack, struct.Struct(">H").pack, struct.Struct(">I").pack

Op = list[Any] | tuple[str | msgspec.Raw, ...]  # one Redis command; a tuple is framed already (`text`)
Ops = list[Op]  # Redis commands for one atomic commit (`Bus.commit`)


def text(data: bytes) -> msgspec.Raw:
    """Bytes as a msgpack *str* (Redis' Lua cmsgpack reads str, not bin; both are
    byte-exact, and str carries any bytes)."""
    n = len(data)
    if n < 32:
        header = _pack_u8(0xA0 | n)
    elif n < 256:
        header = b"\xd9" + _pack_u8(n)
    elif n < 65536:
        header = b"\xda" + _pack_u16(n)
    else:
        header = b"\xdb" + _pack_u32(n)
    return msgspec.Raw(header + data)


# values per command at most: the commit's Lua spreads a command's values with unpack(),
# which fails above about 8,000 ("too many results to unpack"), and a commit that fails
# every time stalls its stream
MAX_VALUES = 1000


def variadic(head: tuple[str, ...], values: Sequence[str | msgspec.Raw], per: int = 1) -> Ops:
    """A variadic command (XACK, HSET, ZADD, MSET...) over ``values`` as one command per
    MAX_VALUES of them; ``per`` values go together (a field and its value)."""
    step = MAX_VALUES - MAX_VALUES % per
    return [(*head, *values[first:first + step]) for first in range(0, len(values), step)]


def frame_ops(ops: Sequence[Op]) -> bytes:
    """Commands as one msgpack string. Numbers travel as text: Lua would turn a large
    integer into a float. The hot path builds its commands as tuples of str and
    `text(bytes)`, framed already (no work per argument here); lists are framed here."""
    return _encoder.encode([op if type(op) is tuple else
                            [a if type(a) is str else text(a) if type(a) is bytes else str(a) for a in op]
                            for op in ops])


def pack(value: Any) -> bytes:
    """``value`` as msgpack, as the scripts and stream payloads hold it."""
    return _encoder.encode(value)


_KEYS_AT_ODD = frozenset({"MSET"})  # key, value, key, value...
_ALL_KEYS = frozenset({"DEL", "UNLINK", "EXISTS"})
_NO_KEY = frozenset({"PUBLISH"})  # a pub/sub channel, not a key
_UNUSUAL = _KEYS_AT_ODD | _ALL_KEYS | _NO_KEY  # the others name one key, first


def written_keys(ops: Sequence[Op]) -> list[Any]:
    """The keys ``ops`` name, each once, for a script to declare (Redis Cluster routes a
    script by its declared keys, and refuses one that touches a key it does not hold)."""
    found: dict[Any, None] = {}  # str, as the bridge names its keys
    for op in ops:
        name = op[0]
        if name not in _UNUSUAL:
            found[op[1]] = None
        elif name in _KEYS_AT_ODD:
            found.update(dict.fromkeys(op[1::2]))
        elif name in _ALL_KEYS:
            found.update(dict.fromkeys(op[1:]))
    return list(found)
