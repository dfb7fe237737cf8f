"""Issue 3 end to end: customers on Telegram, agents in Slack threads, the whole bridge in
between (real Redis, engine, dispatchers; python-telegram-bot, slack-bolt and slack-sdk
over real HTTP against the local fake Bot API and Web API)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.slack_api import FakeSlack, Post, sign
from tests.fakes.telegram_api import TOKEN, FakeTelegram
from tests.harness import RunningBridge, running_bridge
from tests.servers import free_port
from tests.test_slack_render import HOSTILE, plain_text_of
from tests.test_telegram_receive import text_update

SLACK_SECRET = "slack-signing-secret-789"
MENTION = "<!subteam^S0ONCALL>"



@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(channels={"C0AGENTS": "support", "C0URGENT": "support-urgent"}) as server:
        server.add_user("U0ALICE", name="Alice Agent", display_name="alice")
        yield server


def config(fake_telegram: FakeTelegram, slack: FakeSlack, **slack_settings: Any) -> dict[str, Any]:
    return {
        "channels": {
            "telegram": {"token": "${T_TELEGRAM_TOKEN}", "base_url": fake_telegram.base_url,
                         "base_file_url": fake_telegram.base_file_url, "poll_timeout_s": 1, "read_timeout_s": 3},
            "slack": {"bot_token": "${T_SLACK_BOT_TOKEN}", "signing_secret": "${T_SLACK_SIGNING_SECRET}",
                      "base_url": slack.base_url, "agents_channel": "C0AGENTS", "urgent_channel": "C0URGENT",
                      "rate_per_address_per_s": 100, "agents": {"U0ALICE": "Alice"}, **slack_settings},
        },
        "agents": {"channels": ["slack"], "urgent_mention": MENTION},
        "triage": {"urgent_keywords": {"en": ["urgent", "production line stopped"]}},
        "flows": {"triage": {"multilingual": False}},  # transport tests: keyword triage, no learned judgement
    }


def env(slack: FakeSlack) -> dict[str, str]:
    return {"T_TELEGRAM_TOKEN": TOKEN, "T_SLACK_BOT_TOKEN": slack.bot_token, "T_SLACK_SIGNING_SECRET": SLACK_SECRET}


_event_ids = iter(range(1, 1_000_000))


async def agent_writes(b: RunningBridge, root: Post, text: str, *, user: str = "U0ALICE",
                       files: list[dict[str, Any]] | None = None) -> None:
    await b.wait_for(lambda: b.store.by_ref(f"slack:{root.channel}:{root.ts}"), what="the thread known to the bridge")
    ts = f"{time.time():.6f}"
    event: dict[str, Any] = {"type": "message", "user": user, "text": text, "ts": ts, "thread_ts": root.ts,
                             "channel": root.channel, "event_ts": ts, "channel_type": "channel",
                             "parent_user_id": "UBOT"}
    if files:
        event.update(subtype="file_share", files=files)
    payload = {"type": "event_callback", "team_id": "T0001", "api_app_id": "A0001",
               "event_id": f"EvTG{next(_event_ids):08d}", "event_time": int(time.time()), "event": event}
    body = json.dumps(payload)
    response = await b.post("/slack/events", data=body.encode(), headers=sign(SLACK_SECRET, body))
    assert response.status == 200


def thread_has(slack: FakeSlack, root: Post, words: str) -> bool:
    return any(words in p.text for p in slack.thread(root.channel, root.ts))


async def test_urgent_telegram_message_is_answered_from_a_slack_thread(redis_url: str, fake_telegram: FakeTelegram,
                                                                       slack: FakeSlack) -> None:
    async with running_bridge(redis_url, config(fake_telegram, slack), env=env(slack)) as b:
        await fake_telegram.push_update(text_update(77001, "URGENT: production line stopped"))
        (instant,) = await b.wait_for(lambda: fake_telegram.texts(77001), what="the instant reply on Telegram")
        assert "urgent" in instant.lower()
        (root,) = await b.wait_for(lambda: slack.top_level("C0URGENT"), what="the urgent thread in Slack")
        assert root.text.startswith(f"{MENTION} ")
        fields = json.dumps(root.blocks)
        assert "telegram" in fields and "Maria" in fields
        assert plain_text_of(root.blocks) == "URGENT: production line stopped"

        await agent_writes(b, root, "note: escalate to the plant team if this takes long")
        await agent_writes(b, root, "Hi Maria, a technician is on the way.")
        await b.wait_for(lambda: len(fake_telegram.texts(77001)) == 2, what="the agent's reply on Telegram")
        assert "a technician is on the way" in fake_telegram.texts(77001)[1]
        assert all("plant team" not in text for text in fake_telegram.texts(77001))
        await b.wait_for(lambda: thread_has(slack, root, "sent to customer"), what="'sent' in the thread")

        await fake_telegram.push_update(text_update(77001, "thank you, how long?", message_id=2))
        await b.wait_for(lambda: thread_has(slack, root, "thank you, how long?"), what="the follow-up in the thread")
        assert len(slack.top_level("C0URGENT")) == 1 and slack.top_level("C0AGENTS") == []


async def test_routine_telegram_message_opens_a_thread_in_the_agents_channel(redis_url: str,
                                                                             fake_telegram: FakeTelegram,
                                                                             slack: FakeSlack) -> None:
    async with running_bridge(redis_url, config(fake_telegram, slack), env=env(slack)) as b:
        await fake_telegram.push_update(text_update(77002, "Could you send me the invoice for May?"))
        await b.wait_for(lambda: fake_telegram.texts(77002), what="the acknowledgement on Telegram")
        (root,) = await b.wait_for(lambda: slack.top_level("C0AGENTS"), what="the routine thread")
        assert MENTION not in root.text and slack.top_level("C0URGENT") == []


async def test_hostile_telegram_text_shows_literally_in_slack(redis_url: str, fake_telegram: FakeTelegram,
                                                              slack: FakeSlack) -> None:
    texts = [t for t in HOSTILE if t.strip()]
    async with running_bridge(redis_url, config(fake_telegram, slack), env=env(slack)) as b:
        for i, text in enumerate(texts):
            await fake_telegram.push_update(text_update(77100 + i, text))
        posts = await b.wait_for(lambda: len(slack.top_level("C0AGENTS")) == len(texts)
                                 and slack.top_level("C0AGENTS"), what="a thread per customer")
        shown = sorted(plain_text_of(p.blocks) for p in posts)
        assert shown == sorted(texts)
        for post in posts:
            assert "<" not in post.text and ">" not in post.text  # nothing Slack would parse as a ping or link


async def test_slack_failures_are_retried_and_delivered_once(redis_url: str, fake_telegram: FakeTelegram,
                                                             slack: FakeSlack) -> None:
    slack.fail("chat.postMessage", status=429, retry_after_s=1)
    slack.fail("chat.postMessage", status=500)
    slack.fail("chat.postMessage", delay_s=1.5)  # longer than timeout_s: the client gives up
    async with running_bridge(redis_url, config(fake_telegram, slack, timeout_s=1), env=env(slack)) as b:
        await fake_telegram.push_update(text_update(77003, "URGENT: production line stopped"))
        await b.wait_for(lambda: slack.top_level("C0URGENT"), timeout_s=20, what="the thread after the failures")
        assert len(slack.calls["chat.postMessage"]) == 4
        (root,) = slack.top_level("C0URGENT")
        assert root.text.startswith(f"{MENTION} ")


async def test_a_file_an_agent_shares_reaches_the_customer_on_telegram(redis_url: str, fake_telegram: FakeTelegram,
                                                                      slack: FakeSlack) -> None:
    port = free_port()  # the file link names the bridge's public address, so it must be known up front
    settings = {**config(fake_telegram, slack), "http": {"port": port, "public_url": f"http://127.0.0.1:{port}"}}
    content = b"%PDF-1.4 " + bytes(range(256)) * 40
    shared = slack.add_file("F0MANUAL01", "restart-procedure.pdf", "application/pdf", content)
    async with running_bridge(redis_url, settings, env=env(slack)) as b:
        await fake_telegram.push_update(text_update(77004, "URGENT: production line stopped"))
        (root,) = await b.wait_for(lambda: slack.top_level("C0URGENT"), what="the urgent thread")
        await agent_writes(b, root, "Here is the restart procedure", files=[shared])
        sent = fake_telegram.sent
        await b.wait_for(lambda: any(m.get("kind") == "document" for m in sent if m["chat_id"] == "77004"),
                         what="the document on Telegram")
        (document,) = [m for m in fake_telegram.sent if m["chat_id"] == "77004" and m.get("kind") == "document"]
        assert document["uploaded"] and document["content"] == content
        assert document["filename"] == "restart-procedure.pdf"
        assert any("Here is the restart procedure" in text for text in fake_telegram.texts(77004))
        await b.wait_for(lambda: thread_has(slack, root, "sent to customer"), what="'sent' in the thread")


def media_update(chat_id: int, message_id: int, **media: Any) -> dict[str, Any]:
    update = text_update(chat_id, "", message_id)
    del update["message"]["text"]
    update["message"].update(media)
    return update


async def test_files_customers_send_reach_agents_as_links_that_cannot_be_forged(
        redis_url: str, fake_telegram: FakeTelegram, slack: FakeSlack) -> None:
    photo = b"\xff\xd8\xff\xe0 a jpeg of the burnt board"
    page = b"<script>alert(document.cookie)</script>"
    fake_telegram.add_file("AgACphoto1", "photos/file_1.jpg", photo)
    fake_telegram.add_file("BQACdoc1", "documents/file_2.html", page)
    async with running_bridge(redis_url, config(fake_telegram, slack), env=env(slack)) as b:
        sizes = [{"file_id": "AgACsmall", "file_unique_id": "AQADs", "width": 90, "height": 60, "file_size": 900},
                 {"file_id": "AgACphoto1", "file_unique_id": "AQADl", "width": 1280, "height": 960,
                  "file_size": len(photo)}]
        await fake_telegram.push_update(media_update(77020, 1, photo=sizes, caption="URGENT: board burnt on arrival"))
        (root,) = await b.wait_for(lambda: slack.top_level("C0URGENT"), what="the urgent thread")
        links = re.findall(r"<(http[^|>]+)\|photo_AQADl\.jpg>", json.dumps(root.blocks).replace("&amp;", "&"))
        assert links, root.blocks
        photo_url = links[0].replace("http://localhost", "http://127.0.0.1")
        async with b.http.get(photo_url) as r:  # what an agent's click on the link gets
            assert r.status == 200 and await r.read() == photo
            assert r.content_type == "image/jpeg" and r.headers["Content-Disposition"].startswith("inline")

        await fake_telegram.push_update(media_update(77020, 2, document={
            "file_id": "BQACdoc1", "file_unique_id": "AQADd", "file_name": "invoice.html", "mime_type": "text/html",
            "file_size": len(page)}))
        (post,) = await b.wait_for(lambda: [p for p in slack.thread(root.channel, root.ts)
                                            if "invoice.html" in json.dumps(p.blocks)],
                                   what="the document in the thread")
        (doc_url,) = re.findall(r"<(http[^|>]+)\|invoice\.html>", json.dumps(post.blocks).replace("&amp;", "&"))
        async with b.http.get(doc_url.replace("http://localhost", "http://127.0.0.1")) as r:
            assert r.status == 200 and await r.read() == page
            # a page a customer wrote never runs on the bridge's origin: a download, sandboxed
            assert r.content_type == "application/octet-stream"
            assert r.headers["Content-Disposition"].startswith("attachment")
            assert "sandbox" in r.headers["Content-Security-Policy"]

        forged = [photo_url.replace("type=image%2Fjpeg", "type=text%2Fhtml"),  # show it as a page
                  photo_url.replace("AgACphoto1", "BQACdoc1"),  # another file
                  photo_url[:-1] + ("0" if photo_url[-1] != "0" else "1"),  # a guessed signature
                  photo_url.split("?", 1)[0]]  # no signature
        for url in forged:
            async with b.http.get(url) as r:
                assert r.status == 403, url
