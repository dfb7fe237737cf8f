"""TelegramAdapter.send() with python-telegram-bot against the fake_telegram Bot API over real HTTP."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from adapters.telegram.adapter import TelegramAdapter
from bridge.errors import IntegrationBroken, PermanentError, TransientError
from bridge.model import Attachment, Button, Message, Sender
from tests.fakes.telegram_api import TOKEN, FakeTelegram, site_port
from tests.telegram_poller import make_config, make_context
from tests.test_telegram_translate import HOSTILE

CHAT = "55501"



async def _adapter(fake_telegram: FakeTelegram,
                   redis: aioredis.Redis, token: str = TOKEN, **config: Any) -> TelegramAdapter:
    ctx, _ = make_context(redis)
    adapter = TelegramAdapter(make_config(fake_telegram.base_url, fake_telegram.base_file_url, token, **config), ctx)
    return adapter


@pytest.fixture
async def adapter(fake_telegram: FakeTelegram, redis: aioredis.Redis) -> AsyncIterator[TelegramAdapter]:
    """A started adapter in webhook mode with set_webhook off: sends only, no poller."""
    adapter = await _adapter(fake_telegram, redis, mode="webhook", webhook_secret="s3cret", set_webhook=False,
                             rate_per_address_per_s=1000.0)  # pacing has its own test
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()


def reply(text: str = "", **fields: Any) -> Message:
    return Message(kind="reply", channel="telegram", address=fields.pop("address", CHAT), text=text, **fields)


@pytest.mark.parametrize("text", HOSTILE)
async def test_hostile_strings_render_literally(fake_telegram: FakeTelegram,
                                                adapter: TelegramAdapter, text: str) -> None:
    delivered = await adapter.send(reply(text))
    assert fake_telegram.texts(CHAT) == [text]
    assert "parse_mode" not in fake_telegram.requests["sendMessage"][0].params
    assert delivered.platform_id == str(fake_telegram.sent[0]["message_id"])


async def test_long_message_arrives_in_parts_on_safe_boundaries(fake_telegram: FakeTelegram,
                                                                adapter: TelegramAdapter) -> None:
    paragraphs = [f"Paragraph {i}: " + "details of the shipment " * 60 for i in range(8)]  # ~1.4k chars each
    text = "\n\n".join(p.strip() for p in paragraphs)
    await adapter.send(reply(text))
    parts = fake_telegram.texts(CHAT)
    assert len(parts) == 4  # two ~1.45k-char paragraphs fit in one part, three do not
    assert all(len(p) <= 4096 for p in parts)
    assert "\n\n".join(parts) == text
    assert all(p.startswith("Paragraph ") for p in parts)


async def test_agent_reply_shows_the_agents_name(fake_telegram: FakeTelegram, adapter: TelegramAdapter) -> None:
    await adapter.send(reply("Your order ships today.", sender=Sender(id="U1", name="Anna", is_agent=True)))
    assert fake_telegram.texts(CHAT) == ["Anna:\nYour order ships today."]


@pytest.mark.parametrize("text", ["Thanks for waiting. " * 300, "Thanks for waiting.\n\n" + "x" * 5000])
async def test_a_long_reply_never_sends_the_agents_name_alone(fake_telegram: FakeTelegram,
                                                              adapter: TelegramAdapter, text: str) -> None:
    await adapter.send(reply(text, sender=Sender(id="U1", name="Alice", is_agent=True)))
    parts = fake_telegram.texts(CHAT)
    assert len(parts) >= 2 and all(len(p) <= 4096 for p in parts)
    assert parts[0].startswith("Alice:\nThanks for waiting.") and all("Alice:" not in p for p in parts[1:])
    assert "".join("".join(parts).split()) == "".join(("Alice:" + text).split())  # all of it, cut at whitespace


async def test_the_parts_of_one_long_message_keep_the_per_chat_pace(fake_telegram: FakeTelegram,
                                                                     redis: aioredis.Redis) -> None:
    adapter = await _adapter(fake_telegram, redis, mode="webhook", webhook_secret="s3cret", set_webhook=False,
                             rate_per_address_per_s=5.0)
    await adapter.start()
    try:
        await adapter.send(reply("\n\n".join(f"part {i} " + "z" * 4000 for i in range(3))))
    finally:
        await adapter.stop()
    calls = fake_telegram.requests["sendMessage"]
    assert [c.params["text"][:6] for c in calls] == ["part 0", "part 1", "part 2"]
    assert calls[2].at_s - calls[0].at_s >= 0.3  # 5 per second: 0.4 s from first to third (margin for transit)


async def test_buttons_become_an_inline_keyboard(fake_telegram: FakeTelegram, adapter: TelegramAdapter) -> None:
    buttons = [Button(label=str(i), value=f"survey:{i}") for i in range(1, 6)]
    await adapter.send(reply("How did we do?", buttons=buttons))
    markup = fake_telegram.sent[0]["reply_markup"]
    assert [[b["text"] for b in row] for row in markup["inline_keyboard"]] == [["1", "2", "3", "4", "5"]]
    assert [b["callback_data"] for b in markup["inline_keyboard"][0]] == [f"survey:{i}" for i in range(1, 6)]
    assert fake_telegram.texts(CHAT) == ["How did we do?"]


async def test_buttons_telegram_cannot_show_fall_back_to_text(fake_telegram: FakeTelegram,
                                                              adapter: TelegramAdapter) -> None:
    buttons = [Button(label="Yes, close my case", value="close:" + "x" * 80), Button(label="No", value="keep")]
    await adapter.send(reply("Can we close this case?", buttons=buttons))
    assert fake_telegram.texts(CHAT) == ["Can we close this case?\n\n1. Yes, close my case\n2. No"]
    assert "reply_markup" not in fake_telegram.sent[0]


async def test_files_are_uploaded_never_passed_as_url(fake_telegram: FakeTelegram, adapter: TelegramAdapter) -> None:
    pdf = b"%PDF-1.4 fake_telegram invoice"

    async def serve(_request: web.Request) -> web.Response:
        return web.Response(body=pdf, content_type="application/pdf")

    app = web.Application()
    app.router.add_get("/invoice.pdf", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site_port(site)
    try:
        png = b"\x89PNG\r\n\x1a\nfake"
        message = reply("Here are your documents.", attachments=[
            Attachment(name="invoice.pdf", mime="application/pdf", url=f"http://127.0.0.1:{port}/invoice.pdf"),
            Attachment(name="label.png", mime="image/png",
                       url="data:image/png;base64," + base64.b64encode(png).decode()),
        ])
        await adapter.send(message)
    finally:
        await runner.cleanup()
    assert fake_telegram.texts(CHAT) == ["Here are your documents.", "[document: invoice.pdf]", "[photo: label.png]"]
    files = [s for s in fake_telegram.sent if "kind" in s]
    assert [(f["kind"], f["filename"], f["content"], f["uploaded"]) for f in files] == [
        ("document", "invoice.pdf", pdf, True), ("photo", "label.png", png, True)]


async def test_500_and_timeouts_are_transient(fake_telegram: FakeTelegram, adapter: TelegramAdapter) -> None:
    fake_telegram.fail("sendMessage", 500)
    with pytest.raises(TransientError) as caught:
        await adapter.send(reply("hello"))
    assert caught.value.retry_after_s is None
    fake_telegram.slow("sendMessage", 5.0)  # the adapter's read timeout is 2 s
    with pytest.raises(TransientError, match="timed out"):
        await adapter.send(reply("hello"))


async def test_other_400_is_permanent_but_not_unreachable(fake_telegram: FakeTelegram,
                                                          adapter: TelegramAdapter) -> None:
    fake_telegram.fail("sendMessage", 400, "Bad Request: message to reply not found")
    with pytest.raises(PermanentError) as caught:
        await adapter.send(reply("hello"))
    assert not caught.value.unreachable
    fake_telegram.fail("sendMessage", 400, "Bad Request: chat not found")
    with pytest.raises(PermanentError) as caught:
        await adapter.send(reply("hello"))
    assert caught.value.unreachable


async def test_a_retry_resumes_after_the_parts_already_delivered(fake_telegram: FakeTelegram,
                                                                 adapter: TelegramAdapter) -> None:
    text = "\n\n".join(f"Part {i} " + "y" * 3000 for i in range(3))
    message = reply(text)
    fake_telegram.answer_normally("sendMessage")  # part 1 goes out,
    fake_telegram.fail("sendMessage", 500)  # part 2 fails: the retry must not send part 1 again
    with pytest.raises(TransientError):
        await adapter.send(message)
    assert [p[:6] for p in fake_telegram.texts(CHAT)] == ["Part 0"]
    await adapter.send(message)
    assert [p[:6] for p in fake_telegram.texts(CHAT)] == ["Part 0", "Part 1", "Part 2"]


async def test_check_reports_the_bot_or_a_rejected_token(fake_telegram: FakeTelegram, redis: aioredis.Redis) -> None:
    good = await _adapter(fake_telegram, redis)
    assert await good.check() == ("ok", "@support_bot")
    bad = await _adapter(fake_telegram, redis, token="123456789:AAWrongTokenxxxxxxxxxxxxxxxxxx")
    state, detail = await bad.check()
    assert state == "broken" and "channels.telegram.token" in detail
    assert "AAWrong" not in detail


async def test_rejected_token_on_send_breaks_the_integration(fake_telegram: FakeTelegram,
                                                             redis: aioredis.Redis) -> None:
    bad = await _adapter(fake_telegram, redis, token="123456789:AAWrongTokenxxxxxxxxxxxxxxxxxx",
                         mode="webhook", webhook_secret="s", set_webhook=False)
    await bad.start()
    try:
        with pytest.raises(IntegrationBroken):
            await bad.send(reply("hello"))
    finally:
        await bad.stop()


async def test_inbound_files_are_fetched_on_demand(fake_telegram: FakeTelegram, adapter: TelegramAdapter) -> None:
    fake_telegram.add_file("BQACAgIAAxkBAAIBdoc", "documents/file_3.pdf", b"%PDF invoice bytes")
    content = await adapter.fetch_attachment(Attachment(name="发票.pdf", ref="BQACAgIAAxkBAAIBdoc"))
    assert content == b"%PDF invoice bytes"
    assert [r.params["file_id"] for r in fake_telegram.requests["getFile"]] == ["BQACAgIAAxkBAAIBdoc"]


async def test_a_group_upgraded_to_a_supergroup_still_gets_the_reply(fake_telegram: FakeTelegram,
                                                                    adapter: TelegramAdapter) -> None:
    fake_telegram.migrate(-4001, -1004001)
    await adapter.send(reply("Your RMA number is 7781.", address="-4001"))
    assert fake_telegram.texts(-1004001) == ["Your RMA number is 7781."]


def test_pacing_defaults_follow_telegrams_limits() -> None:
    """The dispatcher paces with these unless rate_per_s / rate_per_address_per_s are set."""
    assert TelegramAdapter.default_rate_per_s == 30
    assert TelegramAdapter.default_rate_per_address_per_s == 1


async def test_the_token_never_reaches_the_logs(fake_telegram: FakeTelegram, adapter: TelegramAdapter,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await adapter.send(reply("hello"))
    fake_telegram.block(CHAT)
    with pytest.raises(PermanentError):
        await adapter.send(reply("hello"))
    assert caplog.records  # the client did log
    secret = TOKEN.split(":", 1)[1]
    assert not [r for r in caplog.records if secret in r.getMessage()]


@pytest.mark.parametrize("parse_mode", ["MarkdownV2", "HTML"])
async def test_the_fake_bounces_what_telegram_bounces(fake_telegram: FakeTelegram, adapter: TelegramAdapter,
                                                      parse_mode: str) -> None:
    """Why plain text: the same hostile strings with a parse mode fail as on Telegram."""
    from telegram.error import BadRequest

    failed = 0
    for text in HOSTILE:
        try:
            await adapter.bot.send_message(chat_id=CHAT, text=text, parse_mode=parse_mode)
        except BadRequest as exc:
            assert "can't parse entities" in exc.message.lower()
            failed += 1
    assert failed >= 2
