"""The widget's WebSocket through the whole bridge (real Redis, engine, dispatcher), as a
browser would speak it, and the attacks a browser page could try."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.widget.identity import user_hash
from bridge import keys
from bridge.model import Conversation, Message, now_ms
from tests.harness import Clock, RunningBridge, outbound_entries, running_bridge, wait_for
from tests.servers import RedisServer, free_port
from tests.widget_client import Tab

SECRET = "widget-test-secret-0123456789"
SITE_SECRET = "site-secret-abc"
ENV = {"T_WIDGET_SECRET": SECRET, "T_SITE_SECRET": SITE_SECRET, "T_CONSOLE_TOKEN": "console-token-xyz"}
URGENT = "URGENT: our production line stopped, the controllers fail"


def widget_config(**extra: Any) -> dict[str, Any]:
    widget: dict[str, Any] = {"secret": "${T_WIDGET_SECRET}", "console": {"token": "${T_CONSOLE_TOKEN}"}}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(widget.get(key), dict):
            widget[key] = {**widget[key], **value}
        else:
            widget[key] = value
    return {
        "channels": {"widget": widget},
        "agents": {"channels": ["widget"]},
        "triage": {"urgent_keywords": {"en": ["urgent", "production line stopped"]}},
    }


@pytest.fixture
async def tabs() -> AsyncIterator[list[Tab]]:
    opened: list[Tab] = []
    yield opened
    for tab in opened:
        await tab.close()


async def open_tab(tabs: list[Tab], b: RunningBridge, **kwargs: Any) -> Tab:
    kwargs.setdefault("hello", {"language": "en-US"})
    tab = await Tab.connect(b.url, **kwargs)
    tabs.append(tab)
    return tab


async def customer_texts(b: RunningBridge, visitor: str) -> list[str]:
    conversation = await b.store.for_address("widget", visitor)
    if conversation is None:
        return []
    return [m.text for m in await b.store.transcript(conversation.id) if m.kind == "customer"]


async def console_login(b: RunningBridge, **body: str) -> dict[str, str]:
    """Log in to the console; the session cookie as a header (aiohttp keeps no cookies for IPs)."""
    r = await b.post("/agent/login", json=body or {"token": ENV["T_CONSOLE_TOKEN"]})
    assert r.status == 200, await r.text()
    return {"Cookie": f"bridge_agent={r.cookies['bridge_agent'].value}"}


# -- the loop ---------------------------------------------------------------------------

async def test_urgent_message_is_stored_once_and_answered_on_every_tab(redis_url: str, tabs: list[Tab]) -> None:
    async with running_bridge(redis_url, widget_config(), env=ENV) as b:
        first = await open_tab(tabs, b)
        welcome = await first.welcome()
        assert welcome["history"] == [] and welcome["visitor"].startswith("v_")
        second = await open_tab(tabs, b, hello={"token": welcome["token"]})
        assert (await second.welcome())["visitor"] == welcome["visitor"]

        await first.say("c1", URGENT)
        await first.say("c1", URGENT)  # resent after a lost ack: stored once
        await wait_for(lambda: sum(f["type"] == "ack" for f in first.frames) == 2, what="two acks")
        await wait_for(lambda: first.texts("bot") and second.texts("bot"), what="the instant reply on both tabs")
        (reply,) = second.texts("bot")
        assert "urgent" in reply.lower() and "minutes" in reply
        assert second.texts("visitor") == [URGENT]  # the other tab sees what the visitor wrote
        assert await customer_texts(b, welcome["visitor"]) == [URGENT]
        conversation = await b.store.for_address("widget", welcome["visitor"])
        assert conversation is not None and conversation.urgency == "urgent"
        (customer,) = [m for m in await b.store.transcript(conversation.id) if m.kind == "customer"]
        assert customer.sender is not None and customer.sender.language == "en-US"
        assert customer.dedupe_key == f"widget:{welcome['visitor']}:c1"

        # a reload: the history comes back, in order, own messages marked with their client id
        reload = await open_tab(tabs, b, hello={"token": welcome["token"]})
        history = (await reload.welcome())["history"]
        assert [(i["from"], i["text"]) for i in history] == [("visitor", URGENT), ("bot", reply)]
        assert history[0]["cid"] == "c1"


async def test_an_agent_reply_from_the_console_reaches_the_visitor_live(redis_url: str, tabs: list[Tab]) -> None:
    async with running_bridge(redis_url, widget_config(), env=ENV) as b:
        tab = await open_tab(tabs, b)
        visitor = (await tab.welcome())["visitor"]
        await tab.say("q1", "Where is my order 1234?")
        conversation = await wait_for(lambda: b.store.for_address("widget", visitor), what="the conversation")
        cookie = await console_login(b)
        listed = await b.get("/agent/api/conversations?status=all", headers=cookie)
        assert conversation.id in [c["id"] for c in (await listed.json())["conversations"]]
        r = await b.post(f"/agent/api/conversations/{conversation.id}/reply",
                         json={"text": "Hi, it ships today.", "client_id": "r1"}, headers={"Origin": b.url, **cookie})
        assert r.status == 200
        await wait_for(lambda: "Hi, it ships today." in tab.texts("agent"), what="the agent's reply, live")
        (item,) = [i for i in tab.items() if i["from"] == "agent"]
        assert item["name"] == "Support"  # a token login with no name: the default display name
        # after a reload the agent's words are there once, under the same id
        again = await open_tab(tabs, b, hello={"token": (await tab.welcome())["token"]})
        history = (await again.welcome())["history"]
        assert [i["id"] for i in history if i["from"] == "agent"] == [item["id"]]


async def test_sla_warnings_and_state_changes_show_in_the_console_not_to_the_visitor(redis_url: str,
                                                                                    tabs: list[Tab]) -> None:
    clock = Clock(now_ms())
    config = {**widget_config(), "engine": {"steps": ["triage", "routing", "sla"]},
              "flows": {"sla": {"targets": {"urgent": {"first_response_min": 10, "resolution_h": 4},
                                            "routine": {"first_response_min": 240, "resolution_h": 48}}}}}
    async with running_bridge(redis_url, config, env=ENV, clock_ms=clock) as b:
        tab = await open_tab(tabs, b)
        welcome = await tab.welcome()
        await tab.say("u1", URGENT)
        await wait_for(lambda: tab.texts("bot"), what="the instant reply")
        conversation = await b.store.for_address("widget", welcome["visitor"])
        assert conversation is not None
        cookie = await console_login(b)
        clock.advance(minutes=8.5)  # past 80% of the 10-minute first-response target

        async def console_notices() -> list[dict[str, Any]]:
            r = await b.get(f"/agent/api/conversations/{conversation.id}", headers=cookie)
            return [i for i in (await r.json())["transcript"] if i["who"] == "system"]

        (warning,) = await wait_for(console_notices, what="the SLA warning in the console")
        assert warning["event"] == "sla_warning" and "first response" in warning["text"]
        r = await b.post(f"/agent/api/conversations/{conversation.id}/resolve", json={},
                         headers={"Origin": b.url, **cookie})
        assert r.status == 200
        notices = await wait_for(lambda: _longer(console_notices, 1), what="the resolution in the console")
        assert notices[-1]["event"] == "state" and notices[-1]["text"] == "resolved by agent"
        listed = await b.get("/agent/api/conversations?status=all", headers=cookie)
        (row,) = (await listed.json())["conversations"]
        assert row["preview"] == URGENT  # the customer's last words, not the bot's reply or a notice
        # the visitor's history has none of it
        again = await open_tab(tabs, b, hello={"token": welcome["token"]})
        assert [i["from"] for i in (await again.welcome())["history"]] == ["visitor", "bot"]


async def _longer(read: Any, than: int) -> Any:
    items = await read()
    return items if len(items) > than else None


async def test_logging_out_ends_the_session_everywhere(redis_url: str) -> None:
    async with running_bridge(redis_url, widget_config(), env=ENV) as b, \
            running_bridge(redis_url, {**widget_config(), "roles": ["web"]}, env=ENV) as other:
        cookie = await console_login(b)
        other_tab = await console_login(b)  # another session of the same agent
        assert (await b.get("/agent/api/me", headers=cookie)).status == 200
        assert (await other.get("/agent/api/me", headers=cookie)).status == 200
        async with aiohttp.ClientSession() as http, http.ws_connect(
                b.url + "/agent/ws", headers={"Origin": b.url, **cookie}) as live:
            r = await b.post("/agent/logout", json={}, headers={"Origin": b.url, **cookie})
            assert r.status == 200
            closed = await live.receive(timeout=5)
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        # a copy of the cookie (kept by another tab, or stolen) opens nothing, in any process
        for bridge in (b, other):
            assert (await bridge.get("/agent/api/me", headers=cookie)).status == 401
            assert (await bridge.get("/agent/api/conversations", headers=cookie)).status == 401
        assert (await other.get("/agent/api/me", headers=other_tab)).status == 200  # only that session ended


async def test_a_reply_reaches_a_visitor_connected_to_another_process(redis_url: str, tabs: list[Tab]) -> None:
    async with running_bridge(redis_url, {**widget_config(), "roles": ["web"]}, env=ENV) as front, \
            running_bridge(redis_url, widget_config(), env=ENV) as back:
        tab = await open_tab(tabs, front)
        visitor = (await tab.welcome())["visitor"]
        await tab.say("x1", URGENT)
        # the front process runs no engine and no dispatcher: the reply comes from the back one
        await wait_for(lambda: tab.texts("bot"), what="the reply through the fanout")
        assert await customer_texts(back, visitor) == [URGENT]


# -- identity ---------------------------------------------------------------------------

def _forge(token: str, visitor: str) -> str:
    payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["v"] = visitor
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode() + "." + signature


async def test_a_visitor_never_reads_another_visitors_conversation(redis_url: str, tabs: list[Tab]) -> None:
    async with running_bridge(redis_url, widget_config(), env=ENV) as b:
        victim = await open_tab(tabs, b)
        victim_welcome = await victim.welcome()
        await victim.say("v1", "my secret order 777")
        conversation = await wait_for(lambda: b.store.for_address("widget", victim_welcome["visitor"]))

        attacker = await open_tab(tabs, b)
        own = await attacker.welcome()
        forged = await open_tab(tabs, b, hello={"token": _forge(own["token"], victim_welcome["visitor"])})
        forged_welcome = await forged.welcome()
        assert forged_welcome["visitor"] != victim_welcome["visitor"] and forged_welcome["history"] == []
        # naming the victim's conversation or address gets nothing of it
        for frame in ({"type": "history", "conversation_id": conversation.id},
                      {"type": "subscribe", "visitor": victim_welcome["visitor"]},
                      {"type": "message", "cid": "a1", "text": "hi", "conversation_id": conversation.id,
                       "address": victim_welcome["visitor"], "visitor": victim_welcome["visitor"]}):
            await attacker.ws.send_str(json.dumps(frame))
        await wait_for(lambda: any(f["type"] == "ack" for f in attacker.frames), what="the attacker's ack")
        await wait_for(lambda: attacker.texts("bot"), what="the attacker's own reply")
        assert "my secret order 777" not in json.dumps(attacker.frames + forged.frames)
        assert await customer_texts(b, own["visitor"]) == ["hi"]
        assert await customer_texts(b, victim_welcome["visitor"]) == ["my secret order 777"]


async def test_logged_in_users_are_proven_by_the_sites_signature(redis_url: str, tabs: list[Tab]) -> None:
    config = widget_config(identity_secret="${T_SITE_SECRET}")
    async with running_bridge(redis_url, config, env=ENV) as b:
        good = user_hash(SITE_SECRET.encode(), "42")
        user = await open_tab(tabs, b, hello={"user_id": "42", "user_hash": good, "name": "Ann"})
        welcome = await user.welcome()
        assert welcome["visitor"] == "user:42"
        wrong = await open_tab(tabs, b, hello={"user_id": "42", "user_hash": user_hash(b"guess", "42")})
        assert await wrong.closed() == 1008
        # a token issued to user:42 is not enough without the site's signature
        replay = await open_tab(tabs, b, hello={"token": welcome["token"]})
        assert (await replay.welcome())["visitor"] != "user:42"
    async with running_bridge(redis_url, widget_config(identity_secret="${T_SITE_SECRET}", require_identity=True),
                              env=ENV) as b:
        anonymous = await open_tab(tabs, b)
        assert await anonymous.closed() == 1008


# -- hostile input ----------------------------------------------------------------------

async def test_a_foreign_or_missing_origin_is_refused(redis_url: str, tabs: list[Tab]) -> None:
    async with running_bridge(redis_url, widget_config(allowed_origins=["https://shop.example"]), env=ENV) as b:
        for origin in ("https://evil.example", "null", None, "https://shop.example.evil.example"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await open_tab(tabs, b, origin=origin)
            assert refused.value.status == 403
        allowed = await open_tab(tabs, b, origin="https://shop.example")
        assert (await allowed.welcome())["visitor"]


async def test_a_refused_origin_is_logged_with_the_setting_once_per_origin(redis_url: str, tabs: list[Tab],
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    async with running_bridge(redis_url, widget_config(allowed_origins=["https://shop.example"]), env=ENV) as b:
        for origin in ("https://blog.example", "https://blog.example", "https://blog.example", "https://other.example"):
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await open_tab(tabs, b, origin=origin)
        allowed = await open_tab(tabs, b, origin="https://shop.example")
        assert (await allowed.welcome())["visitor"]
        demo = await b.get("/")  # the demo page's one-tag snippet says what else the site needs
        assert "channels.widget.allowed_origins" in await demo.text()
    refused = [r.getMessage() for r in caplog.records if "allowed_origins" in r.getMessage()]
    assert refused == [
        "widget refused a page from origin https://blog.example: add it to channels.widget.allowed_origins "
        "to let the widget connect there",
        "widget refused a page from origin https://other.example: add it to channels.widget.allowed_origins "
        "to let the widget connect there"]
    assert all(r.levelname == "WARNING" for r in caplog.records if "allowed_origins" in r.getMessage())


async def test_huge_and_malformed_frames_close_the_socket_not_the_server(redis_url: str, tabs: list[Tab]) -> None:
    limits = {"max_frame_bytes": 4096, "max_text_chars": 100}
    async with running_bridge(redis_url, widget_config(limits=limits), env=ENV) as b:
        huge = await open_tab(tabs, b)
        await huge.welcome()
        await huge.say("h1", "x" * 10_000)
        assert await huge.closed() == 1009

        not_json = await open_tab(tabs, b)
        await not_json.welcome()
        await not_json.ws.send_str("{not json")
        assert await not_json.closed() == 1007

        bad_utf8 = await open_tab(tabs, b)
        await bad_utf8.welcome()
        await bad_utf8.ws.send_frame(b'{"type":"message","cid":"u1","text":"\xff\xfe"}', aiohttp.WSMsgType.TEXT)
        assert await bad_utf8.closed() == 1007

        binary = await open_tab(tabs, b)
        await binary.welcome()
        await binary.ws.send_bytes(b"\x00\x01")
        assert await binary.closed() == 1003

        bad_hello = await open_tab(tabs, b, hello=None)
        await bad_hello.ws.send_str("[1, 2, 3]")
        assert await bad_hello.closed() == 1007

        # wrong shapes inside valid JSON are refused without closing
        odd = await open_tab(tabs, b)
        await odd.welcome()
        for frame in ({"type": "message", "cid": "../../x", "text": "hi"}, {"type": "message", "cid": "ok", "text": 5},
                      {"type": "message", "cid": "ok2", "text": "   "}, {"type": "message"}):
            await odd.ws.send_str(json.dumps(frame))
        await odd.say("ok3", "y" * 200)
        await wait_for(lambda: sum(f["type"] == "error" for f in odd.frames) == 5, what="five refusals")
        assert [f["code"] for f in odd.frames if f["type"] == "error"] == [
            "bad_cid", "empty", "empty", "bad_cid", "too_long"]
        assert not any(f["type"] == "ack" for f in odd.frames)

        # the server is still there for everyone
        fine = await open_tab(tabs, b)
        await fine.welcome()
        await fine.say("f1", "still working?")
        await wait_for(lambda: any(f["type"] == "ack" for f in fine.frames), what="an ack after the attacks")
        for reason in ("frame_too_big", "bad_frame"):
            await wait_for(lambda r=reason: _metric_seen(b, f'bridge_widget_refused_total{{reason="{r}"}}'),
                           what=f"the {reason} refusals counted")


async def _metric_seen(b: RunningBridge, sample: str) -> bool:
    return sample in await (await b.get("/metrics")).text()


async def test_a_message_flood_is_slowed_then_cut(redis_url: str, tabs: list[Tab]) -> None:
    limits = {"message_burst": 3, "messages_per_minute": 6, "rejected_before_close": 5}
    async with running_bridge(redis_url, widget_config(limits=limits), env=ENV) as b:
        tab = await open_tab(tabs, b)
        visitor = (await tab.welcome())["visitor"]
        for i in range(30):
            if tab.close_code is not None:
                break
            with contextlib.suppress(ConnectionError):
                await tab.say(f"f{i}", f"flood {i}")
        assert await tab.closed() == 1008
        acks = [f["cid"] for f in tab.frames if f["type"] == "ack"]
        slow = [f for f in tab.frames if f["type"] == "error" and f["code"] == "slow_down"]
        assert acks == ["f0", "f1", "f2"]
        assert len(slow) == 5 and all(f["retry_after_ms"] > 0 for f in slow)
        await wait_for(lambda: customer_texts(b, visitor), what="the stored messages")
        await asyncio.sleep(0)  # the three accepted messages are the only ones stored
        assert sorted(await customer_texts(b, visitor)) == ["flood 0", "flood 1", "flood 2"]


async def test_connection_limits_per_visitor_and_per_address(redis_url: str, tabs: list[Tab]) -> None:
    limits = {"connections_per_visitor": 2, "connections_per_ip": 4}
    async with running_bridge(redis_url, widget_config(limits=limits), env=ENV) as b:
        first = await open_tab(tabs, b)
        token = (await first.welcome())["token"]
        second = await open_tab(tabs, b, hello={"token": token})
        await second.welcome()
        third = await open_tab(tabs, b, hello={"token": token})
        assert await third.closed() == 1013
        others = [await open_tab(tabs, b) for _ in range(2)]
        for tab in others:
            await tab.welcome()
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await open_tab(tabs, b)
        assert refused.value.status == 429
        await first.close()  # a closed tab frees its place
        await wait_for(lambda: _can_connect(b), what="a free place after a tab closed")


async def _can_connect(b: RunningBridge) -> bool:
    try:
        tab = await Tab.connect(b.url, hello={})
    except aiohttp.WSServerHandshakeError:
        return False
    try:
        await tab.welcome()
        return True
    finally:
        await tab.close()


async def test_a_silent_socket_is_closed(redis_url: str, tabs: list[Tab]) -> None:
    async with running_bridge(redis_url, widget_config(limits={"hello_timeout_s": 0.2}), env=ENV) as b:
        silent = await open_tab(tabs, b, hello=None)
        assert await silent.closed() == 1008


async def test_send_refuses_what_the_widget_cannot_carry(redis_url: str) -> None:
    async with running_bridge(redis_url, widget_config(), env=ENV) as b:
        adapter = b.bridge.adapters["widget"]
        from bridge.errors import PermanentError

        with pytest.raises(PermanentError):
            await adapter.send(Message(kind="reply", channel="widget", text="to nobody"))
        with pytest.raises(PermanentError):
            await adapter.send(Message(kind="customer", channel="widget", address="v_1", text="?"))


# -- the console's door ------------------------------------------------------------------

async def test_the_console_lets_in_only_agents(redis_url: str, tabs: list[Tab]) -> None:
    from adapters.widget.console import hash_password

    config = widget_config(console={"agents": {"ana": hash_password("s3cret pass")}, "token": None})
    async with running_bridge(redis_url, config, env=ENV) as b:
        tab = await open_tab(tabs, b)
        visitor = (await tab.welcome())["visitor"]
        await tab.say("m1", "hello")
        conversation = await wait_for(lambda: b.store.for_address("widget", visitor))
        api = f"/agent/api/conversations/{conversation.id}"

        assert (await b.get("/agent/api/conversations")).status == 401
        assert (await b.get(api, headers={"Cookie": "bridge_agent=forged.value"})).status == 401
        assert (await b.post("/agent/login", json={"name": "ana", "password": "wrong"})).status == 401
        assert (await b.post("/agent/login", json={"name": "bob", "password": "s3cret pass"})).status == 401
        assert (await b.post("/agent/login", json={"token": "console-token-xyz"})).status == 401  # no token here
        cookie = await console_login(b, name="ana", password="s3cret pass")
        me = await (await b.get("/agent/api/me", headers=cookie)).json()
        assert me["agent"] == "ana"
        detail = await (await b.get(api, headers=cookie)).json()
        assert [i["text"] for i in detail["transcript"] if i["who"] == "customer"] == ["hello"]
        assert (await b.get("/agent/api/conversations/nope-1", headers=cookie)).status == 404

        # a page on another site cannot make the agent's browser post
        foreign = await b.post(f"{api}/reply", json={"text": "phish"},
                               headers={"Origin": "https://evil.example", **cookie})
        assert foreign.status == 403
        form = await b.post(f"{api}/reply", data="text=phish", headers={
            "Content-Type": "application/x-www-form-urlencoded", "Origin": b.url, **cookie})
        assert form.status == 415
        bad_link = await b.post(f"{api}/link", json={"email": "not an address"}, headers={"Origin": b.url, **cookie})
        assert bad_link.status == 400
        resolved = await b.post(f"{api}/resolve", json={}, headers={"Origin": b.url, **cookie})
        assert resolved.status == 200
        await wait_for(lambda: _status(b, conversation.id, "resolved"), what="the conversation resolved")
        assert "phish" not in json.dumps(tab.frames)

        # guessing passwords is slowed down
        statuses = [(await b.post("/agent/login", json={"name": "ana", "password": f"guess {i}"})).status
                    for i in range(12)]
        assert 429 in statuses


async def _status(b: RunningBridge, conversation_id: str, status: str) -> bool:
    conversation = await b.store.get(conversation_id)
    return conversation is not None and conversation.status == status


async def test_events_for_the_console_are_delivered(redis_url: str, tabs: list[Tab]) -> None:
    """With the widget listed in agents.channels, the engine's events go through send()."""
    async with running_bridge(redis_url, widget_config(), env=ENV) as b:
        tab = await open_tab(tabs, b)
        visitor = (await tab.welcome())["visitor"]
        await tab.say("e1", URGENT)
        await wait_for(lambda: tab.texts("bot"), what="the reply")
        conversation = await wait_for(lambda: b.store.for_address("widget", visitor))
        await wait_for(lambda: _escalation_sent(b), what="the escalation event handled")
        assert await b.bus.dead_letters() == []
        assert conversation.urgency == "urgent"


async def _escalation_sent(b: RunningBridge) -> bool:
    from bridge import keys
    from bridge.model import decode

    entries = await outbound_entries(b.redis, "widget")
    events = [decode(fields[b"m"]) for _, fields in entries]
    if not any(e.kind == "event" and e.name == "escalation" for e in events):
        return False
    for stream in keys.outbound_streams("widget", 8):
        if await b.redis.exists(stream) and int((await b.redis.xpending(stream, "dispatch"))["pending"]):
            return False
    return True


@contextlib.asynccontextmanager
async def bridge_on_own_redis(tmp_path: Path, *, aof: bool = False) -> AsyncIterator[tuple[RedisServer, RunningBridge]]:
    """A bridge on a private redis-server that the test may cut off or restart."""
    server = RedisServer(tmp_path, free_port(), aof=aof)
    server.start()
    try:
        async with running_bridge(server.url, widget_config(), env=ENV) as b:
            yield server, b
    finally:
        server.stop()


async def first_exchange(tabs: list[Tab], b: RunningBridge, key: str, text: str) -> tuple[Tab, str, Conversation]:
    """A visitor's tab says ``text`` and gets the bot's reply: (tab, visitor id, conversation)."""
    tab = await open_tab(tabs, b)
    visitor = (await tab.welcome())["visitor"]
    await tab.say(key, text)
    await wait_for(lambda: tab.texts("bot"), what="the first reply")
    return tab, visitor, await wait_for(lambda: b.store.for_address("widget", visitor))


async def test_a_reply_no_broadcast_reached_shows_in_an_open_tab_once_the_fanout_is_back(
        tmp_path: Path, tabs: list[Tab]) -> None:
    """Pub/sub keeps nothing: a reply broadcast while the bridge's subscription was being
    made again (Redis restarting) never reached a tab that stayed open, until the tab's
    next reconnect. Once subscribed again, each open tab gets its conversation's recent
    items again. Here the reply is in the transcript with no broadcast at all, and the
    fanout's connection is cut."""
    async with bridge_on_own_redis(tmp_path) as (server, b):
        tab, visitor, conversation = await first_exchange(tabs, b, "k1", "Hello")
        missed = Message(kind="reply", channel="widget", address=visitor, conversation_id=conversation.id,
                         text="Sent while nobody listened")
        for op in b.store.transcript_ops(conversation.id, missed):
            await b.redis.execute_command(*op)
        await asyncio.sleep(0.5)
        assert "Sent while nobody listened" not in tab.texts("bot")  # nothing broadcast it
        server.command("CLIENT", "KILL", "TYPE", "pubsub")
        await wait_for(lambda: "Sent while nobody listened" in tab.texts("bot"), timeout_s=20,
                       what="the reply no broadcast carried")
        assert tab.texts("bot").count("Sent while nobody listened") == 1


async def test_open_consoles_read_everything_again_once_the_fanout_is_back(tmp_path: Path) -> None:
    """A change announced while the bridge's subscription was being made again (Redis
    restarting) reached no console, which showed a stale queue until its next poll. Once
    subscribed again, every open console is told to read its list and case again."""
    async with bridge_on_own_redis(tmp_path) as (server, b):
        cookie = await console_login(b)
        async with aiohttp.ClientSession() as http, http.ws_connect(
                b.url + "/agent/ws", headers={"Origin": b.url, **cookie}) as live:

            async def subscribed() -> bool:
                (_, count), = await b.redis.pubsub_numsub(keys.FANOUT + "conversations")
                return bool(count)

            await wait_for(subscribed, what="the bridge listening for changed conversations")
            server.command("CLIENT", "KILL", "TYPE", "pubsub")
            frames: list[Any] = []

            async def resynced() -> bool:
                try:
                    message = await live.receive(timeout=1)
                except TimeoutError:
                    return False
                frames.append(json.loads(message.data) if message.type == aiohttp.WSMsgType.TEXT else message)
                return frames[-1] == {"type": "resync"}

            await wait_for(resynced, timeout_s=20, what="the console told to read everything again")


async def test_replies_still_reach_the_visitor_after_redis_restarts(tmp_path: Path, tabs: list[Tab]) -> None:
    async with bridge_on_own_redis(tmp_path, aof=True) as (server, b):
        tab, visitor, conversation = await first_exchange(tabs, b, "r1", "Before the restart")
        await asyncio.to_thread(server.restart)
        # the visitor's socket to the bridge stayed open; the bridge's fanout subscription
        # comes back by itself, so an agent's answer still arrives live
        cookie = await console_login(b)
        r = await b.post(f"/agent/api/conversations/{conversation.id}/reply",
                         json={"text": "After the restart", "client_id": "a1"}, headers={"Origin": b.url, **cookie})
        assert r.status == 200
        await wait_for(lambda: "After the restart" in tab.texts("agent"), timeout_s=20,
                       what="the agent's answer after Redis restarted")
        await tab.say("r2", "Thanks!")
        await wait_for(lambda: sum(f["type"] == "ack" for f in tab.frames) == 2, what="the second ack")

        async def both_kept() -> bool:  # the ack says stored; the engine records it next
            return await customer_texts(b, visitor) == ["Before the restart", "Thanks!"]

        await wait_for(both_kept, what="both messages in the transcript")


def test_the_console_lists_files_and_links_only_web_addresses() -> None:
    from adapters.widget.console import transcript_item
    from bridge.model import Attachment

    message = Message(kind="customer", channel="telegram", address="77", text="see photo", attachments=[
        Attachment(name="board.jpg", mime="image/jpeg", size=2048, ref="AgAC1",
                   url="https://support.example.com/telegram/files/AgAC1?exp=1&sig=ab"),
        Attachment(name="x.html", ref="AgAC2", url="javascript:alert(1)"),
        Attachment(name="no link", ref="AgAC3")])
    item = transcript_item(message)
    assert item is not None
    assert item["attachments"] == [
        {"name": "board.jpg", "mime": "image/jpeg", "size": 2048,
         "url": "https://support.example.com/telegram/files/AgAC1?exp=1&sig=ab"},
        {"name": "x.html", "mime": "application/octet-stream", "size": 0, "url": ""},  # named, never linked
        {"name": "no link", "mime": "application/octet-stream", "size": 0, "url": ""}]


# -- files visitors attach ----------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"a photo of the burnt board" * 10


async def upload(b: RunningBridge, token: str, data: bytes, mime: str = "image/png", name: str = "board.png",
                 origin: str | None = None) -> aiohttp.ClientResponse:
    return await b.post("/widget/upload", data=data, headers={
        "Origin": origin or b.url, "Authorization": f"Bearer {token}", "Content-Type": mime,
        "X-File-Name": urllib.parse.quote(name)})


async def test_a_visitor_attaches_a_photo_that_the_agents_can_open(redis_url: str, tabs: list[Tab]) -> None:
    async with running_bridge(redis_url, widget_config(), env=ENV) as b:
        tab = await open_tab(tabs, b)
        welcome = await tab.welcome()
        assert welcome["uploads"]["max_bytes"] == 5 * 1024 * 1024 and "image/png" in welcome["uploads"]["types"]
        r = await upload(b, welcome["token"], PNG, name="../../etc/burnt board.png")
        assert r.status == 200, await r.text()
        uploaded = await r.json()
        assert uploaded["name"] == "burnt board.png" and uploaded["size"] == len(PNG)  # no directories
        await tab.ws.send_str(json.dumps({"type": "message", "cid": "f1", "text": "This is what arrived",
                                          "files": [uploaded["id"]]}))
        await wait_for(lambda: any(f["type"] == "ack" for f in tab.frames), what="the ack")
        (mine,) = [i for i in tab.items() if i["from"] == "visitor"]
        assert [a["name"] for a in mine["attachments"]] == ["burnt board.png"]

        conversation = await wait_for(lambda: b.store.for_address("widget", welcome["visitor"]),
                                      what="the conversation")
        cookie = await console_login(b)
        r = await b.get(f"/agent/api/conversations/{conversation.id}", headers=cookie)
        (item,) = [i for i in (await r.json())["transcript"] if i["who"] == "customer"]
        (attachment,) = item["attachments"]
        assert attachment["name"] == "burnt board.png" and attachment["mime"] == "image/png"
        async with b.http.get(attachment["url"].replace("http://localhost", "http://127.0.0.1")) as got:
            assert got.status == 200 and await got.read() == PNG and got.content_type == "image/png"
        forged = attachment["url"].replace("type=image%2Fpng", "type=text%2Fhtml")
        async with b.http.get(forged.replace("http://localhost", "http://127.0.0.1")) as got:
            assert got.status == 403


async def test_uploads_are_checked(redis_url: str, tabs: list[Tab]) -> None:
    config = widget_config(uploads={"max_bytes": 1000}, allowed_origins=["https://shop.example"])
    async with running_bridge(redis_url, config, env=ENV) as b:
        first = await open_tab(tabs, b)
        token = (await first.welcome())["token"]
        assert (await upload(b, "forged.token", PNG[:100])).status == 401
        assert (await upload(b, token, b"<script>alert(1)</script>", mime="text/html")).status == 415
        assert (await upload(b, token, PNG * 10)).status == 413
        assert (await upload(b, token, PNG[:100], origin="https://evil.example")).status == 403
        allowed = await upload(b, token, PNG[:100], origin="https://shop.example")  # another site of theirs
        assert allowed.status == 200 and allowed.headers["Access-Control-Allow-Origin"] == "https://shop.example"
        theirs = (await allowed.json())["id"]
        # another visitor cannot attach it, whatever the id
        other = await open_tab(tabs, b)
        await other.welcome()
        await other.ws.send_str(json.dumps({"type": "message", "cid": "x1", "text": "look", "files": [theirs]}))
        error = await wait_for(lambda: next((f for f in other.frames if f["type"] == "error"), None), what="error")
        assert error == {"type": "error", "code": "bad_files", "cid": "x1"}
