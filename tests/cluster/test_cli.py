"""`bridge status` and `bridge dlq` on a Redis Cluster (tests/cluster/conftest.py)."""

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
