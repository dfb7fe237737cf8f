"""`bridge status` and `bridge dlq` on a Redis Cluster (tests/cluster/conftest.py)."""

import asyncio
from pathlib import Path

from bridge import schema
from bridge.config import Settings
from bridge.connection import connect
from tests.servers import RedisClusterServers
from tests.test_cli import bridge_cli, test_status_and_dead_letters_from_the_command_line, write  # noqa: F401


async def test_status_names_the_cluster_s_primaries(redis_url: str, redis_cluster: RedisClusterServers,
                                                    tmp_path: Path) -> None:
    settings = Settings.model_validate({"redis": {"url": redis_url}})
    client = connect(settings.redis)
    await schema.prepare(client, settings.engine.partitions, lease_ttl_s=1)  # as `bridge run` starts
    await client.aclose()
    result = bridge_cli("status", "-c", str(write(tmp_path / "c.yaml", {"redis": {"url": redis_url}})), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    primaries = ", ".join(sorted(f"127.0.0.1:{node.port}" for node in redis_cluster.primaries))
    assert f"redis: Redis Cluster of primaries {primaries}, 3 replica(s) connected" in result.stdout


async def test_status_names_each_primary_whose_writes_cannot_be_confirmed(tmp_path: Path) -> None:
    """With ``wait_replicas`` each primary's writes wait for a replica of its own: status
    names those that have none in sync, not only a total over the cluster."""
    cluster = RedisClusterServers(tmp_path / "cluster", replicas=0)
    await asyncio.to_thread(cluster.start)
    try:
        url = cluster.url.replace("redis://", "redis+cluster://")
        config = write(tmp_path / "c.yaml", {"redis": {"url": url, "wait_replicas": 1}})
        client = connect(Settings.model_validate({"redis": {"url": url}}).redis)
        await schema.prepare(client, 8, lease_ttl_s=1)
        await client.aclose()
        first = cluster.primaries[0]
        await asyncio.to_thread(cluster.add_replica, first)
        result = await asyncio.to_thread(bridge_cli, "status", "-c", str(config), cwd=tmp_path)
    finally:
        await asyncio.to_thread(cluster.stop)
    assert result.returncode == 0, result.stderr
    others = ", ".join(sorted(f"127.0.0.1:{node.port}" for node in cluster.primaries[1:]))
    assert f"1 replica(s) connected; writes wait for 1 (too few replicas in sync on {others}: publish and " \
           "commit in their slots fail until one is)" in result.stdout, result.stdout
