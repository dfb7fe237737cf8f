"""Slack -> bridge: signed Events API posts and Socket Mode envelopes, on recorded payloads.

The adapter's routes are served by a real aiohttp server; requests are signed the way
Slack signs them; bolt and slack-sdk are the real libraries.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.slack.adapter import SlackAdapter
from adapters.slack.config import SlackConfig
from bridge import filelinks
from bridge.model import Message
from tests.fakes.slack_api import FakeSlack, MemoryContext, sign
from tests.harness import wait_for

FIXTURES = Path(__file__).parent / "fixtures" / "slack"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
THREAD_REF = "slack:C0URGENT:1700000000.000100"
CONVERSATION = "abc123abc123-1"


def fixture(name: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return payload


class Served:
    """An adapter behind a real HTTP server, with its context and the fake Slack."""

    def __init__(self, adapter: SlackAdapter, context: MemoryContext, fake: FakeSlack) -> None:
        self.adapter = adapter
        self.context = context
        self.fake = fake
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.http: aiohttp.ClientSession | None = None

    async def start(self) -> Served:
        app = web.Application()
        app.add_routes(list(self.adapter.routes()))
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = (getattr(site._server, "sockets", None) or [])[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/slack/events"
        self.adapter.ctx = dataclasses.replace(self.adapter.ctx, public_url=f"http://127.0.0.1:{port}")
        self.http = aiohttp.ClientSession()
        await self.adapter.start()
        return self

    async def stop(self) -> None:
        await self.adapter.stop()
        if self.http is not None:
            await self.http.close()
        if self.runner is not None:
            await self.runner.cleanup()

    async def post(self, body: str, headers: dict[str, str]) -> tuple[int, str]:
        assert self.http is not None
        async with self.http.post(self.url, data=body.encode(), headers=headers) as response:
            return response.status, await response.text()

    async def event(self, payload: dict[str, Any], *, secret: str = SECRET, timestamp: int | None = None,
                    extra: dict[str, str] | None = None) -> int:
        body = json.dumps(payload)
        status, _ = await self.post(body, sign(secret, body, timestamp=timestamp, extra=extra))
        return status

    async def action(self, payload: dict[str, Any]) -> int:
        body = "payload=" + urllib.parse.quote(json.dumps(payload))
        status, _ = await self.post(body, sign(SECRET, body))
        return status

    @property
    def published(self) -> list[Message]:
        return self.context.published


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        server.add_user("U0ALICE", name="Alice Agent", email="alice@example.com", display_name="alice")
        server.add_user("U0BOB", name="Bob Builder", email="Bob@Example.com", display_name="bob")
        server.add_user("U0CUST", name="Maria Customer", display_name="Maria")
        yield server


async def serve(fake: FakeSlack, **overrides: Any) -> Served:
    values: dict[str, Any] = {"bot_token": fake.bot_token, "signing_secret": SECRET, "base_url": fake.base_url,
                              "agents_channel": "C0AGENTS", "urgent_channel": "C0URGENT",
                              "rate_per_address_per_s": 1000.0, "agents": {"U0ALICE": "Alice"}}
    values.update(overrides)
    context = MemoryContext()
    context.conversations.refs[THREAD_REF] = CONVERSATION
    return await Served(SlackAdapter(SlackConfig(**values), context.ctx), context, fake).start()


@pytest.fixture
async def served(fake: FakeSlack) -> AsyncIterator[Served]:
    s = await serve(fake)
    yield s
    await s.stop()


async def test_url_verification_is_answered(served: Served) -> None:
    body = json.dumps(fixture("url_verification"))
    status, text = await served.post(body, sign(SECRET, body))
    assert status == 200 and json.loads(text) == {"challenge": fixture("url_verification")["challenge"]}


async def test_an_agent_reply_in_the_thread_becomes_an_agent_message(served: Served) -> None:
    assert await served.event(fixture("message_thread_reply")) == 200
    (message,) = served.published
    assert message.kind == "agent" and message.channel == "slack"
    assert message.ref == THREAD_REF and message.conversation_id == CONVERSATION
    assert message.text == "Hi @Maria, your order ships tomorrow & tracking is at https://track.example.com/123"
    assert message.sender is not None
    assert (message.sender.id, message.sender.name, message.sender.is_agent) == ("U0ALICE", "Alice", True)
    assert message.dedupe_key == "slack:Ev0REPLY0001"
    assert message.platform_ms == 1700000100000


@pytest.mark.parametrize("how", ["wrong secret", "stale", "future", "tampered", "unsigned"])
async def test_forged_or_stale_requests_are_refused(served: Served, how: str) -> None:
    payload = fixture("message_thread_reply")
    body = json.dumps(payload)
    if how == "wrong secret":
        headers = sign("not-the-secret", body)
    elif how == "stale":
        headers = sign(SECRET, body, timestamp=int(time.time()) - 6 * 60)
    elif how == "future":
        headers = sign(SECRET, body, timestamp=int(time.time()) + 6 * 60)
    elif how == "tampered":
        headers = sign(SECRET, body)
        body = body.replace("ships tomorrow", "ships never")
    else:
        headers = {"Content-Type": "application/json"}
    status, _ = await served.post(body, headers)
    assert status == 401
    assert served.published == []


async def test_a_note_stays_internal(served: Served) -> None:
    assert await served.event(fixture("message_note")) == 200
    (note,) = served.published
    assert (note.kind, note.name) == ("command", "note")
    assert note.text == "customer is on the VIP list, check the contract first"
    assert all(m.kind != "agent" for m in served.published)


def reply_saying(text: str, event_id: str) -> dict[str, Any]:
    payload = fixture("message_thread_reply")
    payload["event_id"] = event_id
    payload["event"]["text"] = text
    return payload


@pytest.mark.parametrize("text", ["_note:_ check the contract first", "*note:* check the contract first",
                                  "*Note*: check the contract first", "~note:~ check the contract first",
                                  "`note:` check the contract first"])
async def test_a_note_prefix_in_slack_formatting_stays_internal(served: Served, text: str) -> None:
    assert await served.event(reply_saying(text, "Ev0FORMATTEDNOTE")) == 200
    (note,) = served.published
    assert (note.kind, note.name, note.text) == ("command", "note", "check the contract first")


async def test_emoji_shortcodes_reach_the_customer_as_emoji(served: Served) -> None:
    text = ":wave: Hi, it ships today :white_check_mark: :+1: (at 10:30:00, :not_an_emoji:)"
    assert await served.event(reply_saying(text, "Ev0EMOJI")) == 200
    (reply,) = served.published
    assert reply.kind == "agent"
    assert reply.text == "\U0001f44b Hi, it ships today \u2705 \U0001f44d (at 10:30:00, :not_an_emoji:)"


async def test_notes_can_be_dropped_entirely(fake: FakeSlack) -> None:
    s = await serve(fake, record_notes=False)
    try:
        assert await s.event(fixture("message_note")) == 200
        assert s.published == []
    finally:
        await s.stop()


async def test_explicit_mode_sends_only_marked_replies(fake: FakeSlack) -> None:
    s = await serve(fake, replies="explicit", agents={"bob@example.com": "Bob"})
    try:
        assert await s.event(fixture("message_thread_reply")) == 200  # unmarked: internal
        assert await s.event(fixture("message_marked_reply")) == 200  # ">> ...": to the customer
        note, reply = s.published
        assert (note.kind, note.name) == ("command", "note")
        assert reply.kind == "agent" and reply.text == "We have replaced the part, you can restart the line now."
        assert reply.sender is not None and reply.sender.name == "Bob"  # mapped by email, case-insensitively
        assert reply.sender.email == "Bob@Example.com"
    finally:
        await s.stop()


async def test_an_unmapped_agent_is_shown_by_slack_name(fake: FakeSlack) -> None:
    s = await serve(fake, agents={})
    try:
        await s.event(fixture("message_marked_reply"))
        (reply,) = s.published
        assert reply.sender is not None and reply.sender.name == "bob"
    finally:
        await s.stop()


@pytest.mark.parametrize("name", ["message_bot_own", "message_changed", "message_top_level"])
async def test_bots_edits_and_channel_chatter_are_not_ingested(served: Served, name: str) -> None:
    assert await served.event(fixture(name)) == 200
    assert served.published == []


async def test_our_own_posts_are_never_ingested_even_without_bot_id(served: Served) -> None:
    payload = fixture("message_thread_reply")
    payload["event"]["user"] = served.fake.bot_user_id
    assert await served.event(payload) == 200
    assert served.published == []


async def test_threads_the_bridge_did_not_open_are_ignored(served: Served) -> None:
    payload = fixture("message_thread_reply")
    payload["event"]["thread_ts"] = "1600000000.000001"
    payload["event"]["parent_user_id"] = "U0ALICE"
    assert await served.event(payload) == 200
    assert served.published == []


async def test_a_reply_quicker_than_the_bridge_recording_the_thread_is_kept(served: Served) -> None:
    served.context.conversations.refs.clear()  # the dispatcher has not recorded the ref yet
    await served.adapter.send(Message(kind="event", channel="slack", name="escalation", conversation_id="conv-9",
                                      text="line stopped", data={"conversation": {"id": "conv-9"}}))
    (root,) = served.fake.top_level("C0URGENT")
    payload = fixture("message_thread_reply")
    payload["event"]["thread_ts"] = root.ts
    assert await served.event(payload) == 200
    (message,) = served.published
    assert (message.conversation_id, message.ref) == ("conv-9", f"slack:C0URGENT:{root.ts}")


async def test_a_reply_in_a_thread_our_bot_started_is_published_by_ref(served: Served) -> None:
    served.context.conversations.refs.clear()  # unknown here: the bus resolves the ref (or dead-letters it)
    assert await served.event(fixture("message_thread_reply")) == 200
    (message,) = served.published
    assert (message.kind, message.conversation_id, message.ref) == ("agent", "", THREAD_REF)


async def test_an_unhandled_event_type_is_acknowledged(served: Served) -> None:
    payload = fixture("message_thread_reply")
    payload["event"] = {"type": "reaction_added", "user": "U0ALICE", "reaction": "eyes",
                        "item": {"type": "message", "channel": "C0URGENT", "ts": "1700000000.000100"},
                        "event_ts": "1700000999.000000"}
    assert await served.event(payload) == 200
    assert served.published == []


async def test_thread_commands_become_commands(served: Served) -> None:
    assert await served.event(fixture("message_command_assign")) == 200
    (command,) = served.published
    assert (command.kind, command.name, command.conversation_id) == ("command", "assign", CONVERSATION)
    assert command.data == {"assignee_id": "U0BOB", "assignee": "bob"}
    assert command.sender is not None and command.sender.name == "Alice"
    for i, (text, name, data) in enumerate([("!claim", "claim", {}), ("!resolve", "resolve", {}),
                                            ("!reopen", "reopen", {}),
                                            ("!urgency routine", "urgency", {"urgency": "routine"})]):
        payload = fixture("message_command_assign")
        payload["event"]["text"] = text
        payload["event_id"] = f"Ev0CMD{i:06d}X"
        assert await served.event(payload) == 200
        assert (served.published[-1].name, served.published[-1].data) == (name, data)


async def test_a_bad_command_is_explained_in_the_thread_and_not_sent(served: Served) -> None:
    payload = fixture("message_command_assign")
    payload["event"]["text"] = "!frobnicate the widget"
    assert await served.event(payload) == 200
    assert served.published == []
    await wait_for(lambda: served.fake.thread("C0URGENT", "1700000000.000100"), what="the explanation")
    (post,) = served.fake.thread("C0URGENT", "1700000000.000100")
    assert "unknown command !frobnicate" in post.text


async def test_files_shared_in_the_thread_go_with_the_reply(served: Served) -> None:
    content = b"%PDF-1.4 replacement procedure" + bytes(range(256))
    served.fake.add_file("F0FILE0001", "procedure.pdf", "application/pdf", content)
    assert await served.event(fixture("message_file_share")) == 200
    (reply,) = served.published
    assert reply.text == "Here is the replacement procedure"
    (attachment,) = reply.attachments
    assert (attachment.name, attachment.mime, attachment.size, attachment.ref) == (
        "procedure.pdf", "application/pdf", 48213, "F0FILE0001")
    base = served.url.removesuffix("/slack/events")
    assert attachment.url.startswith(f"{base}/slack/files/F0FILE0001?exp=")
    assert served.http is not None
    async with served.http.get(attachment.url) as response:  # what the customer's channel does
        assert response.status == 200 and response.content_type == "application/pdf"
        assert await response.read() == content
    assert served.fake.file_downloads == ["F0FILE0001"]


@pytest.mark.parametrize("how", ["tampered", "other file", "expired", "unsigned"])
async def test_file_links_cannot_be_forged(served: Served, how: str) -> None:
    served.fake.add_file("F0FILE0001", "procedure.pdf", "application/pdf", b"secret plans")
    served.fake.add_file("F0OTHER001", "payroll.xlsx", "application/vnd.ms-excel", b"salaries")
    assert await served.event(fixture("message_file_share")) == 200
    url = served.published[0].attachments[0].url
    if how == "tampered":
        url = url[:-1] + ("0" if url[-1] != "0" else "1")
    elif how == "other file":
        url = url.replace("F0FILE0001", "F0OTHER001")
    elif how == "expired":
        key = filelinks.signing_key("slack", served.fake.bot_token)
        url = filelinks.link(served.url.removesuffix("/slack/events"), "/slack/files", key, "F0FILE0001", 60,
                         now_s=time.time() - 3600)
    else:
        url = url.split("?", 1)[0]
    assert served.http is not None
    async with served.http.get(url) as response:
        assert response.status == 403
    assert served.fake.file_downloads == []


async def test_a_file_gone_from_slack_is_404(served: Served) -> None:
    assert await served.event(fixture("message_file_share")) == 200  # never added to the fake
    assert served.http is not None
    async with served.http.get(served.published[0].attachments[0].url) as response:
        assert response.status == 404


async def test_the_claim_button_claims(served: Served) -> None:
    assert await served.action(fixture("block_actions_claim")) == 200
    (command,) = served.published
    assert (command.kind, command.name, command.conversation_id) == ("command", "claim", CONVERSATION)
    assert command.sender is not None and command.sender.id == "U0BOB" and command.sender.is_agent
    assert command.data == {"agent": "bob", "agent_id": "U0BOB"}
    assert await served.action(fixture("block_actions_claim")) == 200  # the same click again
    assert len(served.published) == 1


async def test_nothing_is_acknowledged_before_it_is_stored(served: Served) -> None:
    served.context.fail_publish = ConnectionError("redis is down")
    assert await served.event(fixture("message_thread_reply")) == 500
    assert await served.action(fixture("block_actions_claim")) == 500
    served.context.fail_publish = None
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_error"}
    assert await served.event(fixture("message_thread_reply"), extra=retry) == 200
    assert [m.kind for m in served.published] == ["agent"]


async def test_a_slow_store_is_not_acknowledged(fake: FakeSlack) -> None:
    s = await serve(fake, ack_timeout_s=0.3)
    try:
        s.context.publish_delay_s = 1.0
        assert await s.event(fixture("message_thread_reply")) == 503  # slack retries; the dedupe key holds
        s.context.publish_delay_s = 0.0
        assert await s.event(fixture("message_thread_reply"), extra={"X-Slack-Retry-Num": "1"}) == 200
        assert len(s.published) == 1
    finally:
        await s.stop()


# -- Socket Mode ---------------------------------------------------------------------------


async def test_socket_mode_receives_acks_and_deduplicates(fake: FakeSlack) -> None:
    s = await serve(fake, mode="socket", app_token=fake.app_token, signing_secret=None)
    try:
        assert [getattr(r, "method", "") for r in s.adapter.routes()] == ["GET"]  # file links only, no events
        await fake.wait_socket()
        payload = fixture("message_thread_reply")
        ack = await fake.socket_send(payload)
        assert ack is not None and "envelope_id" in ack
        assert await fake.socket_send(payload, retry_attempt=1) is not None
        (message,) = s.published
        assert message.kind == "agent" and message.ref == THREAD_REF and message.sender is not None
        assert message.sender.name == "Alice"
        assert await fake.socket_send(fixture("block_actions_claim"), kind="interactive") is not None
        assert [m.name for m in s.published] == ["", "claim"]
    finally:
        await s.stop()


async def test_socket_mode_does_not_ack_what_it_could_not_store(fake: FakeSlack) -> None:
    s = await serve(fake, mode="socket", app_token=fake.app_token, signing_secret=None)
    try:
        s.context.fail_publish = ConnectionError("redis is down")
        assert await fake.socket_send(fixture("message_thread_reply"), timeout_s=1.0) is None
        s.context.fail_publish = None
        assert await fake.socket_send(fixture("message_thread_reply"), retry_attempt=1) is not None
        assert len(s.published) == 1
    finally:
        await s.stop()


async def test_socket_mode_with_a_bad_app_token_reports_broken(fake: FakeSlack) -> None:
    s = await serve(fake, mode="socket", app_token="xapp-wrong", signing_secret=None)
    try:
        assert s.context.health[-1] == ("broken", "socket mode: slack: invalid_auth (check channels.slack.app_token)")
        assert fake.sockets == []
    finally:
        await s.stop()


async def test_events_are_not_lost_when_slack_auth_test_fails(fake: FakeSlack) -> None:
    """bolt's default authorization answers 200 (and drops the event) when auth.test
    fails; the adapter must take the event in anyway, or at least let Slack retry."""
    fake.fail("auth.test", status=500, times=3)
    s = await serve(fake)
    try:
        status = await s.event(fixture("message_thread_reply"))
        if status != 200:  # not acknowledged: Slack retries
            status = await s.event(fixture("message_thread_reply"), extra={"X-Slack-Retry-Num": "1"})
        assert status == 200
        assert [m.kind for m in s.published] == ["agent"]
    finally:
        await s.stop()


async def test_socket_mode_connects_once_slack_is_back(fake: FakeSlack) -> None:
    fake.fail("apps.connections.open", status=503)
    s = await serve(fake, mode="socket", app_token=fake.app_token, signing_secret=None)
    try:
        assert s.context.health[-1][0] == "degraded"
        await fake.wait_socket()
        assert await fake.socket_send(fixture("message_thread_reply")) is not None
        assert len(s.published) == 1
    finally:
        await s.stop()


async def test_socket_mode_does_not_ack_what_it_could_not_store_in_time(fake: FakeSlack) -> None:
    s = await serve(fake, mode="socket", app_token=fake.app_token, signing_secret=None, ack_timeout_s=0.3)
    try:
        s.context.publish_delay_s = 2.0
        assert await fake.socket_send(fixture("message_thread_reply"), timeout_s=1.0) is None
        s.context.publish_delay_s = 0.0
        assert await fake.socket_send(fixture("message_thread_reply"), retry_attempt=1) is not None
        assert len(s.published) == 1
    finally:
        await s.stop()


async def test_a_slow_users_info_does_not_hold_the_event(fake: FakeSlack) -> None:
    fake.fail("users.info", delay_s=1.2)
    s = await serve(fake, agents={})
    try:
        assert await s.event(fixture("message_marked_reply")) == 200
        (reply,) = s.published
        assert reply.sender is not None and reply.sender.name == "U0BOB"  # the id stands in for the name
    finally:
        await s.stop()
