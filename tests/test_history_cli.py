"""The history's commands as an operator runs them: `bridge db upgrade`, `bridge db
backfill` over a Redis that predates history, `bridge contact export` / `erase`, and the
backlog in `bridge status`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import redis.asyncio as aioredis

from bridge import keys
from tests.harness import running_bridge
from tests.history_db import every_table_text, rows
from tests.test_api_e2e import AUTH, ENV, api_config
from tests.test_cli import bridge_cli, write
from tests.test_history_read import keyspace_text
from tests.webhook import WebhookReceiver


async def test_backfill_an_existing_redis_then_export_and_erase(redis_url: str, redis: aioredis.Redis,
                                                                  webhook: WebhookReceiver, tmp_path: Path) -> None:
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:  # history off: a Redis from before
        for customer, text in (("old-1", "Where is my order 12?"), ("old-2", "Invoice 99 please")):
            await b.post("/api/v1/messages", headers=AUTH, json={
                "customer_id": customer, "text": text, "message_id": customer, "name": f"Name {customer}"})
        await b.wait_for(lambda: len(webhook.received) >= 2, what="both answered")
        conversation = await b.store.for_address("api", "old-1")
        assert conversation is not None
    database = tmp_path / "history.sqlite3"
    config = write(tmp_path / "bridge.yaml", {"redis": {"url": redis_url},
                                               "history": {"url": f"sqlite:///{database}"}})

    upgraded = await asyncio.to_thread(bridge_cli, "db", "upgrade", "-c", str(config), cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "revision 0002" in upgraded.stdout
    # thread refs an older bridge wrote: one of a conversation Redis holds, one of a conversation it dropped
    await redis.set(keys.ref("slack:C0AGENTS:1700000000.000100"), conversation.id)
    await redis.set(keys.ref("email:<gone@example.com>"), "dropped-1")
    for run in range(2):  # a second run adds nothing
        filled = await asyncio.to_thread(bridge_cli, "db", "backfill", "-c", str(config), cwd=tmp_path)
        assert filled.returncode == 0, filled.stderr
        assert f"backfilled 2 conversation(s), 2 contact(s) and {2 - run} thread ref(s)" in filled.stdout
    url = f"sqlite:///{database}"
    assert sorted((r["ref"], r["conversation_id"]) for r in await rows(url, "refs")) == [
        ("email:<gone@example.com>", "dropped-1"), ("slack:C0AGENTS:1700000000.000100", conversation.id)]
    assert not await redis.exists(keys.ref("email:<gone@example.com>"))  # its conversation is gone: SQL has it
    assert await redis.smembers(keys.conversation_refs(conversation.id, 8)) == {b"slack:C0AGENTS:1700000000.000100"}
    customer = sorted(m["text"] for m in await rows(url, "messages") if m["kind"] == "customer")
    assert customer == ["Invoice 99 please", "Where is my order 12?"]
    assert len(await rows(url, "conversations")) == 2
    assert sum(1 for e in await rows(url, "events") if e["name"] == "opened") == 2

    reports = {}
    for source in ("redis", "sql"):
        made = await asyncio.to_thread(bridge_cli, "report", "--source", source, "--out", str(tmp_path / source),
                                       "--since", "2000-01-01", "-c", str(config), cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        reports[source] = (tmp_path / source / "conversations.csv").read_text()
    assert reports["sql"] == reports["redis"]  # the same report from the record as from Redis
    assert len(reports["sql"].splitlines()) == 3
    transcripts = (tmp_path / "sql" / "transcripts.csv").read_text()
    assert "Where is my order 12?" in transcripts and "Invoice 99 please" in transcripts
    none = await asyncio.to_thread(bridge_cli, "report", "--source", "sql", "--out", str(tmp_path / "none"),
                                   "--until", "2000-01-01", "-c", str(config), cwd=tmp_path)
    assert none.returncode == 0 and len((tmp_path / "none" / "conversations.csv").read_text().splitlines()) == 1

    status = await asyncio.to_thread(bridge_cli, "status", "-c", str(config), cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "history: 0 outbox entries not yet in SQL" in status.stdout

    out = tmp_path / "export.json"
    exported = await asyncio.to_thread(bridge_cli, "contact", "export", conversation.contact_id, "--out", str(out),
                                       "-c", str(config), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    data = json.loads(out.read_text())
    assert data["redis"]["contact"]["name"] == "Name old-1"
    assert "Where is my order 12?" in json.dumps(data["history"]["transcripts"])

    erased = await asyncio.to_thread(bridge_cli, "contact", "erase", conversation.contact_id, "-c", str(config),
                                     cwd=tmp_path)
    assert erased.returncode == 0, erased.stderr
    assert "1 conversations" in erased.stdout
    tables = await every_table_text(url)
    assert "Where is my order 12?" not in tables and "Name old-1" not in tables
    assert "Invoice 99 please" in tables
    again = await asyncio.to_thread(bridge_cli, "contact", "erase", conversation.contact_id, "-c", str(config),
                                     cwd=tmp_path)
    assert again.returncode == 2 and f"no contact {conversation.contact_id!r}" in again.stderr


async def test_db_upgrade_names_the_setting_when_the_database_is_unreachable(tmp_path: Path) -> None:
    config = write(tmp_path / "bridge.yaml", {"history": {
        "url": f"postgresql://bridge@/bridge?host={tmp_path}/nowhere&port=5999"}})
    result = await asyncio.to_thread(bridge_cli, "db", "upgrade", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot use the history database (history.url postgresql:///bridge" in result.stderr
    assert "Traceback" not in result.stderr


async def test_erase_without_history_works_on_redis_alone(redis_url: str, redis: aioredis.Redis,
                                                          webhook: WebhookReceiver, tmp_path: Path) -> None:
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        await b.post("/api/v1/messages", headers=AUTH, json={
            "customer_id": "solo-1", "text": "Please forget me, Jan Kowalski", "message_id": "f1",
            "name": "Jan Kowalski"})
        await b.wait_for(lambda: webhook.received, what="answered")
        conversation = await b.store.for_address("api", "solo-1")
        assert conversation is not None
    config = write(tmp_path / "bridge.yaml", {"redis": {"url": redis_url}, "history": {"enabled": False}})
    erased = await asyncio.to_thread(bridge_cli, "contact", "erase", conversation.contact_id, "-c", str(config),
                                     cwd=tmp_path)
    assert erased.returncode == 0, erased.stderr
    left = await keyspace_text(redis)
    for item in ("Jan Kowalski", "solo-1", conversation.id):
        assert item not in left, item
