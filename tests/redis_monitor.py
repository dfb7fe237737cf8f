"""Watch a real Redis with MONITOR and check that every Lua script touches only the keys
it declared (Redis Cluster routes a script by its declared keys, and while a slot moves,
a script that touches an undeclared key fails halfway, leaving part of its writes); and
collect each transaction (MULTI ... EXEC) a client ran, with the commands in it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from dataclasses import dataclass, field
from types import TracebackType
from urllib.parse import urlparse

_LINE = re.compile(r"^[\d.]+ \[\d+ ([^\]]*)\] (.*)$")
_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')  # MONITOR quotes each argument, escaping " and \ inside
_ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|.)")  # how MONITOR writes a newline, a quote, a byte
_ESCAPED = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b"}
_KEYS_AT_ODD = {"MSET"}
_ALL_KEYS = {"DEL", "EXISTS", "UNLINK"}
_NO_KEY = {"PUBLISH", "PING"}
_KEY_SECOND = {"XINFO"}  # XINFO GROUPS <key>


def _unescaped(text: str) -> str:
    """An argument as the client sent it (a script's text sent with EVAL has newlines)."""
    def one(found: re.Match[str]) -> str:
        escape = found.group(1)
        return chr(int(escape[1:], 16)) if len(escape) == 3 else _ESCAPED.get(escape, escape)

    return _ESCAPE.sub(one, text)


def touched_keys(args: list[str]) -> list[str]:
    name = args[0].upper()
    if name in _NO_KEY:
        return []
    if name in _KEYS_AT_ODD:
        return args[1::2]
    if name in _ALL_KEYS:
        return args[1:]
    return args[2:3] if name in _KEY_SECOND else args[1:2]


@dataclass
class ScriptKeys:
    """``async with ScriptKeys(url) as watch:`` ... then ``watch.undeclared`` lists (the
    script's first words, the command, the key) for each key a script touched without
    declaring it, and ``watch.ran`` holds the SHA-1 of each script seen."""

    url: str
    undeclared: list[tuple[str, str, str]] = field(default_factory=list)
    ran: set[str] = field(default_factory=set)
    calls: list[tuple[str, list[str]]] = field(default_factory=list)  # (script SHA-1, its declared keys)
    transactions: list[list[list[str]]] = field(default_factory=list)  # the commands each EXEC ran
    watched: list[list[str]] = field(default_factory=list)  # the keys each of them WATCHed
    _watching: dict[str, list[str]] = field(default_factory=dict)  # client -> keys WATCHed since its EXEC
    _open: dict[str, list[list[str]]] = field(default_factory=dict)  # client -> its commands since MULTI
    _declared: set[str] = field(default_factory=set)
    _script: str = ""
    _task: asyncio.Task[None] | None = None
    _writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> ScriptKeys:
        parsed = urlparse(self.url)
        if parsed.scheme == "unix":
            reader, self._writer = await asyncio.open_unix_connection(parsed.path)
        else:
            reader, self._writer = await asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 6379)
        self._writer.write(b"MONITOR\r\n")
        await self._writer.drain()
        assert (await reader.readline()).strip() == b"+OK"
        self._task = asyncio.create_task(self._read(reader))
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await asyncio.sleep(0.2)  # the last lines
        assert self._task is not None and self._writer is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            found = _LINE.match(line.decode("utf-8", "replace").rstrip("\r\n").removeprefix("+"))
            if found:
                self._seen(found.group(1), _ARG.findall(found.group(2)))

    def _seen(self, client: str, args: list[str]) -> None:
        if not args:
            return
        if client == "lua":  # a command the script being run sent (MONITOR shows them after it)
            for key in touched_keys(args):
                if key not in self._declared:
                    self.undeclared.append((self._script, args[0].upper(), key))
            return
        command = args[0].upper()
        if command == "MULTI":
            self._open[client] = []
            return
        if command == "EXEC":  # MONITOR shows what a transaction ran at its EXEC, between the two
            commands = self._open.pop(client, [])
            watched = self._watching.pop(client, [])
            if commands:
                self.transactions.append(commands)
                self.watched.append(watched)
            return
        if command == "WATCH":
            self._watching.setdefault(client, []).extend(args[1:])
        elif command == "UNWATCH":
            self._watching.pop(client, None)
        if client in self._open:
            self._open[client].append(args)
        if command in ("EVAL", "EVALSHA") and len(args) > 2:
            count = int(args[2])
            self._declared = set(args[3:3 + count])
            self._script = args[1][:60]
            sha = args[1] if args[0].upper() == "EVALSHA" else hashlib.sha1(_unescaped(args[1]).encode()).hexdigest()
            self.ran.add(sha)
            self.calls.append((sha, args[3:3 + count]))
