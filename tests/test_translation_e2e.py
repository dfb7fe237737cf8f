"""Translation through the whole bridge: customers on the HTTP API channel, agents in (fake)
Slack and in the console, a fake translation service over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.slack_api import FakeSlack, Post
from tests.fakes.translation_api import FakeTranslation
from tests.harness import Clock, RunningBridge, merged, running_bridge
from tests.mailservers import Dovecot, RecordingHandler
from tests.test_email_e2e import AUTH as EMAIL_AUTH
from tests.test_email_e2e import ENV as EMAIL_ENV
from tests.test_email_e2e import TEAM, imap_ready, mail_to, smtp  # noqa: F401 - smtp is a fixture
from tests.test_email_e2e import bridge_config as email_config
from tests.test_slack_e2e import agent_writes, customer_writes, replies
from tests.test_slack_e2e import config as slack_config
from tests.test_slack_e2e import env as slack_env
from tests.test_widget_protocol import ENV as WIDGET_ENV
from tests.test_widget_protocol import console_login
from tests.webhook import WebhookReceiver

ZH = "你好，我的订单什么时候发货？我需要尽快知道。"
EN = "Hello, when will my order ship? I need to know soon."
REPLY = "It ships tomorrow morning."
REPLY_ZH = "明天早上发货。"
DEEPL_KEY = "9f8e7d6c-secret-key:fx"


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(channels={"C0AGENTS": "support", "C0URGENT": "support-urgent"}) as server:
        server.add_user("U0ALICE", name="Alice Agent", email="alice@example.com", display_name="alice")
        yield server


@pytest.fixture
async def translator() -> AsyncIterator[FakeTranslation]:
    async with FakeTranslation({(ZH, "en"): EN, (REPLY, "zh"): REPLY_ZH, (ZH, "es"): "Hola, ¿cuándo?"},
                               deepl_key=DEEPL_KEY) as server:
        yield server


def desk(fake_slack: FakeSlack, webhook: WebhookReceiver, translation: dict[str, Any] | None) -> dict[str, Any]:
    config = merged(slack_config(fake_slack, webhook), {
        "channels": {"widget": {"secret": "${T_WIDGET_SECRET}", "console": {"token": "${T_CONSOLE_TOKEN}"}}},
        "agents": {"channels": ["slack", "widget"]}})
    if translation is not None:
        config["translation"] = translation
    return config


def libre(translator: FakeTranslation, **extra: Any) -> dict[str, Any]:
    return {"provider": "libretranslate", "base_url": translator.url, "timeout_s": 2, **extra}


ENV = {**WIDGET_ENV, "T_DEEPL_KEY": DEEPL_KEY}


async def opened(b: RunningBridge, fake_slack: FakeSlack, customer: str, text: str) -> Post:
    await customer_writes(b, customer, text, f"{customer}-1")

    def roots() -> list[Post]:
        return [p for p in fake_slack.posts if not p.thread_ts and text[:10] in str(p.blocks)]

    return (await b.wait_for(roots, what="the thread opened in Slack"))[0]


def thread_texts(fake_slack: FakeSlack, root: Post) -> list[str]:
    return [p.text for p in fake_slack.thread(root.channel, root.ts)]


async def console_view(b: RunningBridge, conversation_id: str, cookie: dict[str, str]) -> dict[str, Any]:
    response = await b.http.get(f"{b.url}/agent/api/conversations/{conversation_id}", headers=cookie)
    return json.loads(await response.text())


async def conversation_id(b: RunningBridge, customer: str) -> str:
    conversation = await b.wait_for(lambda: b.store.for_address("api", customer), what="the conversation")
    return str(conversation.id)


@pytest.mark.parametrize("provider", ["libretranslate", "deepl", "openai"])
async def test_a_chinese_customer_and_an_english_agent(redis_url: str, fake_slack: FakeSlack,
                                                       webhook: WebhookReceiver, translator: FakeTranslation,
                                                       provider: str) -> None:
    section = {"libretranslate": libre(translator),
               "deepl": {"provider": "deepl", "base_url": translator.url, "api_key": "${T_DEEPL_KEY}"},
               "openai": {"provider": "openai", "base_url": translator.url + "/v1", "model": "local"}}[provider]
    async with running_bridge(redis_url, desk(fake_slack, webhook, section),
                              env={**slack_env(fake_slack), **ENV}) as b:
        root = await opened(b, fake_slack, "cust-zh", ZH)
        # the thread: the customer's words, then the translation under them
        await b.wait_for(lambda: any(EN in t for t in thread_texts(fake_slack, root)), what="the translation")
        assert ZH in str(root.blocks)
        translation = next(p for p in fake_slack.thread(root.channel, root.ts) if EN in p.text)
        assert "Translation" in translation.text and "zh → en" in translation.text

        # the console: the original, with the translation under it
        cid = await conversation_id(b, "cust-zh")
        cookie = await console_login(b)
        view = await console_view(b, cid, cookie)
        (customer,) = [i for i in view["transcript"] if i["who"] == "customer"]
        assert customer["text"] == ZH
        assert customer["translation"]["text"] == EN and customer["translation"]["language"] == "en"
        assert customer["translation"]["source"] == "zh"

        # the agent answers with !tr: the customer reads Chinese, the agents keep the English
        await agent_writes(b, root, f"!tr {REPLY}")
        await b.wait_for(lambda: [m for m in replies(webhook, "cust-zh") if m["text"] == REPLY_ZH],
                         what="the translated reply at the customer")
        assert [m["text"] for m in replies(webhook, "cust-zh")][-1] == REPLY_ZH
        assert REPLY not in [m["text"] for m in replies(webhook, "cust-zh")]
        await b.wait_for(lambda: any(REPLY_ZH in t and "Sent to the customer" in t
                                     for t in thread_texts(fake_slack, root)), what="the sent translation shown")
        view = await console_view(b, cid, cookie)
        (agent,) = [i for i in view["transcript"] if i["who"] == "agent"]
        assert agent["text"] == REPLY and agent["name"] == "Alice"
        assert agent["sent_as"] == {"text": REPLY_ZH, "language": "zh", "language_name": "Chinese (Simplified)",
                                    "error": ""}
        transcript = await b.store.transcript(cid)
        assert [m.text for m in transcript if m.kind == "agent"] == [REPLY]  # the original, kept
        assert await b.bus.dead_letters() == []
    if provider == "deepl":
        assert all(h["Authorization"] == f"DeepL-Auth-Key {DEEPL_KEY}" for _, h, _ in translator.requests)


@pytest.mark.parametrize(("mode", "reason"), [
    ("500", "HTTP 500 from the provider"),
    ("429", "rate limited by the provider (HTTP 429)"),
    ("badjson", "not JSON"),
    ("hang", "no answer within 1 s"),
])
async def test_failures_fall_back_to_the_original_clearly_marked(redis_url: str, fake_slack: FakeSlack,
                                                                 webhook: WebhookReceiver,
                                                                 translator: FakeTranslation,
                                                                 mode: str, reason: str) -> None:
    async with running_bridge(redis_url, desk(fake_slack, webhook, libre(translator, timeout_s=1)),
                              env={**slack_env(fake_slack), **ENV}) as b:
        translator.fail(mode)
        root = await opened(b, fake_slack, "cust-zh", ZH)
        await b.wait_for(lambda: any("translation unavailable" in t for t in thread_texts(fake_slack, root)),
                         what="the failure shown in the thread")
        marked = next(t for t in thread_texts(fake_slack, root) if "translation unavailable" in t)
        assert reason in marked and "the original is above" in marked
        cid = await conversation_id(b, "cust-zh")
        cookie = await console_login(b)
        (customer,) = [i for i in (await console_view(b, cid, cookie))["transcript"] if i["who"] == "customer"]
        assert customer["text"] == ZH and customer["translation"]["text"] == ""
        assert reason in customer["translation"]["error"]

        # the reply: sent as written, at once after the failure, and the agents told
        translator.fail(mode)
        await agent_writes(b, root, f"!tr {REPLY}")
        await b.wait_for(lambda: [m for m in replies(webhook, "cust-zh") if m["text"] == REPLY],
                         what="the original reply at the customer")
        await b.wait_for(lambda: any("sent to the customer as written" in t for t in thread_texts(fake_slack, root)),
                         what="the fallback shown in the thread")
        (agent,) = [i for i in (await console_view(b, cid, cookie))["transcript"] if i["who"] == "agent"]
        assert agent["text"] == REPLY and reason in agent["sent_as"]["error"]
        assert [m["text"] for m in replies(webhook, "cust-zh")].count(REPLY) == 1
        assert await b.bus.dead_letters() == []


async def test_a_translation_lost_on_the_way_is_covered_by_the_timer(redis_url: str, fake_slack: FakeSlack,
                                                                     webhook: WebhookReceiver,
                                                                     translator: FakeTranslation) -> None:
    clock = Clock()
    async with running_bridge(redis_url, desk(fake_slack, webhook, libre(translator, timeout_s=20)),
                              env={**slack_env(fake_slack), **ENV}, clock_ms=clock) as b:
        root = await opened(b, fake_slack, "cust-zh", ZH)
        await b.wait_for(lambda: any(EN in t for t in thread_texts(fake_slack, root)), what="the translation")
        translator.fail("hang")  # the provider takes the reply and never answers in time
        await agent_writes(b, root, f"!tr {REPLY}")
        await b.wait_for(lambda: len(translator.requests) >= 2, what="the reply at the provider")
        await b.wait_for(lambda: b.scheduled("translated_reply"), what="the fallback timer committed")
        clock.advance(minutes=1)  # past timeout_s + the grace: the timer sends the original
        await b.wait_for(lambda: [m for m in replies(webhook, "cust-zh") if m["text"] == REPLY],
                         what="the original reply at the customer")
        await b.wait_for(lambda: any("no translation in time" in t for t in thread_texts(fake_slack, root)),
                         what="the reason in the thread")
        translator.release()  # the late answer changes nothing: the reply went once
        engine = b.bridge.engine
        assert engine is not None
        await b.wait_for(lambda: engine.jobs.running == 0, what="the late job's command published")
        # the conversation's next message is handled after that command (one partition, in order)
        await customer_writes(b, "cust-zh", "还有一个问题。", "cust-zh-2")
        await b.wait_for(lambda: any("[en] 还有一个问题。" in t for t in thread_texts(fake_slack, root)),
                         what="the next message's translation")
        assert [m["text"] for m in replies(webhook, "cust-zh")].count(REPLY) == 1
        assert REPLY_ZH not in [m["text"] for m in replies(webhook, "cust-zh")]


async def test_no_provider_means_no_translation_and_no_errors(redis_url: str, fake_slack: FakeSlack,
                                                              webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, desk(fake_slack, webhook, None), env={**slack_env(fake_slack), **ENV}) as b:
        root = await opened(b, fake_slack, "cust-zh", ZH)
        cookie = await console_login(b)
        me = json.loads(await (await b.http.get(f"{b.url}/agent/api/me", headers=cookie)).text())
        assert me["translation"]["enabled"] is False
        await agent_writes(b, root, f"!tr {REPLY}")
        await b.wait_for(lambda: [m for m in replies(webhook, "cust-zh") if m["text"] == REPLY],
                         what="the reply, as written")
        await b.wait_for(lambda: any("Not translated: translation.provider is not set" in t
                                     for t in thread_texts(fake_slack, root)), what="the notice")
        cid = await conversation_id(b, "cust-zh")
        view = await console_view(b, cid, cookie)
        assert all("translation" not in i and "sent_as" not in i for i in view["transcript"])
        assert not any("ranslation unavailable" in t for t in thread_texts(fake_slack, root))
        # a console asking to translate anyway: sent as written
        r = await b.http.post(f"{b.url}/agent/api/conversations/{cid}/reply", headers=cookie,
                              json={"text": "Second answer.", "translate": True})
        assert r.status == 200
        await b.wait_for(lambda: [m for m in replies(webhook, "cust-zh") if m["text"] == "Second answer."],
                         what="the console's reply, as written")
        assert await b.bus.dead_letters() == []


async def test_each_agent_reads_their_own_language_and_english_is_not_translated(
        redis_url: str, fake_slack: FakeSlack, webhook: WebhookReceiver, translator: FakeTranslation) -> None:
    section = libre(translator, agent_languages={"Lucia": "es"})
    async with running_bridge(redis_url, desk(fake_slack, webhook, section), env={**slack_env(fake_slack), **ENV}) as b:
        root = await opened(b, fake_slack, "cust-zh", ZH)
        await b.wait_for(lambda: any(EN in t for t in thread_texts(fake_slack, root)), what="the translation")
        cid = await conversation_id(b, "cust-zh")
        lucia = await console_login(b, token=WIDGET_ENV["T_CONSOLE_TOKEN"], name="Lucia")
        (customer,) = [i for i in (await console_view(b, cid, lucia))["transcript"] if i["who"] == "customer"]
        assert customer["translation"]["text"] == "Hola, ¿cuándo?" and customer["translation"]["language"] == "es"

        # an English customer: nothing to translate into English (Lucia's Spanish only)
        before = len(translator.requests)
        await customer_writes(b, "cust-en", "Hello, where is my parcel? It was due on Monday.", "cust-en-1")
        await b.wait_for(lambda: b.store.for_address("api", "cust-en"), what="the English conversation")
        await b.wait_for(lambda: len(translator.requests) > before, what="the Spanish translation asked for")
        assert {body["target"] for _, _, body in translator.requests[before:]} == {"es"}
        en_id = await conversation_id(b, "cust-en")
        await b.wait_for(lambda: _translated(b, en_id, lucia), what="Lucia's Spanish translation in the console")
        ana = await console_login(b, token=WIDGET_ENV["T_CONSOLE_TOKEN"], name="Ana")
        (english,) = [i for i in (await console_view(b, en_id, ana))["transcript"] if i["who"] == "customer"]
        assert "translation" not in english  # Ana reads English: nothing to show her
        roots = await b.wait_for(lambda: [p for p in fake_slack.posts
                                          if not p.thread_ts and "where is my parcel" in str(p.blocks)],
                                 what="the English case's thread")
        # the case's agent-side posts keep their order: once this later message is in the
        # thread, a translation of the first one would be there before it
        await customer_writes(b, "cust-en", "Thanks, tracking number would help.", "cust-en-2")
        await b.wait_for(lambda: any("tracking number" in t for t in thread_texts(fake_slack, roots[0])),
                         what="the customer's second message in the thread")
        assert not any("Translation" in t for t in thread_texts(fake_slack, roots[0]))  # Slack reads English too


async def _translated(b: RunningBridge, conversation: str, cookie: dict[str, str]) -> bool:
    items = (await console_view(b, conversation, cookie))["transcript"]
    return any(i.get("translation", {}).get("text") == "[es] Hello, where is my parcel? It was due on Monday."
               for i in items)


async def test_the_email_ticket_thread_gets_the_translation(redis_url: str, dovecot: Dovecot,
                                                           smtp: RecordingHandler,  # noqa: F811
                                                           webhook: WebhookReceiver,
                                                           translator: FakeTranslation) -> None:
    config = {**email_config(dovecot, smtp, webhook), "translation": libre(translator)}
    async with running_bridge(redis_url, config, env=EMAIL_ENV) as b:
        await imap_ready(b)
        r = await b.post("/api/v1/messages", headers=EMAIL_AUTH, json={"customer_id": "shop-zh", "text": ZH})
        assert r.status == 202
        ticket, translation = await b.wait_for(lambda: mail_to(smtp, TEAM)[:2] if len(mail_to(smtp, TEAM)) > 1
                                               else None, what="the ticket and its translation")
        assert ZH in ticket.text() and EN not in ticket.text()
        assert translation.message["In-Reply-To"] == ticket.message["Message-ID"]
        assert "Machine translation (zh -> en) of the customer's message" in translation.text()
        assert EN in translation.text()
