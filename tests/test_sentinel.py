"""Redis Sentinel: the bridge follows a failover without a restart, and with
``redis.wait_replicas: 1`` a primary killed under load loses no acknowledged message.

Real servers: a primary, a replica and three sentinels (quorum 2) on loopback; the bridge
as a real process; customers and agents writing through the HTTP API channel."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tests.harness import RunningBridge, merged, running_bridge, wait_for
from tests.load import ConversationLoad
from tests.mailservers import make_certificate
from tests.proc import BridgeProcess
from tests.servers import RedisServer, SentinelGroup, SentinelServer, free_port
from tests.test_api_e2e import AUTH, ENV, api_config
from tests.test_cli import bridge_cli, write
from tests.test_resilience import log_events, recoveries
from tests.webhook import WebhookReceiver

pytestmark = pytest.mark.slow


def test_check_config_names_the_sentinel_keys(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", {"redis": {
        "url": "redis://127.0.0.1:6379/0", "sentinels": ["10.0.0.5:26379", "sentinel-b", "10.0.0.7:99999"],
        "sentinel_password": "written-in-the-file", "wait_replicas": 1, "wait_timeout_ms": 5000,
        "publish_timeout_s": 2}})
    result = bridge_cli("check-config", "--config", str(bad), cwd=tmp_path)
    assert result.returncode == 1
    err = result.stderr
    assert "redis.sentinels: set either redis.url (one Redis) or redis.sentinels" in err
    assert "redis.sentinels[1]: 'sentinel-b' is not host:port" in err
    assert "redis.sentinels[2]: '10.0.0.7:99999' is not host:port" in err
    assert "redis.service: required with redis.sentinels" in err
    assert "redis.sentinel_password: secrets must come from the environment" in err
    assert "redis.publish_timeout_s: 2.0 s leaves no time for redis.wait_timeout_ms (5000 ms)" in err

    embedded = write(tmp_path / "embedded.yaml", {"redis": {
        "wait_replicas": 1, "service": "m", "username": "bridge", "tls_ca_file": "ca.pem"}})
    err = bridge_cli("check-config", "--config", str(embedded), cwd=tmp_path).stderr
    assert "redis.wait_replicas: the embedded Redis has no replicas" in err
    assert "redis.service: only used with redis.sentinels" in err
    assert "redis.username: only used with redis.sentinels; with redis.url, put the user in the URL" in err
    assert "redis.tls_ca_file: only used with TLS" in err
    one = write(tmp_path / "one.yaml", {"redis": {"url": "redis://127.0.0.1:6379/0", "sentinel_tls": True}})
    err = bridge_cli("check-config", "--config", str(one), cwd=tmp_path).stderr
    assert "redis.sentinel_tls: only used with redis.sentinels; with redis.url, use rediss://" in err

    locked = write(tmp_path / "locked.yaml", {"redis": {
        "sentinels": ["10.0.0.5:26379"], "service": "desk", "tls": True, "tls_ca_file": "missing-ca.pem",
        "tls_cert_file": str(write(tmp_path / "client.pem", "x"))}})
    err = bridge_cli("check-config", "--config", str(locked), cwd=tmp_path).stderr
    assert "redis.tls_ca_file: missing-ca.pem: no such file" in err
    assert "redis.tls_cert_file: the certificate and its key (redis.tls_key_file) go together" in err

    good = write(tmp_path / "good.yaml", {"redis": {
        "sentinels": ["10.0.0.5:26379", "[::1]:26380"], "service": "desk", "password": "${T_REDIS_PASSWORD}",
        "wait_replicas": 1}})
    result = bridge_cli("check-config", "--config", str(good), cwd=tmp_path, env={"T_REDIS_PASSWORD": "pw"})
    assert result.returncode == 0, result.stderr
    assert ("redis: redis.sentinels 10.0.0.5:26379, [::1]:26380 (redis.service desk), "
            "writes wait for 1 replica(s)") in result.stdout


async def test_primary_killed_under_load_loses_nothing_acknowledged(tmp_path: Path,
                                                                    webhook: WebhookReceiver) -> None:
    group = SentinelGroup(tmp_path / "redis")
    await asyncio.to_thread(group.start)
    old = group.primary
    config = merged(api_config(webhook.url), {
        "redis": {"url": None, "sentinels": group.addresses, "service": group.service,
                  "wait_replicas": 1, "wait_timeout_ms": 500, "publish_timeout_s": 2.0},
        "log": {"format": "json", "level": "WARNING"}})
    bridge = BridgeProcess(tmp_path, "", config, env=ENV)
    load = ConversationLoad(bridge.url, webhook, customers=6, prefix="failover")
    promoted: list[int] = []

    async def failover() -> None:
        await wait_for(lambda: load.sent >= 30, 20, "messages flowing")
        await asyncio.to_thread(old.kill)

        async def new_primary() -> int:
            port = await asyncio.to_thread(group.primary_port)
            return port if port not in (0, old.port) else 0

        promoted.append(await wait_for(new_primary, 30, "the sentinels to promote the replica"))
        # the dead host's replacement joins the new primary: writes can wait for a replica again
        await asyncio.to_thread(group.add_replica, promoted[0])

    try:
        await bridge.start()
        await load.open()
        await load.run_until(failover)
        tally = await load.tally()
        status = await asyncio.to_thread(bridge_cli, "status", "-c", str(bridge.path), cwd=tmp_path, env=ENV)
    except BaseException:
        print("bridge log (tail):", bridge.log())  # shown with the failure
        raise
    finally:
        await load.close()
        stopped = await bridge.stop()
        await asyncio.to_thread(group.stop)
    assert not tally, tally  # lost, doubled, out of order: all empty
    assert stopped == 0, bridge.log()
    assert load.statuses[503] > 0 and load.retry_after == {"1"}, load.statuses
    assert f"redis: primary 127.0.0.1:{promoted[0]} (named by Sentinel for service {group.service}), " \
           "1 replica(s) connected; writes wait for 1" in status.stdout, status.stdout + status.stderr
    ran = recoveries(log_events(tmp_path / "bridge.log"))
    assert {"api: 503", "engine: retried", "dispatcher: read retried"} <= ran, ran


def test_a_replacement_replica_is_promoted_only_once_it_has_the_data(tmp_path: Path) -> None:
    """What made the failover test's bridge find no consumer group (NOGROUP) on a busy
    machine: right after the first failover a sentinel missed the new primary's PONGs for
    down-after-milliseconds and failed it over again, to the dead host's replacement, which
    had joined and not yet had its first sync. The sentinels then named an empty primary,
    and made the primary holding the data its replica (flushed). That second failover is
    forced here, with SENTINEL FAILOVER, once every sentinel knows the replacement."""
    group = SentinelGroup(tmp_path / "redis")
    group.start()
    try:
        group.primary.command("SET", "kept", "1")
        assert group.primary.command("WAIT", "1", "5000") == "1"
        old = group.primary
        old.kill()
        group.wait(lambda: group.primary_port() not in (0, old.port), "the sentinels to promote the replica")
        promoted = group.primary_port()
        replacement = group.add_replica(promoted)
        assert replacement.command("GET", "kept") == "1"  # in sync when add_replica returns
        # every sentinel sees it as a candidate (Sentinel reads a replica's priority every 10 s)
        group.wait(lambda: all(_replica(s, group.service, replacement.port).get("slave-priority") == "100"
                               for s in group.sentinels), "every sentinel to see the replacement promotable", 30)
        reply = ""
        for _ in range(100):  # the first failover may still be under way on this sentinel
            reply = group.sentinels[0].command("SENTINEL", "FAILOVER", group.service)
            if not reply.startswith("INPROG"):
                break
            time.sleep(0.1)
        assert reply == "OK", reply
        group.wait(lambda: group.primary_port() not in (0, promoted), "the second failover")
        primary = group.server(group.primary_port())
        assert primary is replacement
        group.wait(lambda: primary.info("replication").get("role") == "master", "the named primary to be one")
        assert primary.command("GET", "kept") == "1", f"the data is gone: {primary.port} was promoted empty"
    finally:
        group.stop()


def _replica(sentinel: SentinelServer, service: str, port: int) -> dict[str, str]:
    """What ``sentinel`` knows of the replica on ``port`` (SENTINEL REPLICAS), {} if nothing."""
    lines = sentinel.command("SENTINEL", "REPLICAS", service).splitlines()
    for start in range(len(lines) - 1):
        if lines[start] == "name" and lines[start + 1] == f"127.0.0.1:{port}":
            fields: dict[str, str] = {}
            for i in range(start, len(lines) - 1, 2):
                if i > start and lines[i] == "name":
                    break
                fields[lines[i]] = lines[i + 1]
            return fields
    return {}


async def test_a_write_no_replica_confirmed_is_refused_and_its_retry_is_not_doubled(
        tmp_path: Path, webhook: WebhookReceiver) -> None:
    """With wait_replicas: 1 and no replica, the API answers 503 (the primary may hold the
    message, a failover would lose it); once a replica is back, the client's retry with the
    same message_id is accepted, and the customer gets one answer."""
    primary = RedisServer(tmp_path / "primary", free_port())
    primary.start()
    replica = RedisServer(tmp_path / "replica", free_port(), replica_of=primary.port)
    config = merged(api_config(webhook.url), {"redis": {"wait_replicas": 1, "wait_timeout_ms": 200}})
    body = {"customer_id": "w-1", "text": "Where is my parcel?", "message_id": "w-1"}
    try:
        async with running_bridge(primary.url, config, env=ENV) as b:
            refused = await b.post("/api/v1/messages", json=body, headers=AUTH)
            assert refused.status == 503 and refused.headers["Retry-After"] == "1"
            assert "temporarily unavailable" in (await refused.json())["error"]
            await asyncio.to_thread(replica.start)
            accepted = await wait_for(lambda: _accepted(b, body), 20, "the retry accepted")
            assert (await accepted.json())["duplicate"] is True  # the primary had it: not stored twice
            await b.wait_for(lambda: webhook.texts_for("w-1"), 20, "the answer")
            conversation = await b.store.for_address("api", "w-1")
            assert conversation is not None
            assert [m.text for m in await b.store.transcript(conversation.id) if m.kind == "customer"] == [
                "Where is my parcel?"]
    finally:
        replica.stop()
        primary.stop()
    assert len(webhook.texts_for("w-1")) == 1


async def _accepted(b: RunningBridge, body: dict[str, str]) -> aiohttp.ClientResponse | None:
    response = await b.post("/api/v1/messages", json=body, headers=AUTH)
    return response if response.status == 202 else None


def test_status_tells_a_replica_still_at_its_first_sync_apart(tmp_path: Path) -> None:
    """A replica that has connected and not yet had its first sync holds nothing and
    confirms no write: `bridge status` counts it apart, and says that writes waiting for a
    replica fail meanwhile (the API answers 503)."""
    primary = RedisServer(tmp_path / "primary", free_port())
    primary.start()
    primary.command("CONFIG", "SET", "repl-diskless-sync-delay", "60")  # the first sync waits a minute
    replica = RedisServer(tmp_path / "replica", free_port(), replica_of=primary.port)
    replica.start()
    try:
        SentinelGroup.wait(lambda: "state=wait_bgsave" in primary.command("INFO", "replication"),
                           "the replica connected, waiting for its first sync")
        config = write(tmp_path / "c.yaml", {"redis": {"url": primary.url, "wait_replicas": 1,
                                                       "wait_timeout_ms": 200}})
        status = bridge_cli("status", "-c", str(config), cwd=tmp_path, env=ENV)
        assert f"redis: primary {primary.url}, 1 replica(s) connected, 0 in sync; writes wait for 1 (too few " \
               "replicas in sync: publish and commit fail until one is)" in status.stdout, status.stdout + status.stderr
    finally:
        replica.stop()
        primary.stop()


REDIS_PASSWORD, WATCH_PASSWORD = "bridge-user-secret", "watch-user-secret"


async def test_a_locked_down_sentinel_set_up_is_reached_over_tls_with_acl_users(
        tmp_path: Path, webhook: WebhookReceiver) -> None:
    """Servers and sentinels speaking TLS to the bridge and asking for its certificate; the
    servers' default user may only PING and INFO (the bridge must log in as its ACL user),
    and the sentinels know the bridge by a user of their own. The bridge finds the primary
    and a customer gets an answer; the primary is killed, the sentinels promote the replica
    and the bridge follows them to it, over TLS, as that user; a wrong sentinel password is
    refused, named."""
    cert, key = make_certificate(tmp_path)
    tls = ("--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
           "--tls-replication", "yes")
    acl = ("--user", "default", "on", "nopass", "-@all", "+ping", "+info",
           "--user", "bridge", "on", f">{REDIS_PASSWORD}", "~*", "&*", "+@all",
           "--masteruser", "bridge", "--masterauth", REDIS_PASSWORD)
    tls_ports = [free_port(), free_port()]
    primary = RedisServer(tmp_path / "primary", free_port(), options=("--tls-port", str(tls_ports[0]), *tls, *acl))
    replica = RedisServer(tmp_path / "replica", free_port(), replica_of=tls_ports[0],
                          options=("--tls-port", str(tls_ports[1]), *tls, *acl))
    sentinel_ports = [free_port() for _ in range(3)]
    sentinels = [SentinelServer(tmp_path / f"sentinel-{i}", free_port(), tls_ports[0], "desk", lines=(
        f"tls-port {port}", f"tls-cert-file {cert}", f"tls-key-file {key}", f"tls-ca-cert-file {cert}",
        "tls-replication yes", "sentinel auth-user desk bridge", f"sentinel auth-pass desk {REDIS_PASSWORD}",
        f"user bridge-watch on >{WATCH_PASSWORD} allchannels +@all")) for i, port in enumerate(sentinel_ports)]
    servers: list[RedisServer | SentinelServer] = [primary, replica, *sentinels]
    redis = {"url": None, "sentinels": [f"127.0.0.1:{port}" for port in sentinel_ports], "service": "desk",
             "username": "bridge", "password": "${T_REDIS_PASSWORD}", "sentinel_username": "bridge-watch",
             "sentinel_password": "${T_WATCH_PASSWORD}", "tls": True, "sentinel_tls": True,
             "tls_ca_file": str(cert), "tls_cert_file": str(cert), "tls_key_file": str(key)}
    env = {**ENV, "T_REDIS_PASSWORD": REDIS_PASSWORD, "T_WATCH_PASSWORD": WATCH_PASSWORD}
    try:
        for server in servers:
            await asyncio.to_thread(server.start)
        await asyncio.to_thread(SentinelGroup.wait, lambda: all(
            int(s.master().get("num-slaves", 0)) >= 1 and s.master().get("flags") == "master" for s in sentinels),
            "the sentinels to know the primary and its replica")
        async with running_bridge("", merged(api_config(webhook.url), {"redis": redis}), env=env) as b:
            body = {"customer_id": "tls-1", "text": "Where is my parcel?", "message_id": "tls-1"}
            assert (await b.post("/api/v1/messages", json=body, headers=AUTH)).status == 202
            await b.wait_for(lambda: webhook.texts_for("tls-1"), 20, "the answer")
            await asyncio.to_thread(primary.kill)
            await asyncio.to_thread(SentinelGroup.wait, lambda: all(
                s.master().get("port") == str(tls_ports[1]) for s in sentinels), "the replica promoted")
            after = {"customer_id": "tls-2", "text": "Is it shipped yet?", "message_id": "tls-2"}

            async def stored() -> bool:  # 503 while the bridge finds the new primary (the id dedupes)
                return (await b.post("/api/v1/messages", json=after, headers=AUTH)).status == 202

            await b.wait_for(stored, 30, "the message stored on the promoted replica")
            await b.wait_for(lambda: webhook.texts_for("tls-2"), 30, "the answer after the failover")
        refused = await asyncio.to_thread(bridge_cli, "status", "-c", str(write(tmp_path / "wrong.yaml", merged(
            api_config(webhook.url), {"redis": redis}))), cwd=tmp_path, env={**env, "T_WATCH_PASSWORD": "wrong"})
    finally:
        for server in reversed(servers):
            await asyncio.to_thread(server.stop)
    assert refused.returncode != 0
    assert "no sentinel named a primary for redis.service 'desk': auth:AuthenticationError" in refused.stderr, \
        refused.stderr
    assert "(the sentinels' own login: redis.sentinel_username, redis.sentinel_password)" in refused.stderr
    assert WATCH_PASSWORD not in refused.stderr and "ssl_keyfile" not in refused.stderr
