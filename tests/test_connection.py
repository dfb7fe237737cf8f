"""The bridge's Redis client packs commands with hiredis (in C) instead of redis-py's
asyncio packer: the same bytes on the wire, and a real server answers them alike. Its pool
hands out connections without redis-py's per-checkout socket read, and still never one
holding a reply nobody asked for, nor one its server closed."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from bridge.config import RedisSettings
from bridge.connection import close, connect

ARGS: list[tuple[object, ...]] = [
    ("SET", "plain", "value"),
    ("SET", "bytes", b"\x00\xff\r\n binary"),
    ("SET", "ünïcode ✓", "言葉"),
    ("SET", "empty", ""),
    ("EVALSHA", "a" * 40, 3, "k1", "k2", "k3", 1, 2.5, -7),
    ("CONFIG GET", "maxmemory"),
]


async def test_commands_are_packed_as_redis_py_packs_them(redis_url: str) -> None:
    client = connect(RedisSettings(url=redis_url))
    try:
        ours = client.connection_pool.make_connection()
        theirs = Connection()
        for args in ARGS:
            assert b"".join(ours.pack_command(*args)) == b"".join(theirs.pack_command(*args)), args
        with pytest.raises(DataError):
            ours.pack_command("SET", "k", None)
        # and a server reads them: values back as written, a command name of two words split
        await client.set("t:ü", b"\x00\xff\r\n")
        assert await client.get("t:ü") == b"\x00\xff\r\n"
        assert await client.execute_command("CONFIG GET", "maxmemory")
    finally:
        await close(client)


async def test_a_connection_left_with_an_unread_reply_is_not_handed_out_again(redis_url: str) -> None:
    client = connect(RedisSettings(url=redis_url))
    try:
        await client.ping()
        pool = client.connection_pool
        connection = await pool.get_connection()
        await connection.send_command("ECHO", "stale")  # and never read: a caller cut off mid-command
        await asyncio.sleep(0.05)  # the reply arrives in the connection's buffer
        await pool.release(connection)
        assert await client.echo("fresh") == b"fresh"
        assert await client.echo("again") == b"again"
    finally:
        await close(client)


async def test_a_connection_its_server_closed_is_replaced(redis_url: str) -> None:
    client = connect(RedisSettings(url=redis_url))
    try:
        await client.client_setname("victim")
        killer = connect(RedisSettings(url=redis_url))
        try:
            victims = [c["id"] for c in await killer.client_list() if c.get("name") == "victim"]
            assert victims
            for victim in victims:
                await killer.client_kill_filter(_id=victim)
        finally:
            await close(killer)
        await asyncio.sleep(0.05)
        assert await client.echo("after") == b"after"
    finally:
        await close(client)
