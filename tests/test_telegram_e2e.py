"""End to end, Telegram only: customers write to the (fake_telegram) bot, the whole bridge runs in
between (real Redis, engine, dispatcher, python-telegram-bot over real HTTP)."""

from __future__ import annotations

from typing import Any

from adapters.telegram.adapter import SECRET_HEADER
from tests.fakes.telegram_api import TOKEN, FakeTelegram
from tests.harness import running_bridge
from tests.test_telegram_receive import inbound, text_update

ENV = {"T_TELEGRAM_TOKEN": TOKEN}



def config(fake_telegram: FakeTelegram, **telegram: Any) -> dict[str, Any]:
    return {
        "channels": {"telegram": {"token": "${T_TELEGRAM_TOKEN}", "base_url": fake_telegram.base_url,
                                  "base_file_url": fake_telegram.base_file_url, "poll_timeout_s": 1,
                                  "read_timeout_s": 3, **telegram}},
        "triage": {"urgent_keywords": {"en": ["urgent", "production line stopped"]}},
    }


async def test_urgent_message_gets_an_instant_reply(redis_url: str, fake_telegram: FakeTelegram) -> None:
    async with running_bridge(redis_url, config(fake_telegram), env=ENV) as b:
        await fake_telegram.push_update(text_update(55501, "URGENT: production line stopped"))
        (reply,) = await b.wait_for(lambda: fake_telegram.texts(55501), what="the instant reply on Telegram")
        assert "urgent" in reply.lower() and "within minutes" in reply
        conversation = await b.store.for_address("telegram", "55501")
        assert conversation is not None and conversation.urgency == "urgent"
        assert "parse_mode" not in fake_telegram.requests["sendMessage"][0].params


async def test_routine_message_is_acknowledged(redis_url: str, fake_telegram: FakeTelegram) -> None:
    async with running_bridge(redis_url, config(fake_telegram), env=ENV) as b:
        await fake_telegram.push_update(text_update(55502, "Could you send me the invoice for May?"))
        (ack,) = await b.wait_for(lambda: fake_telegram.texts(55502), what="the acknowledgement on Telegram")
        assert ack.startswith("Thank you for your message.")
        conversation = await b.store.for_address("telegram", "55502")
        assert conversation is not None and conversation.urgency == "routine"


async def test_a_webhook_retry_is_one_message(redis_url: str, fake_telegram: FakeTelegram) -> None:
    """Telegram delivers a webhook update again when our 200 got lost: one message, one ack."""
    cfg = config(fake_telegram, mode="webhook", webhook_secret="${T_WEBHOOK_SECRET}", set_webhook=False)
    async with running_bridge(redis_url, cfg, env={**ENV, "T_WEBHOOK_SECRET": "hook-secret"}) as b:
        update = {"update_id": 42, **text_update(55503, "Where is my parcel?")}
        headers = {SECRET_HEADER: "hook-secret"}
        assert (await b.post("/telegram/webhook", json=update, headers=headers)).status == 200
        assert (await b.post("/telegram/webhook", json=update, headers=headers)).status == 200
        assert (await b.post("/telegram/webhook", json=update, headers={SECRET_HEADER: "guess"})).status == 403
        await b.wait_for(lambda: fake_telegram.texts(55503), what="the acknowledgement")
        second = {"update_id": 43, **text_update(55504, "Another customer")}
        assert (await b.post("/telegram/webhook", json=second, headers=headers)).status == 200
        await b.wait_for(lambda: fake_telegram.texts(55504), what="the second customer's acknowledgement")
        messages = [m for m in await inbound(b.redis) if m.kind == "customer"]
        assert sorted(m.dedupe_key for m in messages) == ["telegram:42", "telegram:43"]
        assert len(fake_telegram.texts(55503)) == 1


async def test_429_and_500_are_retried_and_delivered_once(redis_url: str, fake_telegram: FakeTelegram) -> None:
    fake_telegram.fail("sendMessage", 429, retry_after=1)
    fake_telegram.fail("sendMessage", 500)
    async with running_bridge(redis_url, config(fake_telegram), env=ENV) as b:
        await fake_telegram.push_update(text_update(55505, "URGENT: production line stopped"))
        await b.wait_for(lambda: fake_telegram.texts(55505), timeout_s=20, what="the reply after the retries")
        assert [r.status for r in fake_telegram.requests["sendMessage"]] == [429, 500, 200]
        assert len(fake_telegram.texts(55505)) == 1


async def test_a_blocked_bot_marks_the_conversation_unreachable(redis_url: str, fake_telegram: FakeTelegram) -> None:
    fake_telegram.block(55506)
    async with running_bridge(redis_url, config(fake_telegram), env=ENV) as b:
        await fake_telegram.push_update(text_update(55506, "URGENT: production line stopped"))

        async def unreachable() -> str:
            conversation = await b.store.for_address("telegram", "55506")
            return conversation.unreachable if conversation else ""

        reason = await b.wait_for(unreachable, what="the conversation marked unreachable")
        assert "blocked by the user" in reason
        assert [r.status for r in fake_telegram.requests["sendMessage"]] == [403]


async def test_start_without_a_language_is_greeted_in_the_desks_default_language(
        redis_url: str, fake_telegram: FakeTelegram) -> None:
    """``triage.default_language`` reaches the adapter through its typed context."""
    cfg = {**config(fake_telegram), "triage": {"default_language": "ru"}}
    start = {"message": {"message_id": 1, "from": {"id": 55509, "is_bot": False, "first_name": "Ana"},
                         "chat": {"id": 55509, "type": "private"}, "date": 1763900000, "text": "/start"}}
    async with running_bridge(redis_url, cfg, env=ENV) as b:
        await fake_telegram.push_update(start)
        (greeting,) = await b.wait_for(lambda: fake_telegram.texts(55509), what="the /start greeting")
        assert greeting.startswith("Здравствуйте!")
