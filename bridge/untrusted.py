"""Reading what strangers send: HTTP bodies read whole up to a cap, JSON decoded with a
depth cap, so a hostile body costs its sender a clear 4xx, never the bridge a 500."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import StreamReader

MAX_JSON_DEPTH = 32  # no frame or request of ours nests deeper than a few levels
_CHUNK = 64 * 1024


class TooLarge(Exception):
    """The body is longer than ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"over {limit} bytes")
        self.limit = limit


class BadJson(ValueError):
    """Not JSON, or JSON nested deeper than `MAX_JSON_DEPTH`; the message says which."""


async def read_capped(stream: StreamReader, limit: int) -> bytes:
    """Every byte up to the end of the body, or `TooLarge` as soon as it passes ``limit``.

    One ``read(n)`` returns what has arrived so far, not ``n`` bytes: a body that comes in
    several TCP segments or HTTP chunks must be read until EOF.
    """
    body = bytearray()
    while len(body) <= limit:
        chunk = await stream.read(min(_CHUNK, limit + 1 - len(body)))
        if not chunk:
            return bytes(body)
        body += chunk
    raise TooLarge(limit)


def decode_json(data: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON; `BadJson` when it is invalid or nested deeper than ``max_depth``."""
    try:
        value = msgspec.json.decode(data)
    except RecursionError:
        raise BadJson(f"JSON nested deeper than {max_depth} levels") from None
    except msgspec.DecodeError as exc:
        raise BadJson(f"invalid JSON: {exc}") from None
    check_depth(value, max_depth)
    return value


def check_depth(value: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """`BadJson` when containers nest deeper than ``max_depth`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > max_depth:
            raise BadJson(f"JSON nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)
