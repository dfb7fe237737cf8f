"""Reading the SQL record: search in the five languages through the API, a contact's
conversations, and data-protection requests (export, erase) that leave nothing behind
in Redis or in any table."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bridge import keys
from bridge.dispatcher import ChannelDispatcher
from bridge.engine import Engine
from bridge.history import db
from bridge.history.projector import Projector
from bridge.history.record import RECORD_VERSION, TurnRecord, conversation_of, decode_records, raw
from bridge.history.writer import Writer
from bridge.model import (
    Conversation,
    Message,
    Sender,
    address_hash,
    conversation_number,
    encode,
    encode_record,
    partition_of,
)
from bridge.runner import build_steps
from bridge.store import Store
from tests.harness import RunningBridge, commit, finished, outbound_of, running_bridge
from tests.history_db import async_url, every_table_text, rows
from tests.servers import free_port
from tests.test_api_e2e import AUTH, ENV
from tests.test_history import projected, with_history
from tests.webhook import WebhookReceiver

SAID = {
    "en": ("cust-en", "My invoice for the blue widgets is missing", "invoice"),
    "zh": ("cust-zh", "我的订单还没有到，请帮忙查一下", "订单"),
    "zh3": ("cust-zh3", "发票上的金额不对，需要重新开", "重新开"),
    "ru": ("cust-ru", "где мой заказ? доставка задерживается", "заказ"),
    "tl": ("cust-tl", "Nasaan na po ang padala ko, tatlong araw na", "padala"),
    "ms": ("cust-ms", "Bila pesanan saya akan sampai ke Kuala Lumpur", "pesanan"),
}


@contextlib.asynccontextmanager
async def playing(role: str, history_url: str, redis_url: str,
                  webhook: WebhookReceiver) -> AsyncIterator[RunningBridge]:
    """A bridge with the SQL record (its tables created) whose ``role`` the test plays
    itself, step by step; the projector's too (it would write what the test reads)."""
    config = with_history(history_url, webhook.url)
    config["roles"] = [r for r in ("ingest", "engine", "dispatch", "web") if r != role]
    async with running_bridge(redis_url, config, env=ENV) as b:
        assert b.bridge.history is not None
        await db.upgrade(b.bridge.history)
        yield b


async def test_search_in_five_languages_and_by_contact(history_url: str, redis_url: str,
                                                       webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, with_history(history_url, webhook.url), env=ENV) as b:
        for key, (customer, said, _) in SAID.items():
            await b.post("/api/v1/messages", headers=AUTH, json={
                "customer_id": customer, "text": said, "message_id": f"s-{key}",
                "email": f"{customer}@example.com"})
        await b.wait_for(lambda: len(webhook.received) >= len(SAID), what="every customer answered")
        await b.wait_for(lambda: projected(b.redis), what="the outbox projected")

        for key, (customer, said, query) in SAID.items():
            found = await find(b, q=query)
            assert [c["conversation"]["address"] for c in found] == [customer], (key, query)
            assert found[0]["matches"][0]["text"] == said
        by_email = await find(b, contact="cust-ru@example.com")
        by_address = await find(b, contact="api:cust-ru")
        assert [c["conversation"]["address"] for c in by_email] == ["cust-ru"]
        assert by_email == by_address
        assert await find(b, q="nothing like this was said") == []
        unauthorized = await b.get("/api/v1/conversations", params={"q": "invoice"})
        assert unauthorized.status == 401


async def find(b: Any, **params: str) -> list[dict[str, Any]]:
    response = await b.http.get(b.url + "/api/v1/conversations", params=params, headers=AUTH)
    assert response.status == 200, await response.text()
    return list((await response.json())["conversations"])


PERSONAL = ["Erika Mustermann", "erika@example.org", "cust-erase", "Mein Paket 7781 ist beschädigt"]


async def test_export_then_erase_leaves_nothing_behind(history_url: str, redis_url: str,
                                                       webhook: WebhookReceiver, tmp_path: Path) -> None:
    async with running_bridge(redis_url, with_history(history_url, webhook.url), env=ENV) as b:
        await two_customers(b, webhook, PERSONAL, "e-1", "cust-keep", "Where is order 5?")
        await b.wait_for(lambda: projected(b.redis), what="the outbox projected")
        conversation = await b.store.for_address("api", "cust-erase")
        assert conversation is not None
        personal = [*PERSONAL, conversation.id]
        kept = await b.store.for_address("api", "cust-keep")
        assert kept is not None
        # thread refs naming the conversation: one as the bridge writes them (with the
        # conversation's ref set), one as an older bridge did (no set); one naming the other's
        await commit(b.redis, Store.ref_ops("slack:C1:1700000000.000100", conversation.id, 8))
        await b.redis.set(keys.ref("email:<old-thread@example.org>"), conversation.id)
        await commit(b.redis, Store.ref_ops("slack:C1:1700000000.000200", kept.id, 8))

        response = await b.http.get(f"{b.url}/api/v1/contacts/{conversation.contact_id}/export", headers=AUTH)
        assert response.status == 200
        exported = json.dumps(await response.json(), ensure_ascii=False)
        for item in personal:
            assert item in exported
        export = await response.json()
        assert export["redis"]["contact"]["email"] == "erika@example.org"
        assert [m["text"] for m in export["history"]["transcripts"][conversation.id] if m["kind"] == "customer"] \
            == ["Mein Paket 7781 ist beschädigt"]

        assert (await b.http.post(f"{b.url}/api/v1/contacts/{conversation.contact_id}/erase")).status == 401
        response = await b.http.post(f"{b.url}/api/v1/contacts/{conversation.contact_id}/erase", headers=AUTH)
        assert response.status == 200, await response.text()
        erased = (await response.json())["erased"]
        assert erased["conversations"] == 1 and erased["messages"] >= 1

        redis_text = await keyspace_text(b.redis)
        tables_text = await every_table_text(history_url)
        for item in personal:
            assert item not in redis_text, item
            assert item not in tables_text, item
        assert "Where is order 5?" in tables_text  # the other customer's record stays
        assert await b.redis.get(keys.ref("slack:C1:1700000000.000200")) == kept.id.encode()
        (erasure,) = await rows(history_url, "erasures")
        assert erasure["counts"]["conversations"] == 1
        gone = await b.http.get(f"{b.url}/api/v1/contacts/{conversation.contact_id}/export", headers=AUTH)
        assert gone.status == 404

        # the address writes again: a new conversation, never an erased one's id (an old
        # agent thread or a late record naming that id must not reach the new one)
        await b.post("/api/v1/messages", headers=AUTH, json={
            "customer_id": "cust-erase", "text": "Hallo, ich bin es wieder", "message_id": "e-2"})
        await b.wait_for(lambda: len(webhook.received) >= 3, what="the new message answered")
        again = await b.store.for_address("api", "cust-erase")
        assert again is not None and again.id != conversation.id
        assert conversation_number(again.id) > conversation_number(conversation.id)
        response = await b.http.get(f"{b.url}/api/v1/contacts/{again.contact_id}/export", headers=AUTH)
        assert response.status == 200
        assert [c["id"] for c in (await response.json())["redis"]["conversations"]] == [again.id]


RACED = ["Jonas Weber", "jonas@example.org", "cust-raced", "Bitte löschen Sie meine Bestellung 9120"]


async def test_an_erasure_between_a_projector_read_and_its_write_is_not_undone(
        history_url: str, redis_url: str, webhook: WebhookReceiver) -> None:
    """The projector reads a batch naming the customer, the customer is erased, then the
    projector writes the batch: what it wrote of them is deleted again, the rest stays."""
    async with playing("projector", history_url, redis_url, webhook) as b:
        assert b.bridge.history is not None
        await two_customers(b, webhook, RACED, "race-1", "cust-stays", "Where is order 6?")
        gone, stays = await b.store.for_address("api", "cust-raced"), await b.store.for_address("api", "cust-stays")
        assert gone is not None and stays is not None

        projector = Projector(bus=b.bus, engine=b.bridge.history, worker_id="race-projector",
                              partitions=b.bridge.settings.engine.partitions, lease_ttl_s=30, store=b.store)
        for stream in projector.streams:
            await b.bus.ensure_group(stream, keys.PROJECTOR_GROUP)
        entries = await b.bus.read(projector.streams, keys.PROJECTOR_GROUP, keys.PROJECTOR_CONSUMER,
                                   count=1000, block_ms=None)
        batch = {conversation_of(r).id for e in entries for r in decode_records(e.payload or b"")
                 if isinstance(r, TurnRecord)}
        assert {gone.id, stays.id} <= batch

        response = await b.post(f"/api/v1/contacts/{gone.contact_id}/erase", headers=AUTH)  # in between
        assert response.status == 200, await response.text()
        await projector.leases.tick()
        try:
            await projector.project(entries)
        finally:
            await projector.leases.release_all()

        conversations = {r["id"] for r in await rows(history_url, "conversations")}
        assert gone.id not in conversations and stays.id in conversations
        assert {r["id"] for r in await rows(history_url, "contacts")} == {stays.contact_id}
        assert {r["address"] for r in await rows(history_url, "contact_links")} == {"api:cust-stays"}
        tables_text = await every_table_text(history_url)
        for item in [*RACED, gone.id, gone.contact_id]:
            assert item not in tables_text, item
        assert "Where is order 6?" in tables_text


async def two_customers(b: Any, webhook: WebhookReceiver, personal: list[str], message_id: str,
                        other: str, other_text: str) -> None:
    """A customer who will ask to be erased (name, email, customer id, a message:
    ``personal``) and another one, both answered."""
    name, email, customer, text = personal
    await b.post("/api/v1/messages", headers=AUTH, json={
        "customer_id": customer, "name": name, "email": email, "text": text, "message_id": message_id})
    await b.post("/api/v1/messages", headers=AUTH, json={
        "customer_id": other, "text": other_text, "message_id": f"{message_id}-other"})
    await b.wait_for(lambda: len(webhook.received) >= 2, what="both answered")


async def keyspace_text(redis: aioredis.Redis) -> str:
    """Every key and value in Redis, as one text to grep."""
    out: list[str] = []
    async for raw_key in redis.scan_iter(count=1000):
        key = raw_key.decode()
        kind = (await redis.type(key)).decode()
        values: list[Any] = []
        if kind == "string":
            values = [await redis.get(key)]
        elif kind == "list":
            values = await redis.lrange(key, 0, -1)
        elif kind == "hash":
            values = [x for pair in (await redis.hgetall(key)).items() for x in pair]
        elif kind == "zset":
            values = await redis.zrange(key, 0, -1)
        elif kind == "set":
            values = list(await redis.smembers(key))
        elif kind == "stream":
            values = [v for _, fields in await redis.xrange(key) for v in fields.values()]
        out.append(key)
        out.extend(v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in values)
    return "\n".join(out)


CAUGHT = ["Lena Fischer", "lena@example.org", "cust-caught", "Meine Rechnung 4410 ist falsch"]
RENAMED = "Lena M. Fischer"


async def test_an_erasure_between_an_engine_read_and_its_commit_is_not_written_back(
        history_url: str, redis_url: str, webhook: WebhookReceiver) -> None:
    """The engine has the customer's conversation in its cache and reads their next
    message; the customer is erased; then the engine commits. Nothing of the erased
    conversation is written back; the message, erased from the stream with the rest of
    the person, is read again and acknowledged, not dead-lettered as malformed."""
    async with playing("engine", history_url, redis_url, webhook) as b:
        flow_config, steps = build_steps(b.bridge.settings, b.bridge.adapters, store=b.store)
        engine = Engine(bus=b.bus, store=b.store, flow_config=flow_config, steps=steps, worker_id="race-engine")
        streams = [keys.inbound(p, engine.partitions) for p in range(engine.partitions)]
        for stream in streams:
            await b.bus.ensure_group(stream, keys.ENGINE_GROUP)
        name, email, customer, text = CAUGHT

        async def read(pending: bool = False) -> list[Any]:
            return await b.bus.read(streams, keys.ENGINE_GROUP, "race-engine", count=10, block_ms=None,
                                    pending=pending)

        async def handled(entries: list[Any], revs: tuple[int, int] | None = None) -> None:
            await engine.handle(entries, revs)
            await engine.settled()

        async def post(message_id: str, **fields: str) -> None:
            response = await b.post("/api/v1/messages", headers=AUTH, json={
                "customer_id": customer, "message_id": message_id, **fields})
            assert response.status in (200, 202), await response.text()

        await engine.leases.tick()
        engine.leases.start("race-engine-leases")  # renewed as the engine's own loop does
        try:
            await post("c-1", name=name, email=email, text=text)
            await handled(await read())
            erased = await b.store.for_address("api", customer)
            assert erased is not None

            # a new name: the contact's record is written before the commit; not once erased
            await post("c-2", name=RENAMED, text="Und die Lieferadresse hat sich auch geändert")
            batch = await read()
            revs = await b.store.cache_revs()  # as the engine reads them with a batch
            response = await b.post(f"/api/v1/contacts/{erased.contact_id}/erase", headers=AUTH)  # in between
            assert response.status == 200, await response.text()
            await handled(batch, revs)
            assert not await b.redis.exists(keys.conversation(erased.id, 8), keys.transcript(erased.id, 8))

            await handled(await read(pending=True))  # as the engine reads its own unacked entries again
        finally:
            await engine.leases.stop()
        assert await b.store.for_address("api", customer) is None
        assert await read(pending=True) == []
        assert await b.bridge.bus.dead_letters() == []
        redis_text = await keyspace_text(b.redis)
        for item in [name, RENAMED, email, text, "Lieferadresse", erased.id]:
            assert item not in redis_text, item


PENDING = ["Ana Costa", "ana@example.org", "cust-pending", "A minha encomenda 3312 chegou partida"]


SHARED = ["Lena Fischer", "lena@example.org", "Meine Adresse ist Gartenstraße 4"]


async def test_an_erasure_keeps_the_other_customers_turns_of_a_shared_outbox_entry(
        history_url: str, redis_url: str, webhook: WebhookReceiver) -> None:
    """Two customers of one partition write at once: one commit, one outbox entry with
    both customers' turns. One of them is erased before the projector reads it: the entry
    is written again with the other customer's turns only, and those reach SQL."""
    name, email, text = SHARED
    customers = [c for c in (f"cust-shared-{i}" for i in range(200))
                 if partition_of(address_hash("api", c), 8) == partition_of(address_hash("api", "cust-shared-0"), 8)]
    gone_address, stays_address = customers[:2]
    async with playing("projector", history_url, redis_url, webhook) as b:
        assert b.bridge.history is not None
        await b.bus.publish_many([
            Message(kind="customer", channel="api", address=gone_address, text=text,
                    sender=Sender(name=name, email=email), dedupe_key="api:shared-1"),
            Message(kind="customer", channel="api", address=stays_address, text="Where is order 12?",
                    dedupe_key="api:shared-2"),
            Message(kind="customer", channel="api", address=stays_address, text="It was due Monday",
                    dedupe_key="api:shared-3")])
        await b.wait_for(lambda: len(webhook.received) >= 2, what="both answered")
        gone = await b.store.for_address("api", gone_address)
        stays = await b.store.for_address("api", stays_address)
        assert gone is not None and stays is not None
        outbox = keys.outbox(partition_of(address_hash("api", stays_address), 8), 8)
        (entry_id, fields), = await b.redis.xrange(outbox)
        turns = decode_records(fields[keys.PAYLOAD_FIELD.encode()])
        assert [conversation_of(t).id for t in turns if isinstance(t, TurnRecord)] == [gone.id, stays.id, stays.id]

        response = await b.post(f"/api/v1/contacts/{gone.contact_id}/erase", headers=AUTH)
        assert response.status == 200, await response.text()
        (again_id, fields), = await b.redis.xrange(outbox)
        assert again_id != entry_id
        turns = decode_records(fields[keys.PAYLOAD_FIELD.encode()])
        assert [conversation_of(t).id for t in turns if isinstance(t, TurnRecord)] == [stays.id, stays.id]
        for item in [name, email, text, gone_address, gone.id]:
            assert item.encode() not in fields[keys.PAYLOAD_FIELD.encode()], item

        projector = Projector(bus=b.bus, engine=b.bridge.history, worker_id="shared-projector",
                              partitions=b.bridge.settings.engine.partitions, lease_ttl_s=30, store=b.store)
        run = asyncio.create_task(projector.run())
        try:
            await b.wait_for(lambda: projected(b.redis), what="the outbox projected")
        finally:
            projector.stop()
            await finished(run)
    customer = sorted((m for m in await rows(history_url, "messages") if m["kind"] == "customer"),
                      key=lambda m: m["seq"])
    assert [m["text"] for m in customer] == ["Where is order 12?", "It was due Monday"]
    tables_text = await every_table_text(history_url)
    for item in [*SHARED, gone_address, gone.id]:
        assert item not in tables_text, item


async def test_a_turn_projected_after_a_later_one_keeps_its_messages_and_undoes_nothing(history_url: str) -> None:
    """An erasure writes a commit's other turns again at the outbox's end, after later
    turns of the same conversations: projected late, a turn adds its messages and leaves
    the newer state (and its events) as they are."""
    engine = db.open_engine(async_url(history_url))
    try:
        await db.upgrade(engine)
        writer = Writer(engine)

        def turn(record_id: str, at_ms: int, status: str, said: str) -> TurnRecord:
            conversation = Conversation(id="h-late-1", channel="api", address="late", status=status,
                                        created_ms=1, updated_ms=at_ms)
            said_then = Message(kind="customer", channel="api", address="late", text=said, created_ms=at_ms)
            return TurnRecord(v=RECORD_VERSION, id=record_id, at_ms=at_ms,
                              conversation=raw(encode_record(conversation)), kept=[raw(encode(said_then))],
                              contacts=[], previous_status="open" if at_ms > 10 else None, cause="customer:")

        await writer.apply([turn("late-1", 10, "open", "Hello")])
        await writer.apply([turn("late-3", 30, "resolved", "Thanks, solved")])
        await writer.apply([turn("late-2", 20, "pending", "Still waiting")])  # the late one
    finally:
        await engine.dispose()
    (row,) = await rows(history_url, "conversations")
    assert row["status"] == "resolved" and row["updated_ms"] == 30
    messages = sorted(await rows(history_url, "messages"), key=lambda m: m["seq"])
    assert [m["text"] for m in messages] == ["Hello", "Still waiting", "Thanks, solved"]
    statuses = sorted((e for e in await rows(history_url, "events") if e["name"] == "status"),
                      key=lambda e: e["at_ms"])
    assert [(e["previous"], e["value"]) for e in statuses] == [("", "open"), ("open", "resolved")]


async def test_records_an_erasure_deleted_while_read_and_not_yet_written_are_acknowledged(
        history_url: str, redis_url: str, webhook: WebhookReceiver) -> None:
    """A projector read the customer's records and stopped before writing them (a crash);
    the erasure deletes those outbox entries; the next projector reads its unacknowledged
    entries first: the deleted ones are acknowledged, not dead-lettered as unreadable,
    and the other customer's are written."""
    async with playing("projector", history_url, redis_url, webhook) as b:
        assert b.bridge.history is not None
        await two_customers(b, webhook, PENDING, "pend-1", "cust-stays-too", "Where is order 8?")
        gone, stays = (await b.store.for_address("api", "cust-pending"),
                       await b.store.for_address("api", "cust-stays-too"))
        assert gone is not None and stays is not None
        projector = Projector(bus=b.bus, engine=b.bridge.history, worker_id="restarted-projector",
                              partitions=b.bridge.settings.engine.partitions, lease_ttl_s=30, store=b.store)
        for stream in projector.streams:
            await b.bus.ensure_group(stream, keys.PROJECTOR_GROUP)
        assert await b.bus.read(projector.streams, keys.PROJECTOR_GROUP, keys.PROJECTOR_CONSUMER,
                                count=1000, block_ms=None)  # read by a projector that then died

        response = await b.post(f"/api/v1/contacts/{gone.contact_id}/erase", headers=AUTH)
        assert response.status == 200, await response.text()

        async def unacknowledged() -> int:
            return sum([int((await b.redis.xpending(s, keys.PROJECTOR_GROUP))["pending"])
                        for s in projector.streams])

        run = asyncio.create_task(projector.run())
        try:
            await b.wait_for(lambda: projected(b.redis), what="the outbox projected")
            assert await unacknowledged() == 0
        finally:
            projector.stop()
            await finished(run)
        assert await b.bridge.bus.dead_letters() == []
        assert {r["id"] for r in await rows(history_url, "conversations")} == {stays.id}


async def test_replies_an_erasure_deleted_while_read_and_not_yet_sent_are_acknowledged(
        history_url: str, redis_url: str, webhook: WebhookReceiver) -> None:
    """A dispatcher read a reply to the customer but never got the read's answer (a cut
    connection); the erasure deletes the entry; the dispatcher reads its unacknowledged
    entries again: the deleted one is acknowledged, not sent, not dead-lettered as
    malformed, and does not stay pending (it would hold back the stream's trimming)."""
    async with playing("dispatch", history_url, redis_url, webhook) as b:
        response = await b.post("/api/v1/messages", headers=AUTH, json={
            "customer_id": "cust-unsent", "email": "unsent@example.org", "text": "Hello?", "message_id": "u-1"})
        assert response.status in (200, 202)
        conversation = await b.wait_for(lambda: b.store.for_address("api", "cust-unsent"), what="a conversation")
        stream = outbound_of("api", "cust-unsent")
        await b.bus.ensure_group(stream, keys.DISPATCH_GROUP)
        settings = b.bridge.settings.engine
        # the claim time keeps XAUTOCLAIM (which drops deleted entries from the pending
        # list by itself) out of this test: only the dispatcher's own re-read is left
        dispatcher = ChannelDispatcher(bus=b.bus, adapter=b.bridge.adapters["api"], worker_id="w-dispatch",
                                       lease_ttl_s=settings.lease_ttl_s, block_ms=settings.block_ms,
                                       batch_size=settings.batch_size, claim_min_idle_s=60,
                                       report_health=b.bridge.health.reporter("api"))
        run = asyncio.create_task(dispatcher.run())
        try:
            await b.wait_for(lambda: len(webhook.received) >= 1, what="the acknowledgement sent")
            # a reply written and read at once (one transaction): the dispatcher's read
            # whose answer never came back
            reply = Message(kind="reply", channel="api", address="cust-unsent", conversation_id=conversation.id,
                            text="Your refund of 40 EUR is on its way")
            async with b.redis.pipeline(transaction=True) as pipe:
                pipe.xadd(stream, {keys.PAYLOAD_FIELD: encode(reply)})
                pipe.xreadgroup(keys.DISPATCH_GROUP, "w-dispatch", {stream: ">"}, count=10)
                await pipe.execute()
            response = await b.post(f"/api/v1/contacts/{conversation.contact_id}/erase", headers=AUTH)
            assert response.status == 200, await response.text()

            async def acknowledged() -> bool:
                return int((await b.redis.xpending(stream, keys.DISPATCH_GROUP))["pending"]) == 0

            dispatcher.cursor.reread()  # as its periodic check of its own pending entries does
            await b.wait_for(acknowledged, what="the deleted reply acknowledged")
        finally:
            dispatcher.stop()
            await finished(run)
        assert "refund" not in json.dumps(webhook.received)
        assert await b.bridge.bus.dead_letters() == []


async def test_the_record_away_or_not_created_answers_503_saying_so(redis_url: str, webhook: WebhookReceiver,
                                                                     tmp_path: Path) -> None:
    """Search, export and erase need the SQL record: with its database down, or with no
    tables yet (no projector has run), each answers 503 with a reason and Retry-After,
    not a bare 500; nothing is erased from Redis while SQL cannot be erased too."""
    down = f"postgresql+asyncpg://bridge@127.0.0.1:{free_port()}/history"
    empty = f"sqlite:///{tmp_path / 'never-created.sqlite3'}"
    for url, reason in ((down, "did not answer"), (empty, "bridge db upgrade")):
        config = with_history(url, webhook.url)
        config["roles"] = ["ingest", "engine", "dispatch", "web"]  # no projector: nothing creates the tables
        async with running_bridge(redis_url, config, env=ENV) as b:
            await b.post("/api/v1/messages", headers=AUTH, json={
                "customer_id": "cust-wait", "text": "Where is my parcel?", "message_id": f"w-{reason}"})
            await b.wait_for(lambda: webhook.received, what="the acknowledgement")
            conversation = await b.store.for_address("api", "cust-wait")
            assert conversation is not None
            for method, path in (("GET", "/api/v1/conversations?q=parcel"),
                                 ("GET", f"/api/v1/contacts/{conversation.contact_id}/export"),
                                 ("POST", f"/api/v1/contacts/{conversation.contact_id}/erase")):
                response = await b.http.request(method, b.url + path, headers=AUTH)
                assert response.status == 503, (url, path, await response.text())
                assert response.headers["Retry-After"]
                assert reason in (await response.json())["error"], (url, path)
            assert await b.store.for_address("api", "cust-wait") == conversation  # not half erased
        async with aioredis.Redis.from_url(redis_url) as redis:  # the next bridge starts afresh
            await redis.flushdb()
        webhook.received.clear()
