"""The console's work queue without a browser: the data behind the list (the customer's
last words, waiting, SLA due, order, filters, search, unread counts), display names as
customers receive them, and assignment by agent and by round-robin among online agents."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from adapters.widget import queue
from adapters.widget.assign import next_agent
from adapters.widget.console import hash_password
from adapters.widget.presence import TOPIC as PRESENCE_TOPIC
from bridge import keys
from bridge.config import QueueSettings
from bridge.model import Conversation, Message, Sender
from tests.harness import RunningBridge, running_bridge
from tests.test_api_e2e import AUTH
from tests.test_api_e2e import ENV as API_ENV
from tests.test_widget_protocol import ENV as WIDGET_ENV
from tests.test_widget_protocol import URGENT, console_login, open_tab, tabs, widget_config
from tests.timing import scaled
from tests.webhook import WebhookReceiver
from tests.widget_client import Tab

__all__ = ["tabs"]  # the fixture
ENV = {**WIDGET_ENV, **API_ENV}
ANA_PASSWORD = "ana-password-1"
ANA_HASH = hash_password(ANA_PASSWORD)


def queue_config(webhook_url: str = "", **console: Any) -> dict[str, Any]:
    """Widget and console, the API channel, and the SLA step; Ana logs in with a password
    and has a display name."""
    config = widget_config(console={"agents": {"ana": ANA_HASH},
                                    "profiles": {"ana": {"display_name": "Ana Lima", "initials": "AL"}}, **console})
    config["engine"] = {"steps": ["triage", "routing", "sla"]}
    config["flows"] = {"triage": {"multilingual": False}}
    if webhook_url:
        config["channels"]["api"] = {"token": "${T_API_TOKEN}", "webhook_url": webhook_url,
                                     "webhook_secret": "${T_WEBHOOK_SECRET}"}
    return config


async def rows(b: RunningBridge, cookie: dict[str, str], **query: str) -> list[dict[str, Any]]:
    r = await b.get("/agent/api/conversations", params={"status": "active", **query}, headers=cookie)
    assert r.status == 200, await r.text()
    found: list[dict[str, Any]] = (await r.json())["conversations"]
    return found


async def customer_messages(b: RunningBridge, conversation_id: str, n: int) -> bool:
    return sum(1 for m in await b.store.transcript(conversation_id) if m.kind == "customer") >= n


# -- the rows, from a conversation and its transcript ---------------------------------------

def _conversation(**kw: Any) -> Conversation:
    return Conversation(**{"id": "c-1", "channel": "widget", "address": "v", "created_ms": 1_000, **kw})


def _said(kind: str, text: str, at: int, **kw: Any) -> Message:
    return Message(kind=kind, channel="widget", text=text, created_ms=at, **kw)


def test_a_row_shows_the_customers_words_how_long_they_wait_and_what_is_due() -> None:
    bot = Sender(name="bot")
    ana = Sender(name="Ana Lima", is_agent=True)
    tail = [
        _said("customer", "Where is my order?", 1_000),
        _said("reply", "We have received your message…", 1_001, sender=bot),
        _said("customer", "It is order 42", 2_000),
        _said("event", "SLA warning: routine first response due in 10 min", 3_000),
    ]
    sla = {"started_ms": 1_000, "first_response_due_ms": 90_000, "resolution_due_ms": 900_000}
    open_case = _conversation(data={"sla": sla})
    r = queue.row(open_case, None, tail)
    assert r["preview"] == "It is order 42"  # not the bot's acknowledgement, not the notice
    assert r["waiting_since_ms"] == 1_000  # never answered by a person: since it opened
    assert (r["due_ms"], r["due_kind"]) == (90_000, "first_response")
    assert queue.unread(r, seen_ms=1_500) == 1

    answered = [*tail, _said("reply", "It left today", 4_000, sender=ana), _said("customer", "Thanks!", 5_000)]
    later = _conversation(first_response_ms=4_000, data={"sla": {**sla, "answered_ms": 4_000}})
    r = queue.row(later, None, answered)
    assert r["preview"] == "Thanks!"
    assert r["waiting_since_ms"] == 5_000  # since the first message after the person's answer
    assert (r["due_ms"], r["due_kind"]) == (900_000, "resolution")
    # an agent's message as kept in the transcript (kind agent) is an answer too
    r = queue.row(later, None, [*tail, _said("agent", "It left today", 4_000, sender=ana)])
    assert r["waiting_since_ms"] == 0
    assert queue.row(_conversation(status="resolved", data={"sla": sla}), None, tail)["due_ms"] == 0


def test_the_order_is_status_then_urgency_then_due_time() -> None:
    def r(id: str, status: str = "open", urgency: str = "routine", due: int = 0) -> dict[str, Any]:
        return {"id": id, "status": status, "urgency": urgency, "due_ms": due, "waiting_since_ms": 0,
                "updated_ms": 0}

    found = sorted([r("late-routine", due=900), r("no-sla"), r("early-routine", due=100), r("pending", "pending"),
                    r("urgent", urgency="urgent", due=950), r("resolved", "resolved")], key=queue.sort_key)
    assert [x["id"] for x in found] == ["urgent", "early-routine", "late-routine", "no-sla", "pending", "resolved"]


def test_round_robin_takes_turns_and_is_off_unless_configured() -> None:
    assert [next_agent(["ana", "bob", "cy"], turn) for turn in range(1, 7)] == ["ana", "bob", "cy"] * 2
    assert QueueSettings(email="team@example.com").auto_assign is False


# -- the list endpoint, through a running bridge --------------------------------------------

async def test_the_list_data_filters_search_and_unread_counts(redis_url: str, tabs: list[Tab],
                                                              webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, queue_config(webhook.url), env=ENV) as b:
        routine = await open_tab(tabs, b)
        await routine.welcome()
        await routine.say("r1", "Do you ship to Malaysia?")
        first = await b.wait_for(lambda: _conversation_of(b, routine), what="the routine case")
        await b.wait_for(lambda: routine.texts("bot"), what="the acknowledgement")
        await routine.say("r2", "And how long does it take?")
        await b.wait_for(lambda: customer_messages(b, first.id, 2), what="the follow-up stored")
        urgent = await open_tab(tabs, b)
        await urgent.welcome()
        await urgent.say("u1", URGENT)
        hot = await b.wait_for(lambda: _conversation_of(b, urgent), what="the urgent case")
        r = await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "maria", "name": "Maria",
                                                                 "text": "Could you send me the invoice for May?"})
        assert r.status == 202
        api_case = await b.wait_for(lambda: b.store.for_address("api", "maria"), what="the API case")
        await b.wait_for(lambda: _sla_armed(b, [first.id, hot.id, api_case.id]), what="the SLA clocks")

        ana = await console_login(b, name="ana", password=ANA_PASSWORD)
        listed = await rows(b, ana)
        # urgent first; then the routine cases by due time (the earlier one is due first)
        assert [x["id"] for x in listed] == [hot.id, first.id, api_case.id]
        by_id = {x["id"]: x for x in listed}
        assert by_id[first.id]["preview"] == "And how long does it take?"
        assert by_id[hot.id]["preview"] == URGENT
        assert by_id[api_case.id]["preview"] == "Could you send me the invoice for May?"
        for x in listed:
            conversation = await b.store.get(x["id"])
            assert conversation is not None
            assert x["waiting_since_ms"] == conversation.created_ms
            assert x["due_kind"] == "first_response"
            assert x["due_ms"] == conversation.data["sla"]["first_response_due_ms"]
        assert by_id[hot.id]["due_ms"] - by_id[hot.id]["waiting_since_ms"] == 15 * 60_000
        assert by_id[first.id]["due_ms"] - by_id[first.id]["waiting_since_ms"] == 24 * 3_600_000
        assert by_id[first.id]["unread"] == 2 and by_id[hot.id]["unread"] == 1

        # filters: channel, assignee (after a claim), language; the status
        assert [x["id"] for x in await rows(b, ana, channel="api")] == [api_case.id]
        assert [x["id"] for x in await rows(b, ana, channel="widget")] == [hot.id, first.id]
        r = await b.post(f"/agent/api/conversations/{hot.id}/claim", json={}, headers=ana)
        assert r.status == 200
        await b.wait_for(lambda: _assignee(b, hot.id, "ana"), what="the claim")
        assert [x["id"] for x in await rows(b, ana, agent="ana")] == [hot.id]
        assert [x["id"] for x in await rows(b, ana, agent="-")] == [first.id, api_case.id]
        assert [x["id"] for x in await rows(b, ana, language="en")] == [hot.id, first.id, api_case.id]
        assert await rows(b, ana, language="ru") == []

        # search: every word, in any message of the conversation (not only the last)
        found = await rows(b, ana, q="malaysia")
        assert [x["id"] for x in found] == [first.id] and "Malaysia" in found[0]["snippet"]
        assert [x["id"] for x in await rows(b, ana, q="INVOICE may")] == [api_case.id]
        assert [x["id"] for x in await rows(b, ana, q="maria")] == [api_case.id]  # the customer's name
        assert await rows(b, ana, q="malaysia invoice") == []
        assert [x["id"] for x in await rows(b, ana, q="malaysia", channel="api")] == []

        # opening a case marks it read for this agent only; a new message is unread again
        await b.get(f"/agent/api/conversations/{first.id}", headers=ana)
        assert {x["id"]: x["unread"] for x in await rows(b, ana)}[first.id] == 0
        bob = await console_login(b, token=WIDGET_ENV["T_CONSOLE_TOKEN"], name="Bob")
        assert {x["id"]: x["unread"] for x in await rows(b, bob)}[first.id] == 2
        await routine.say("r3", "Hello?")
        await b.wait_for(lambda: customer_messages(b, first.id, 3), what="the third message stored")
        assert {x["id"]: x["unread"] for x in await rows(b, ana)}[first.id] == 1

        # Ana answers: the customer sees her display name, never her login; nobody waits now
        r = await b.post(f"/agent/api/conversations/{first.id}/reply", json={"text": "Yes, in 3-5 days."},
                         headers=ana)
        assert r.status == 200
        await b.wait_for(lambda: routine.texts("agent"), what="the answer in the widget")
        (answer,) = [i for i in routine.items() if i["from"] == "agent"]
        assert answer["name"] == "Ana Lima"
        r = await b.post(f"/agent/api/conversations/{api_case.id}/reply", json={"text": "Attached."}, headers=ana)
        await b.wait_for(lambda: "Attached." in webhook.texts_for("maria"), what="the answer at the webhook")
        delivered = next(m for m in webhook.messages if m["text"] == "Attached.")
        assert delivered["sender"] == {"name": "Ana Lima", "is_agent": True}
        await b.wait_for(lambda: _assignee(b, first.id, "ana"), what="the answer recorded")
        row = {x["id"]: x for x in await rows(b, ana, status="all")}[first.id]
        assert row["waiting_since_ms"] == 0 and row["due_kind"] == "resolution" and row["status"] == "pending"


async def test_a_password_login_without_a_profile_never_shows_its_id(redis_url: str, tabs: list[Tab]) -> None:
    config = queue_config(agents={"ana": ANA_HASH, "j.smith": hash_password("smith-password")},
                          default_display_name="Acme support")
    async with running_bridge(redis_url, config, env=ENV) as b:
        tab = await open_tab(tabs, b)
        await tab.welcome()
        await tab.say("m1", "Hello")
        conversation = await b.wait_for(lambda: _conversation_of(b, tab), what="the case")
        smith = await console_login(b, name="j.smith", password="smith-password")
        me = await (await b.get("/agent/api/me", headers=smith)).json()
        assert (me["agent"], me["display_name"]) == ("j.smith", "Acme support")
        await b.post(f"/agent/api/conversations/{conversation.id}/reply", json={"text": "Hi!"}, headers=smith)
        await b.wait_for(lambda: tab.texts("agent"), what="the answer")
        assert [i["name"] for i in tab.items() if i["from"] == "agent"] == ["Acme support"]
        # the agents still see who it was
        updated = await b.wait_for(lambda: _assignee(b, conversation.id, "j.smith"), what="assigned")
        assert updated


# -- assignment --------------------------------------------------------------------------

@contextlib.asynccontextmanager
async def online(b: RunningBridge, cookie: dict[str, str]) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """An agent with the console open (its live socket)."""
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(b.url + "/agent/ws", headers={"Origin": b.url, **cookie}) as ws:
        yield ws


async def _online(b: RunningBridge, cookie: dict[str, str], logins: set[str]) -> bool:
    r = await b.get("/agent/api/conversations", headers=cookie)
    return {a["login"] for a in (await r.json())["agents"] if a["online"]} == logins


async def test_round_robin_gives_new_cases_to_online_agents_in_turn(redis_url: str, tabs: list[Tab]) -> None:
    config = queue_config()
    config["queues"] = {"default": {"email": "support@example.com", "auto_assign": True}}
    async with running_bridge(redis_url, config, env=ENV) as b:
        token = WIDGET_ENV["T_CONSOLE_TOKEN"]
        ana = await console_login(b, name="ana", password=ANA_PASSWORD)
        bob = await console_login(b, token=token, name="bob")
        assigned = []
        async with online(b, ana), online(b, bob):
            await b.wait_for(lambda: _online(b, ana, {"ana", "bob"}), what="both agents online")
            for n, text in enumerate(["Do you ship to Malaysia?", URGENT, "Invoice for May?", "Opening hours?"]):
                tab = await open_tab(tabs, b)
                await tab.welcome()
                await tab.say(f"m{n}", text)
                conversation = await b.wait_for(lambda t=tab: _conversation_of(b, t), what="the case")
                done = await b.wait_for(lambda c=conversation: _assigned(b, c.id), what="round-robin")
                assigned.append(done.assignee)
            assert assigned == ["ana", "bob", "ana", "bob"]  # an urgent case (no queue) counts as "default"
            notices = [m.text for m in await b.store.transcript(done.id) if m.kind == "event"]
            assert "assigned to bob by round-robin" in notices
        # Bob closed his console: the next case goes to Ana alone... once she is back
        await b.wait_for(lambda: _online(b, ana, set()), what="both offline")
        async with online(b, ana):
            await b.wait_for(lambda: _online(b, ana, {"ana"}), what="Ana online")
            tab = await open_tab(tabs, b)
            await tab.welcome()
            await tab.say("m9", "One more question")
            conversation = await b.wait_for(lambda: _conversation_of(b, tab), what="the case")
            done = await b.wait_for(lambda: _assigned(b, conversation.id), what="round-robin")
            assert done.assignee == "ana"
            # assignment by name: only to an agent configured or online
            r = await b.post(f"/agent/api/conversations/{conversation.id}/assign", json={"assignee": "ghost"},
                             headers=ana)
            assert r.status == 400 and "assignee" in (await r.json())["error"]
            r = await b.post(f"/agent/api/conversations/{conversation.id}/assign", json={"assignee": "ana"},
                             headers=bob)
            assert r.status == 200
            await b.wait_for(lambda: _notice(b, conversation.id, "assigned to ana by bob"), what="the assignment")


async def _conversation_of(b: RunningBridge, tab: Tab) -> Conversation | None:
    welcome = await tab.welcome()
    return await b.store.for_address("widget", welcome["visitor"])


async def _assignee(b: RunningBridge, conversation_id: str, login: str) -> bool:
    conversation = await b.store.get(conversation_id)
    return conversation is not None and conversation.assignee == login


async def _assigned(b: RunningBridge, conversation_id: str) -> Conversation | None:
    conversation = await b.store.get(conversation_id)
    return conversation if conversation is not None and conversation.assignee else None


async def _notice(b: RunningBridge, conversation_id: str, text: str) -> bool:
    return any(m.kind == "event" and m.text == text for m in await b.store.transcript(conversation_id))


async def _sla_armed(b: RunningBridge, ids: list[str]) -> bool:
    found = await b.store.get_many(ids)
    return all(c is not None and (c.data.get("sla") or {}).get("first_response_due_ms") for c in found)


# -- presence across processes ---------------------------------------------------------------

async def _presence(ws: aiohttp.ClientWebSocketResponse, conversation_id: str) -> list[dict[str, Any]]:
    """The next presence news about ``conversation_id`` (other frames are skipped)."""
    while True:
        msg = await ws.receive(timeout=scaled(10))
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        if frame["type"] == "presence" and frame["conversation_id"] == conversation_id:
            viewers: list[dict[str, Any]] = frame["viewers"]
            return viewers


async def test_who_views_and_types_is_shared_by_every_process(redis_url: str, tabs: list[Tab]) -> None:
    async with running_bridge(redis_url, queue_config(), env=ENV) as b, \
            running_bridge(redis_url, {**queue_config(), "roles": ["web"]}, env=ENV) as other:
        tab = await open_tab(tabs, b)
        await tab.welcome()
        await tab.say("m1", "Hello")
        conversation = await b.wait_for(lambda: _conversation_of(b, tab), what="the case")
        ana = await console_login(b, name="ana", password=ANA_PASSWORD)
        bob = await console_login(other, token=WIDGET_ENV["T_CONSOLE_TOKEN"], name="Bob")
        async with online(other, bob) as bob_ws:
            async with online(b, ana) as ana_ws:
                async def both_listen() -> bool:
                    ((_, count),) = await b.redis.pubsub_numsub(keys.FANOUT + PRESENCE_TOPIC)
                    return int(count) == 2
                await b.wait_for(both_listen, what="both processes following presence")
                # Ana, on one process, is online for the other too
                await other.wait_for(lambda: _online(other, bob, {"ana", "Bob"}), what="both online everywhere")
                await ana_ws.send_str(json.dumps({"type": "view", "conversation_id": conversation.id}))
                assert await _presence(bob_ws, conversation.id) == [
                    {"agent": "ana", "typing": False, "name": "Ana Lima", "initials": "AL"}]
                await ana_ws.send_str(json.dumps({"type": "view", "conversation_id": conversation.id,
                                                  "typing": True}))
                assert [v["typing"] for v in await _presence(bob_ws, conversation.id)] == [True]
            # Ana closed her console: she left the case, and is offline
            assert await _presence(bob_ws, conversation.id) == []
            await other.wait_for(lambda: _online(other, bob, {"Bob"}), what="Ana offline everywhere")
