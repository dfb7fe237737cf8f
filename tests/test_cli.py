"""The `bridge` command as an operator uses it (real processes, real Redis)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as sync_redis
import redis.asyncio as aioredis
import yaml

from bridge import keys
from bridge.bus import Bus
from bridge.connection import close
from bridge.model import Message
from tests.harness import wait_for
from tests.proc import BridgeProcess
from tests.servers import CLUSTER_PORT_MAX, RedisServer, free_port

ROOT = Path(__file__).parent.parent


def bridge_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # this checkout's code, whichever checkout the virtualenv was installed from
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "bridge", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path, **(env or {})}, timeout=60)


def write(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_check_config_names_every_bad_key_and_the_fix(tmp_path: Path) -> None:
    config = write(tmp_path / "bad.yaml", {
        "engine": {"partitions": 0, "stepz": ["x"]},
        "channels": {"api": {"token": "${NOT_SET_TOKEN}", "webhook_secret": "written-in-the-file",
                             "max_message_bytes": "big"}, "fax": {}},
    })
    result = bridge_cli("check-config", "--config", str(config), cwd=tmp_path, env={"NOT_SET_TOKEN": ""})
    assert result.returncode == 1
    err = result.stderr
    assert "engine.partitions: Input should be greater than or equal to 1" in err
    assert "engine.stepz: unknown key" in err
    assert "channels.api.token: environment variable NOT_SET_TOKEN is not set (export NOT_SET_TOKEN=...)" in err
    assert "channels.api.max_message_bytes" in err
    assert "channels.fax: unknown channel" in err


def test_check_config_rejects_literal_secrets_and_bad_references(tmp_path: Path) -> None:
    config = write(tmp_path / "bad.yaml", {
        "queues": {"default": {"email": "not-an-address"}},
        "agents": {"channels": ["slack"]},
        "engine": {"steps": ["triage", "telepathy"]},
        "channels": {"api": {"token": "written-in-the-file"}},
    })
    err = bridge_cli("check-config", "-c", str(config), cwd=tmp_path).stderr
    assert "channels.api.token: secrets must come from the environment" in err
    assert "${CHANNELS_API_TOKEN}" in err
    assert "agents.channels[0]: channel 'slack' is not configured" in err
    assert "queues.default.email: 'not-an-address' is not an email address" in err
    assert "engine.steps[1]: unknown step 'telepathy'" in err


def test_check_config_reports_yaml_errors_with_the_line(tmp_path: Path) -> None:
    config = write(tmp_path / "broken.yaml", "engine:\n  partitions: 8\n   batch_size: [\n")
    result = bridge_cli("check-config", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 1 and "not valid YAML at line" in result.stderr
    missing = bridge_cli("check-config", "-c", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert "no such config file" in missing.stderr


def test_check_config_checks_the_flows_settings_and_files(tmp_path: Path) -> None:
    config = write(tmp_path / "bridge.yaml", {
        "engine": {"steps": ["triage", "kb", "sla", "routing"]},
        "flows": {"kb": {"path": "faq/missing.yaml"}, "sla": {"warn_fraction": 1.5}},
    })
    result = bridge_cli("check-config", "-c", str(config), cwd=Path("/"))
    assert result.returncode == 1
    # the relative path is the config file's directory's, whatever the working directory
    assert f"flows.kb.path: no such file {str(tmp_path / 'faq' / 'missing.yaml')!r}" in result.stderr
    assert "flows.sla.warn_fraction: Input should be less than 1" in result.stderr


def test_check_config_accepts_the_example(tmp_path: Path) -> None:
    example = Path(__file__).parent.parent / "config.example.yaml"
    result = bridge_cli("check-config", "-c", str(example), cwd=tmp_path,
                        env={"BRIDGE_API_TOKEN": "t0ken-value", "BRIDGE_WEBHOOK_SECRET": "s3cret-value"})
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "channels: api" in result.stdout


async def test_status_and_dead_letters_from_the_command_line(redis_url: str, redis: aioredis.Redis,
                                                              tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", {"redis": {"url": redis_url}})
    bus = Bus(redis, partitions=8)
    stream = bus.inbound_stream(Message(kind="customer", channel="api", address="x"))
    await bus.ensure_group(stream, "engine")
    await bus.publish(Message(kind="customer", channel="api", address="x", text="stuck message"))
    (entry,) = await bus.read([stream], "engine", "w", count=1, block_ms=None)
    await bus.commit([*bus.dead_letter_ops(stream, "engine", entry, "failed 5 times: ValueError: boom"),
                      *bus.ack_ops(stream, "engine", [entry])])
    await bus.publish(Message(kind="customer", channel="api", address="x", text="waiting"))
    for p in (0, 5):  # cases two partitions filed in one email queue
        await redis.xadd(keys.queue("default", p, 8), {keys.PAYLOAD_FIELD: b"case"})
    for p in (1, 6):  # replies two partitions wrote to the api channel: one read, not yet acknowledged
        await bus.ensure_group(keys.outbound("api", p, 8), keys.DISPATCH_GROUP)
        await redis.xadd(keys.outbound("api", p, 8), {keys.PAYLOAD_FIELD: b"reply"})
    await redis.xreadgroup(keys.DISPATCH_GROUP, "d", {keys.outbound("api", 1, 8): ">"})

    status = bridge_cli("status", "-c", str(config), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "dead letters: 1" in status.stdout
    rows = [line.split() for line in status.stdout.splitlines()]
    assert [row[:2] for row in rows if row and row[0].startswith(("queue:", "dlq:"))] == [["queue:default", "2"]]
    line = next(line for line in status.stdout.splitlines() if line.startswith(stream.removeprefix("bridge:")))
    assert line.split()[1:5] == ["2", "engine", "0", "1"]  # length 2, nothing pending, 1 waiting
    # a channel's outbound streams (one per partition) show as one row
    assert [row[1:5] for row in rows if row and row[0].startswith("out:")] == [["2", "dispatch", "1", "1"]]
    assert [row[0] for row in rows if row and row[0].startswith("out:")] == ["out:api"]
    data = json.loads(bridge_cli("status", "--json", "-c", str(config), cwd=tmp_path).stdout)
    assert data["dead_letters"] == 1
    assert any(s["stream"] == stream and s["groups"][0]["lag"] == 1 for s in data["streams"])

    listing = bridge_cli("dlq", "list", "-c", str(config), cwd=tmp_path)
    assert "failed 5 times: ValueError: boom" in listing.stdout and "'stuck message'" in listing.stdout
    dlq_id = listing.stdout.split()[0]
    replay = bridge_cli("dlq", "replay", dlq_id, "-c", str(config), cwd=tmp_path)
    assert replay.stdout.startswith("replayed 1 dead letter(s)")
    assert json.loads(bridge_cli("dlq", "list", "--json", "-c", str(config), cwd=tmp_path).stdout) == []
    assert await redis.xlen(stream) == 3


def test_status_without_a_running_bridge_says_so(tmp_path: Path) -> None:
    result = bridge_cli("status", cwd=tmp_path)
    assert result.returncode == 2 and "is `bridge run` running" in result.stderr


@pytest.mark.slow
async def test_embedded_redis_runs_with_no_url_and_stops_on_exit(tmp_path: Path) -> None:
    bridge = BridgeProcess(tmp_path, "", {"redis": {"url": None, "data_dir": str(tmp_path / "data")}})
    await bridge.start()
    try:
        status = bridge_cli("status", "-c", str(bridge.path), cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert keys.inbound(0, 8).removeprefix(keys.PREFIX) in status.stdout  # in:{0.1}
        client = aioredis.Redis.from_url(f"unix://{tmp_path / 'data' / 'redis.sock'}")
        assert await client.config_get("appendonly") == {"appendonly": "yes"}
        await close(client)
    finally:
        assert await bridge.stop(signal.SIGTERM) == 0
    await wait_for(lambda: not (tmp_path / "data" / "redis.sock").exists(), 10, "the embedded Redis to stop")
    assert (tmp_path / "data" / "appendonlydir").is_dir()
    assert "bridge stopped" in bridge.log()


def test_no_redis_binary_says_how_to_get_one(tmp_path: Path) -> None:
    result = bridge_cli("run", cwd=tmp_path, env={"PATH": str(tmp_path)})
    assert result.returncode == 2
    assert "apt-get install redis-server" in result.stderr and "redis.url" in result.stderr


async def test_report_command_writes_html_and_csv(redis_url: str, tmp_path: Path) -> None:
    from tests.harness import running_bridge

    config = {"channels": {"api": {"token": "${T_TOKEN}"}}}
    async with running_bridge(redis_url, config, env={"T_TOKEN": "report-token"}) as b:
        for i in range(3):
            await b.post("/api/v1/messages", headers={"Authorization": "Bearer report-token"},
                         json={"customer_id": f"rep-{i}", "text": "Where is my order?"})
        await b.wait_for(lambda: b.store.for_address("api", "rep-2"))
    cfg = write(tmp_path / "c.yaml", {"redis": {"url": redis_url}})
    result = bridge_cli("report", "--out", str(tmp_path / "out"), "-c", str(cfg), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<svg" in html
    rows = (tmp_path / "out" / "conversations.csv").read_text().strip().splitlines()
    assert len(rows) == 4  # header and three conversations


async def test_changing_the_partition_count_of_existing_data_is_refused(redis_url: str) -> None:
    from bridge.errors import BridgeError
    from tests.harness import running_bridge

    async with running_bridge(redis_url, {"engine": {"partitions": 8}}):
        pass
    with pytest.raises(BridgeError, match=r"engine.partitions: this Redis holds data for 8 partitions.*set"):
        async with running_bridge(redis_url, {"engine": {"partitions": 4}}):
            pass


def test_a_port_in_use_is_named_without_a_traceback(redis_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write(tmp_path / "c.yaml", {"redis": {"url": redis_url}, "http": {"host": "127.0.0.1", "port": port}})
        result = bridge_cli("run", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert f"http.port {port}: 127.0.0.1:{port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


async def test_run_with_port_0_prints_the_port_it_got(redis_url: str, tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", {"redis": {"url": redis_url}, "http": {"host": "127.0.0.1"}})
    log_path = tmp_path / "run.log"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "bridge", "run", "-c", str(config), "--port", "0"],  # noqa: ASYNC220
                                   cwd=tmp_path, stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": path})
    try:
        found = await wait_for(lambda: re.search(r"bridge running: http://localhost:(\d+)", log_path.read_text()),
                               20, "the start-up line")
        port = int(found.group(1))
        assert port != 0
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 30)


def test_status_names_redis_url_when_redis_cannot_be_reached(tmp_path: Path) -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    config = write(tmp_path / "c.yaml", {"redis": {"url": f"redis://:${{T_REDIS_PASSWORD}}@127.0.0.1:{port}/0"}})
    result = bridge_cli("status", "-c", str(config), cwd=tmp_path, env={"T_REDIS_PASSWORD": "s3cret"})
    assert result.returncode == 2
    assert f"cannot reach Redis at redis.url redis://127.0.0.1:{port}/0" in result.stderr
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr


def test_report_to_a_path_that_cannot_be_written_names_the_path(redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    bad = tmp_path / "a-file" / "report"
    cfg = write(tmp_path / "c.yaml", {"redis": {"url": redis_url}})
    result = bridge_cli("report", "--out", str(bad), "-c", str(cfg), cwd=tmp_path)
    assert result.returncode == 2
    assert f"--out {bad}: cannot write the report there: Not a directory" in result.stderr
    assert "Redis" not in result.stderr and "Traceback" not in result.stderr


async def test_dlq_replay_and_drop_name_the_ids_they_did_not_find(redis_url: str, redis: aioredis.Redis,
                                                                 tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", {"redis": {"url": redis_url}})
    bus = Bus(redis, partitions=8)
    stream = bus.inbound_stream(Message(kind="customer", channel="api", address="x"))
    await bus.ensure_group(stream, "engine")
    for text in ("one", "two"):
        await bus.publish(Message(kind="customer", channel="api", address="x", text=text))
    for entry in await bus.read([stream], "engine", "w", count=2, block_ms=None):
        await bus.commit([*bus.dead_letter_ops(stream, "engine", entry, "failed"),
                          *bus.ack_ops(stream, "engine", [entry])])
    first, second = (row["dlq_id"] for row in await bus.dead_letters())

    replay = bridge_cli("dlq", "replay", "unknown-id", first, "-c", str(config), cwd=tmp_path)
    assert replay.returncode == 1
    assert replay.stdout.startswith("replayed 1 dead letter(s)")
    assert "not found: unknown-id (no such dead letter" in replay.stderr
    drop = bridge_cli("dlq", "drop", "gone-1", second, "gone-2", "-c", str(config), cwd=tmp_path)
    assert drop.returncode == 1
    assert drop.stdout.startswith("dropped 1 dead letter(s)")
    assert "not found: gone-1, gone-2 (no such dead letter" in drop.stderr
    assert await bus.dead_letters() == []
    assert bridge_cli("dlq", "replay", "unknown-id", "-c", str(config), cwd=tmp_path).returncode == 1


def test_a_cluster_node_given_as_one_redis_is_refused_saying_why(tmp_path: Path) -> None:
    """A cluster node given as a plain URL is refused before anything is written to it,
    saying how to give the cluster; a cluster URL's misspelt scheme is a config error naming
    the key."""
    config = write(tmp_path / "cluster.yaml", {"redis": {"url": "cluster://127.0.0.1:7000"}})
    result = bridge_cli("check-config", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert "redis.url: cluster:// is not a Redis Cluster URL; use redis+cluster://host:6379" in result.stderr
    config = write(tmp_path / "cluster.yaml", {"redis": {"url": "redis+cluster://127.0.0.1:7000",
                                                         "wait_replicas": 1}})
    result = bridge_cli("check-config", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "writes wait for 1 replica(s)" in result.stdout
    config = write(tmp_path / "typo.yaml", {"redis": {"url": "127.0.0.1:6379"}})
    assert "redis.url: '127.0.0.1:6379' is not a Redis URL" in bridge_cli("check-config", "-c", str(config),
                                                                        cwd=tmp_path).stderr

    node = RedisServer(tmp_path / "node", free_port(highest=CLUSTER_PORT_MAX), cluster=True)
    node.start()
    try:
        config = write(tmp_path / "node.yaml", {"redis": {"url": node.url}})
        for command in (["status"], ["run", "--port", "0"]):
            result = bridge_cli(*command, "-c", str(config), cwd=tmp_path)
            assert result.returncode != 0, result.stdout
            assert f"redis.url {node.url} is a Redis Cluster node" in result.stderr
            assert f"give the cluster as redis+cluster://127.0.0.1:{node.port}/0" in result.stderr
            assert "Traceback" not in result.stderr
        assert sync_redis.Redis(port=node.port).dbsize() == 0  # nothing written to it
    finally:
        node.stop()
