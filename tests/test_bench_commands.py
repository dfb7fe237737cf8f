"""`python -m bench` says where the redis-server's time per message goes, command by
command (INFO commandstats of a real server, between two snapshots)."""

from __future__ import annotations

import redis.asyncio as aioredis

from bench.__main__ import command_stats, stats_per_message


async def test_the_commands_of_a_run_are_shown_per_message_busiest_first(redis: aioredis.Redis) -> None:
    before = await command_stats(redis)
    # commands nothing else here runs (the server is the whole suite's)
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(40):
            pipe.append(f"bench-test:k{i}", "x" * 2000)
            pipe.strlen(f"bench-test:k{i}")
        await pipe.execute()
    await redis.unlink(*[f"bench-test:k{i}" for i in range(40)])
    shown = stats_per_message(before, await command_stats(redis), n=20, top=100)
    parts = dict(part.split(" ", 1) for part in shown.split(", "))
    assert parts["append"].endswith("(2.000)") and parts["strlen"].endswith("(2.000)")  # 40 calls, 20 messages
    assert parts["unlink"].endswith("(0.050)")
    assert "info" not in parts  # the snapshots' own INFO is left out
    times = [float(value.split()[0]) for value in parts.values()]
    assert times == sorted(times, reverse=True)
