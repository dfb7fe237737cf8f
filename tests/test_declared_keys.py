"""Every Lua script the bridge runs declares the keys it touches (KEYS), as Redis Cluster
needs, and every engine commit (a transaction) keeps a partition's keys in one slot:
watched with MONITOR on a real Redis through a desk's whole day (publish, the engine's and
the dispatcher's commits, leases, timers, the projector, retention dropping a closed
conversation and loading it back); a batch's contact changes, written before its commit,
keep to the contacts' slot."""

from __future__ import annotations

import hashlib
from pathlib import Path

from redis.crc import key_slot

from bridge import bus, contactwrites, keys, lease, store, storearchive, transaction
from tests.harness import Clock, running_bridge
from tests.redis_monitor import ScriptKeys, touched_keys
from tests.test_api_e2e import AUTH, ENV
from tests.test_history_retention import _gone, _status, resolved_and_recorded, retention_config
from tests.webhook import WebhookReceiver


async def test_every_script_touches_only_the_keys_it_declares(redis_url: str, webhook: WebhookReceiver,
                                                               tmp_path: Path) -> None:
    clock = Clock()
    async with ScriptKeys(redis_url) as watch, \
            running_bridge(redis_url, retention_config(tmp_path, webhook), env=ENV, clock_ms=clock) as b:
        for customer, text in (("dk-1", "URGENT: the production line stopped"), ("dk-2", "Where is order 7?")):
            await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": customer, "text": text,
                                                                 "message_id": f"{customer}-1"})
        await b.wait_for(lambda: len(webhook.received) >= 2, what="both answered")
        conversation = await resolved_and_recorded(b, "dk-2")
        clock.advance(days=2)
        await b.wait_for(lambda: _gone(b.redis, conversation.id), what="dropped from Redis")
        await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "dk-2", "text": "Not here yet",
                                                             "message_id": "dk-2-2"})
        await b.wait_for(lambda: _status(b.redis, conversation.id, "open"), what="loaded back and reopened")
        await b.wait_for(lambda: sha1(lease._RENEW) in watch.ran, what="a lease renewed")  # (a third of its life)
    scripts = {"publish": bus._PUBLISH, "renew a lease": lease._RENEW,
               "drop a closed conversation": store._DROP_ARCHIVED, "drop its address": storearchive._DROP_ADDRESS,
               "load it back": storearchive._RESTORE, "fire timers": bus._FIRE_TIMERS,
               "write new contacts": contactwrites.SCRIPT, "give a lease back": lease._RELEASE,
               "check a commit's fences": transaction._CHECK}
    assert {name for name, script in scripts.items() if sha1(script) not in watch.ran} == set()  # all ran
    assert watch.undeclared == []
    # what Redis Cluster needs of them: every script's keys in one slot (a partition's, the
    # contacts', a lease's, a thread ref's)
    checked, elsewhere, replies = 0, set(), 0
    inbound_lease = keys.lease(keys.PREFIX + "in:")
    for sha, declared in watch.calls:
        if sha == sha1(transaction._CHECK) and not any(key.startswith(inbound_lease) for key in declared):
            continue  # a dispatcher's commit, fenced by its channel's leases together (one per slot on a cluster)
        assert len({key_slot(key.encode()) for key in declared}) == 1, declared
        checked += 1
        if sha == sha1(contactwrites.SCRIPT):  # the contacts' slot
            assert key_slot(declared[0].encode()) == key_slot(keys.CONTACTS_REV.encode()), declared
    for commands, watched in zip(watch.transactions, watch.watched, strict=True):  # a commit begins with its once-mark
        if not any(key.startswith(inbound_lease) for key in watched):  # an engine's: fenced by an inbound lease
            continue
        once = commands[0][1]
        written = [key for command in commands for key in touched_keys(command)]
        theirs = [key for key in written if of_a_partition(key)]
        assert len({key_slot(key.encode()) for key in theirs}) == 1, theirs
        # its fences too: the lease, the erasures' counter, the once-mark
        assert {key_slot(key.encode()) for key in watched} == {key_slot(theirs[0].encode())}, watched
        checked += 1
        replies += sum(1 for key in theirs if family(key) == "out")
        slot = key_slot(once.encode())  # what a commit still writes outside its partition's slot
        elsewhere |= {family(key) for key in written if key_slot(key.encode()) != slot}
    assert checked > 5
    assert elsewhere == set(), elsewhere  # contacts are written before it (slice 8 of docs/cluster.md)
    assert replies > 0  # the replies and notices went out in their partition's slot (slice 7)


def family(key: str) -> str:
    return key.removeprefix(keys.PREFIX).partition(":")[0]


def of_a_partition(key: str) -> bool:
    """Named for a partition or one of its conversations (schema 2, bridge/schema.py)."""
    kind, _, rest = key.removeprefix(keys.PREFIX).partition(":")
    if kind in ("lease", "dedupe", "attempts", "retry", "once"):  # named after a stream
        streams = (keys.PREFIX + "in:", keys.PREFIX + "outbox:")
        return rest.startswith(streams + tuple(keys.lease(s) for s in streams))  # once: beside the lease
    if kind == "out":  # a partition's outbound stream, out:{p.n}:<channel> (a channel's own has no tag)
        return rest.startswith("{")
    return kind in ("in", "outbox", "timers", "conv", "transcript", "refs", "addr", "convseq", "convs")


def sha1(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()
