"""Redis commands as data: the store and the bus build them, `Bus.commit` runs a batch's
in one transaction (`bridge.transaction`). `frame_ops` frames them as one msgpack string
for a Lua script that runs commands it is given (the archive's restore)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import msgspec

_encoder = msgspec.msgpack.Encoder()
_pack_u8, _pack_u16, _pack_u32 = struct.Struct(">B").pack, struct.Struct(">H").pack, struct.Struct(">I").pack

Op = list[Any] | tuple[Any, ...]  # one Redis command: str, bytes and int arguments
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


# values per command at most: a Lua script spreads a command's values with unpack(), which
# fails above about 8,000 ("too many results to unpack"); and a commit's one huge command
# would hold Redis for as long as it runs
MAX_VALUES = 1000


def variadic(head: tuple[str, ...], values: Sequence[str | bytes], per: int = 1) -> Ops:
    """A variadic command (XACK, HSET, ZADD, MSET...) over ``values`` as one command per
    MAX_VALUES of them; ``per`` values go together (a field and its value)."""
    step = MAX_VALUES - MAX_VALUES % per
    return [(*head, *values[first:first + step]) for first in range(0, len(values), step)]


def frame_ops(ops: Sequence[Op]) -> bytes:
    """Commands as one msgpack string. Numbers travel as text: Lua would turn a large
    integer into a float."""
    return _encoder.encode([[a if type(a) is str else text(a) if type(a) is bytes else str(a) for a in op]
                            for op in ops])


def pack(value: Any) -> bytes:
    """``value`` as msgpack, as the scripts and stream payloads hold it."""
    return _encoder.encode(value)
