"""Hostile input costs the sender, never the desk (issue 11): each attack through the real
path (real HTTP and WebSocket, real Redis, the `bridge` command)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import stat
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.widget.console import REVOKED, TOPIC_LOGOUT, hash_password
from bridge import keys, logs
from bridge.config import RedisSettings, Settings, secrets_in
from bridge.model import Message
from tests.harness import RunningBridge, running_bridge, wait_for
from tests.test_api_e2e import AUTH, api_config
from tests.test_api_e2e import ENV as API_ENV
from tests.test_cli import bridge_cli, write
from tests.test_widget_protocol import ENV, PNG, console_login, open_tab, widget_config
from tests.webhook import WebhookReceiver
from tests.widget_client import Tab


@pytest.fixture
async def tabs() -> AsyncIterator[list[Tab]]:
    opened: list[Tab] = []
    yield opened
    for tab in opened:
        await tab.close()


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


async def upload(b: RunningBridge, token: str, data: Any, *, ip: str = "", mime: str = "image/png") -> Any:
    headers = {"Origin": b.url, "Authorization": f"Bearer {token}", "Content-Type": mime,
               "X-File-Name": urllib.parse.quote("board.png")}
    if ip:
        headers["X-Forwarded-For"] = f"203.0.113.250, {ip}"  # the proxy appends the client's address
    return await b.post("/widget/upload", data=data, headers=headers)


async def in_pieces(data: bytes, piece: int) -> AsyncIterator[bytes]:
    """A body sent chunked, piece by piece, as a slow client or a proxy delivers it."""
    for start in range(0, len(data), piece):
        yield data[start:start + piece]
        await asyncio.sleep(0)  # let the server (same loop) read what has arrived so far


# -- 1. API dedupe keys ----------------------------------------------------------------

async def test_ids_with_the_separator_never_drop_another_customers_message(
        redis_url: str, webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, api_config(webhook.url, max_message_bytes=65536), env=API_ENV) as b:
        def partition(customer: str) -> str:
            return b.bus.inbound_stream(Message(kind="customer", channel="api", address=customer))

        # 16 pairs whose two customers share an inbound partition, with ids that read the
        # same once joined by ":" (customer "a:b" + id "c", customer "a" + id "b:c")
        pairs = [(f"{n}:x", "y", str(n), "x:y") for n in range(400)
                 if partition(f"{n}:x") == partition(str(n))][:16]
        assert len(pairs) == 16
        for first_customer, first_id, second_customer, second_id in pairs:
            for customer, message_id in ((first_customer, first_id), (second_customer, second_id)):
                r = await b.post("/api/v1/messages", headers=AUTH,
                                 json={"customer_id": customer, "message_id": message_id, "text": "hello"})
                assert r.status == 202 and (await r.json())["duplicate"] is False, (customer, message_id)
                # a retry of each is still recognised as the same message
                r = await b.post("/api/v1/messages", headers=AUTH,
                                 json={"customer_id": customer, "message_id": message_id, "text": "hello"})
                assert (await r.json())["duplicate"] is True, (customer, message_id)
        # a back end's reply ids are its own per conversation: the same id in two conversations is two replies
        conversations = [await wait_for(lambda c=c: b.store.for_address("api", c), what=c) for c in pairs[0][::2]]
        for conversation in conversations:
            r = await b.post(f"/api/v1/conversations/{conversation.id}/messages", headers=AUTH,
                             json={"text": "On its way.", "message_id": "reply-1"})
            assert r.status == 202 and (await r.json())["duplicate"] is False


# -- 2. bodies read to the end -----------------------------------------------------------

async def test_a_chunked_api_message_is_read_whole_and_a_too_long_one_gets_413(
        redis_url: str, webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, api_config(webhook.url, max_message_bytes=65536), env=API_ENV) as b:
        text = "The board arrived burnt. " * 1000  # 25,000 bytes in 2,000-byte chunks
        body = json.dumps({"customer_id": "chunky", "text": text}).encode()
        r = await b.post("/api/v1/messages", headers={**AUTH, "Content-Type": "application/json"},
                         data=in_pieces(body, 2000))
        assert r.status == 202, await r.text()
        conversation = await wait_for(lambda: b.store.for_address("api", "chunky"), what="the conversation")
        (message,) = [m for m in await b.store.transcript(conversation.id) if m.kind == "customer"]
        assert message.text == text
        too_long = json.dumps({"customer_id": "chunky", "text": "x" * 70_000}).encode()
        r = await b.post("/api/v1/messages", headers=AUTH, data=in_pieces(too_long, 8192))
        assert r.status == 413 and "over 65536 bytes" in (await r.json())["error"]


async def file_through_the_console(b: RunningBridge, tab: Tab, file_id: str) -> bytes:
    """Attach an uploaded file to a message and download it as an agent would."""
    visitor = (await tab.welcome())["visitor"]
    await tab.ws.send_str(json.dumps({"type": "message", "cid": "f1", "text": "the photo", "files": [file_id]}))
    conversation = await wait_for(lambda: b.store.for_address("widget", visitor), what="the conversation")
    cookie = await console_login(b)
    r = await b.get(f"/agent/api/conversations/{conversation.id}", headers=cookie)
    (item,) = [i for i in (await r.json())["transcript"] if i["who"] == "customer"]
    async with b.http.get(item["attachments"][0]["url"].replace("http://localhost", "http://127.0.0.1")) as got:
        assert got.status == 200
        return await got.read()


async def test_a_300000_byte_upload_is_stored_and_served_whole(redis_url: str, tabs: list[Tab]) -> None:
    async with running_bridge(redis_url, widget_config(), env=ENV) as b:
        tab = await open_tab(tabs, b)
        token = (await tab.welcome())["token"]
        data = (PNG + bytes(range(256)) * 40)[:300_000]
        data = (data * (300_000 // len(data) + 1))[:300_000]
        r = await upload(b, token, in_pieces(data, 16_384))
        assert r.status == 200, await r.text()
        assert (await r.json())["size"] == 300_000
        assert await file_through_the_console(b, tab, (await r.json())["id"]) == data
        over = await upload(b, token, in_pieces(b"x" * (5 * 1024 * 1024 + 1), 65536))
        assert over.status == 413 and (await over.json())["error"] == "file too large"


# -- 3. quotas across processes ------------------------------------------------------------

async def test_upload_quotas_hold_across_processes(redis_url: str, tabs: list[Tab]) -> None:
    config = widget_config(trust_forwarded_for=True, uploads={"per_ip_per_hour": 3, "max_stored_mb": 0.01})
    async with running_bridge(redis_url, config, env=ENV) as b, \
            running_bridge(redis_url, {**config, "roles": ["web"]}, env=ENV) as other:
        tokens = []
        for bridge in (b, other, b, other):  # fresh visitors, in both processes, one address
            tab = await open_tab(tabs, bridge)
            tokens.append((await tab.welcome())["token"])
        for i, (bridge, token) in enumerate(zip((b, other, b), tokens, strict=False)):
            assert (await upload(bridge, token, PNG[:100], ip="198.51.100.7")).status == 200, i
        refused = await upload(other, tokens[3], PNG[:100], ip="198.51.100.7")
        assert refused.status == 429
        body = await refused.json()
        assert body["error"] == "too many files from this address this hour" and body["retry_after_ms"] > 0
        # another address may still upload, until the stored bytes are full (10,485 bytes)
        assert (await upload(b, tokens[3], b"a" * 9000, ip="198.51.100.8", mime="text/plain")).status == 200
        full = await upload(other, tokens[3], b"b" * 2000, ip="198.51.100.9", mime="text/plain")
        assert full.status == 507 and "max_stored_mb" in (await full.json())["error"]


async def test_new_visitors_per_address_are_limited_across_processes(redis_url: str, tabs: list[Tab]) -> None:
    config = widget_config(trust_forwarded_for=True, limits={"new_visitors_per_ip_per_hour": 2})
    async with running_bridge(redis_url, config, env=ENV) as b, \
            running_bridge(redis_url, {**config, "roles": ["web"]}, env=ENV) as other:
        proxy = {"X-Forwarded-For": "192.0.2.44"}
        first = await open_tab(tabs, b, headers=proxy)
        token = (await first.welcome())["token"]
        await (await open_tab(tabs, other, headers=proxy)).welcome()
        third = await open_tab(tabs, other, headers=proxy)
        assert await third.closed() == 1008
        assert {"type": "error", "code": "too_many_visitors"} in third.frames
        # a returning visitor (a valid token) and another address are still welcome
        again = await open_tab(tabs, b, headers=proxy, hello={"token": token})
        assert (await again.welcome())["visitor"] == (await first.welcome())["visitor"]
        elsewhere = await open_tab(tabs, b, headers={"X-Forwarded-For": "192.0.2.45"})
        assert (await elsewhere.welcome())["visitor"]


# -- 4. the embedded Redis: private files, capped memory, no secret in clear ----------------

async def test_the_embedded_redis_is_private_capped_and_holds_no_secret(tmp_path: Path, tabs: list[Tab]) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir(mode=0o755)  # left world-readable by an older version
    config = {"redis": {"url": "", "data_dir": str(data_dir)}, "channels": {"widget": {}},
              "agents": {"channels": ["widget"]}}
    async with running_bridge("", config) as b:
        memory = {str(k, "ascii") if isinstance(k, bytes) else k: str(v, "ascii") if isinstance(v, bytes) else v
                  for k, v in (await b.redis.config_get("maxmemory*")).items()}
        assert memory["maxmemory"] == str(1024 * 1024 * 1024) and memory["maxmemory-policy"] == "noeviction"
        adapter: Any = b.bridge.adapters["widget"]
        tab = await open_tab(tabs, b)
        await tab.say("s1", "hello")
        await wait_for(lambda: any(f["type"] == "ack" for f in tab.frames), what="the ack")
        console_token = adapter.generated_console_token
        assert console_token
        r = await b.post("/agent/login", json={"token": console_token})
        assert r.status == 200
        secret = (data_dir / "widget-secret").read_text().strip()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"widget-secret", "redis.log"} and any(p.suffix == ".aof" for p in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        if path.name != "widget-secret":
            content = path.read_bytes()
            assert secret.encode() not in content and console_token.encode() not in content, path
    for path in (p for p in data_dir.rglob("*") if p.is_dir()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


# -- 5. console logins -----------------------------------------------------------------------

async def test_a_guesser_behind_the_proxy_locks_out_only_themselves(redis_url: str) -> None:
    agents = {"ann": hash_password("ann-password"), "bob": hash_password("bob-password")}
    config = widget_config(trust_forwarded_for=True, console={"agents": agents, "login_failures_per_ip_and_name": 3,
                                                                "login_failures_per_ip": 5})
    config["channels"]["widget"]["console"].pop("token")
    async with running_bridge(redis_url, config, env=ENV) as b, \
            running_bridge(redis_url, {**config, "roles": ["web"]}, env=ENV) as other:
        attacker = {"X-Forwarded-For": "198.51.100.66"}
        for bridge in (b, other, b):
            r = await bridge.post("/agent/login", json={"name": "ann", "password": "guess"}, headers=attacker)
            assert r.status == 401
        r = await other.post("/agent/login", json={"name": "ann", "password": "ann-password"}, headers=attacker)
        assert r.status == 429 and "too many failed logins" in (await r.json())["error"]
        assert int(r.headers["Retry-After"]) > 0
        # ann from her own address, and bob, are not locked out by the guesser
        for name, ip in (("ann", "198.51.100.10"), ("bob", "198.51.100.11")):
            r = await b.post("/agent/login", json={"name": name, "password": f"{name}-password"},
                             headers={"X-Forwarded-For": ip})
            assert r.status == 200, name
        # the guesser moves on to bob: two more failures, then the address is out for every name
        for _ in range(2):
            r = await b.post("/agent/login", json={"name": "bob", "password": "guess"}, headers=attacker)
            assert r.status == 401
        r = await b.post("/agent/login", json={"name": "bob", "password": "bob-password"}, headers=attacker)
        assert r.status == 429


async def test_logout_closes_the_sessions_live_sockets_in_every_process(redis_url: str) -> None:
    async with running_bridge(redis_url, widget_config(), env=ENV) as b, \
            running_bridge(redis_url, {**widget_config(), "roles": ["web"]}, env=ENV) as other:
        cookie = await console_login(b)
        async with aiohttp.ClientSession() as http, http.ws_connect(
                other.url + "/agent/ws", headers={"Origin": other.url, **cookie}) as live:
            async def both_listen() -> bool:  # the other process follows logouts once it holds a console
                ((_, count),) = await b.redis.pubsub_numsub(keys.FANOUT + TOPIC_LOGOUT)
                return int(count) == 2
            await wait_for(both_listen, what="both processes listening for logouts")
            r = await b.post("/agent/logout", json={}, headers={"Origin": b.url, **cookie})
            assert r.status == 200
            closed = await live.receive(timeout=10)
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_a_revoked_session_loses_its_live_socket_even_when_the_news_is_lost(redis_url: str) -> None:
    async with running_bridge(redis_url, widget_config(console={"poll_interval_s": 0.2}), env=ENV) as b:
        cookie = await console_login(b)
        session = await b.get("/agent/api/me", headers=cookie)
        assert session.status == 200
        async with aiohttp.ClientSession() as http, http.ws_connect(
                b.url + "/agent/ws", headers={"Origin": b.url, **cookie}) as live:
            # the logout's fanout message never arrived here; its record in Redis did
            signed = cookie["Cookie"].split("=", 1)[1]
            sid = json.loads(base64.urlsafe_b64decode(signed.split(".")[0] + "=="))["s"]
            await b.redis.set(keys.adapter_state("widget", REVOKED + sid), "1")
            closed = await live.receive(timeout=10)
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


# -- 6. log masking and literal secrets ------------------------------------------------------

def test_logs_mask_tracebacks_extras_generated_secrets_and_the_redis_password(
        capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup("INFO", "json", ["configured-token-1", "pw-secret-3"])
        logs.add_secret("generated-secret-2")
        log = logging.getLogger("bridge.test")
        try:
            raise RuntimeError("connect to redis://:pw-secret-3@db failed with configured-token-1")
        except RuntimeError:
            log.exception("boom", extra={"detail": {"token": "generated-secret-2"}, "count": 3})
        logs.setup("INFO", "text", secrets_in(Settings(redis=RedisSettings(url="redis://:pw-secret-3@db:6379/0"))))
        log.warning("url %s", "redis://:pw-secret-3@db", extra={"error": ValueError("pw-secret-3")})
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    for secret in ("configured-token-1", "generated-secret-2", "pw-secret-3"):
        assert secret not in err
    assert "Traceback" in err and "RuntimeError" in err and '"count": 3' in err


def test_check_config_refuses_literal_credentials_wherever_they_hide(tmp_path: Path) -> None:
    config = write(tmp_path / "bad.yaml", {
        "redis": {"url": "redis://:hunter2hunter2@127.0.0.1:6379/0"},
        "channels": {"api": {"token": "literal-token${NOPE:-}", "webhook_secret": "${NOPE:-fallback-secret}"}},
        "engine": {"steps": ["triage", "order_status", "routing"]},
        "flows": {"order_status": {"url": "https://shop.example/api/{order}",
                                   "headers": {"Authorization": "Bearer abc123", "X-Api-Key": "k-123",
                                               "Accept": "application/json"}}},
    })
    result = bridge_cli("check-config", "-c", str(config), cwd=tmp_path, env={"NOPE": ""})
    assert result.returncode == 1
    err = result.stderr
    assert "redis.url: the password is written in the file" in err
    assert "channels.api.token: secrets must come from the environment" in err
    assert "channels.api.webhook_secret: secrets must come from the environment" in err
    assert "flows.order_status.headers.Authorization: a credential written in the file" in err
    assert "flows.order_status.headers.X-Api-Key: a credential written in the file" in err
    assert "Accept" not in err
    assert "hunter2" not in err and "abc123" not in err

    template = write(tmp_path / "template.yaml", {"replies": {"ack": {"tl": "Salamat {", "en": "Thanks {0}"}}})
    err = bridge_cli("check-config", "-c", str(template), cwd=tmp_path).stderr
    assert "replies.ack.tl: 'Salamat {' cannot be rendered" in err and "replies.ack.en:" in err

    good = write(tmp_path / "good.yaml", {
        "redis": {"url": "redis://:${T_REDIS_PASSWORD}@127.0.0.1:6379/0"},
        "channels": {"api": {"token": "${T_TOKEN}"}},
        "engine": {"steps": ["triage", "order_status", "routing"]},
        "flows": {"order_status": {"url": "https://shop.example/api/{order}",
                                   "headers": {"Authorization": "Bearer ${T_SHOP}", "X-Api-Key": "${T_SHOP}"}}},
        "replies": {"ack": {"tl": "Salamat! Sanggunian: {reference} {{ok}}"}},
    })
    result = bridge_cli("check-config", "-c", str(good), cwd=tmp_path,
                        env={"T_REDIS_PASSWORD": "pw", "T_TOKEN": "tok-value", "T_SHOP": "shop-value"})
    assert result.returncode == 0, result.stderr


# -- 7. deeply nested JSON -------------------------------------------------------------------

async def test_deeply_nested_json_gets_a_clear_refusal(redis_url: str, tabs: list[Tab],
                                                       webhook: WebhookReceiver) -> None:
    config = {**widget_config(), "channels": {**widget_config()["channels"],
                                              **api_config(webhook.url, max_message_bytes=65536)["channels"]}}
    async with running_bridge(redis_url, config, env={**ENV, **API_ENV}) as b:
        tab = await open_tab(tabs, b)
        await tab.welcome()
        await tab.ws.send_str('{"type":"message","cid":"d1","text":' + deep(5000) + "}")
        assert await tab.closed() == 1007
        hello = await open_tab(tabs, b, hello=None)
        await hello.ws.send_str(deep(8000))
        assert await hello.closed() == 1007
        r = await b.post("/agent/login", data=deep(20_000), headers={"Content-Type": "application/json"})
        assert r.status == 400 and "send JSON" in (await r.json())["error"]
        cookie = await console_login(b)
        r = await b.post("/agent/api/conversations/x/reply", data='{"text":' + deep(20_000) + "}",
                         headers={"Origin": b.url, "Content-Type": "application/json", **cookie})
        assert r.status == 400
        r = await b.post("/agent/api/conversations/x/reply", json={"text": "x" * 300_000},
                         headers={"Origin": b.url, **cookie})
        assert r.status == 413 and "over 262144 bytes" in (await r.json())["error"]
        r = await b.post("/api/v1/messages", headers=AUTH,
                         data='{"customer_id":"c","text":"hi","attachments":' + deep(30_000) + "}")
        assert r.status == 400 and "invalid" in (await r.json())["error"]
        fine = await open_tab(tabs, b)
        await fine.say("ok", "still here")
        await wait_for(lambda: any(f["type"] == "ack" for f in fine.frames), what="the server still answers")


# -- 8. origins never from the Host header -------------------------------------------------

async def test_a_forged_host_header_makes_no_origin_ours(redis_url: str, tabs: list[Tab]) -> None:
    async with running_bridge(redis_url, widget_config(), env=ENV) as b:
        evil = {"Host": "evil.example", "Origin": "http://evil.example"}
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(b.url + "/widget/ws", headers=evil)
            assert refused.value.status == 403
        cookie = await console_login(b)
        r = await b.post("/agent/api/conversations/x/reply", json={"text": "hi"}, headers={**evil, **cookie})
        assert r.status == 403
        tab = await open_tab(tabs, b)
        token = (await tab.welcome())["token"]
        r = await b.post("/widget/upload", data=PNG[:100], headers={
            **evil, "Authorization": f"Bearer {token}", "Content-Type": "image/png"})
        assert r.status == 403
        # the bridge's own origin, and its loopback aliases, are still ours
        port = b.url.rsplit(":", 1)[1]
        for origin in (b.url, f"http://localhost:{port}"):
            ok = await open_tab(tabs, b, origin=origin)
            assert (await ok.welcome())["visitor"]


async def test_a_full_embedded_redis_refuses_uploads_clearly(tmp_path: Path, tabs: list[Tab]) -> None:
    config = {"redis": {"url": "", "data_dir": str(tmp_path / "d"), "max_memory_mb": 12},
              "channels": {"widget": {"uploads": {"per_message": 20}}}, "agents": {"channels": ["widget"]}}
    async with running_bridge("", config) as b:
        tab = await open_tab(tabs, b)
        token = (await tab.welcome())["token"]
        used_mb = (await b.redis.info("memory"))["used_memory"] / 2**20
        assert used_mb < 10, used_mb
        statuses = []
        for _ in range(24):  # 1 MiB each: Redis fills up within a dozen
            r = await upload(b, token, b"x" * (1024 * 1024), mime="text/plain")
            statuses.append(r.status)
            if r.status != 200:
                break
        assert statuses[0] == 200 and statuses[-1] == 507, statuses
        assert "redis.max_memory_mb" in (await r.json())["error"]
        assert (await b.get("/healthz")).status == 200  # full, not broken
