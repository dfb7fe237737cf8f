"""Triage steps (language, urgency, topics) on messages in five languages, table-driven."""

from __future__ import annotations

import asyncio

import pytest

from bridge.errors import ConfigError
from bridge.model import Contact
from flows import language, topics, triage, urgency
from tests.test_flows_helpers import Chat, make_config

CASES = [
    # (text, language, urgent, reason fragment or topic)
    ("Our SMT line is down, the reels you sent are the wrong part", "en", True, "line down"),
    ("All 200 boards arrived dead on arrival, need an RMA", "en", True, "doa rma"),
    ("We just got a PCN: the regulator goes end of life in March", "en", True, "eol pcn"),
    ("The MCU is on allocation until Q3, we only have two weeks of stock", "en", True, "shortage"),
    ("The ICs look counterfeit, the marking rubs off", "en", True, "counterfeit"),
    ("Our ship date is at risk, the connectors are not delivered", "en", True, "ship date"),
    ("One charger started smoking on the bench", "en", True, "safety"),
    ("prodution line stoped, pls help", "en", True, "approximate"),
    ("the chips look counterfiet", "en", True, "counterfeit"),
    ("Could you send me a quote for 500 pcs?", "en", False, ""),
    ("not urgent, but please call me next week", "en", False, ""),
    ("no urgency here, just a quote for 200 pcs please", "en", False, ""),
    ("I recall ordering these from you last year", "en", False, ""),
    ("我们的生产线停了，急需这批料", "zh", True, "line down"),
    ("到货即坏，需要紧急退货", "zh", True, "doa rma"),
    ("怀疑收到的芯片是假货", "zh", True, "counterfeit"),
    ("充电器在测试时冒烟了", "zh", True, "safety"),
    ("our line is down 生产线停了 急!!", "zh", True, "line down"),
    ("请问订单55120发货了吗", "zh", False, ""),
    ("不急，下周有空聊一下", "zh", False, ""),
    ("Линия стоит, срочно нужны микросхемы", "ru", True, "line down"),
    ("Похоже на контрафакт: маркировка стирается", "ru", True, "counterfeit"),
    ("Груз застрял на таможне девять дней", "ru", True, "ship date"),
    ("линия стаит, срочна", "ru", True, "approximate"),
    ("Не горит, просто вопрос по счёту", "ru", False, ""),
    ("Huminto ang linya namin, mali ang piyesa", "tl", True, "line down"),
    ("Mukhang peke ang mga chip", "tl", True, "counterfeit"),
    ("down ang line namin, need parts asap po", "tl", True, "line down"),
    ("Salamat po sa tulong kahapon!", "tl", False, ""),
    ("Talian pengeluaran kami berhenti, komponen salah", "ms", True, "line down"),
    ("Semua unit rosak semasa sampai, perlukan RMA", "ms", True, "doa rma"),
    ("Cip ini nampak palsu", "ms", True, "counterfeit"),
    ("pengeluaran terhenti sbb komponen tak sampai, segra", "ms", True, "line down"),
    ("Terima kasih atas bantuan semalam!", "ms", False, ""),
    # words of a concept in any order (combos), not one fixed phrase
    ("The assembly area has been idle all morning, waiting for your cores", "en", True, 'line down: "assembly + idle"'),
    ("Half of the drivers were dead out of the box", "en", True, "doa rma"),
    ("Parcel returned to sender and our build starts Monday", "en", True, "ship date"),
    ("The battery swelled and started hissing while charging", "en", True, "safety"),
    ("The production planning meeting is on Monday, can you join?", "en", False, ""),
    ("I need a copy of my invoice for last month's order", "en", False, ""),
    ("车间等料已经停了半天", "zh", True, "line down"),
    ("一半开箱就不亮", "zh", True, "doa rma"),
    ("конвейер простаивает, ждём ваши платы", "ru", True, "line down"),
    ("Поставщик пишет, что микросхему снимают с производства", "ru", True, "eol pcn"),
    ("Kalahati ng mga module ay hindi umiilaw", "tl", True, "doa rma"),
    ("Ilang araw bago dumating ang delivery sa Davao?", "tl", False, ""),
    ("Talian reflow terbiar sejak pagi", "ms", True, "line down"),
]


def steps(config=None):  # type: ignore[no-untyped-def]
    config = config or make_config()
    return config, [language.build(config), urgency.build(config), topics.build(config)]


@pytest.mark.parametrize(("text", "lang", "urgent", "reason"), CASES)
async def test_triage_table(text: str, lang: str, urgent: bool, reason: str) -> None:
    config, built = steps()
    chat = Chat(config, built)
    turn = await chat.say(text)
    conv = turn.conversation
    assert conv.language == lang
    assert conv.urgency == ("urgent" if urgent else "routine"), conv.urgency_reason
    assert reason in conv.urgency_reason
    assert turn.notes.get("urgent_new", False) is urgent


TOPIC_CASES = [
    ("Where is my order 48213?", "order_status", "orders"),
    ("The invoice shows the wrong company name", "billing", "billing"),
    ("发票抬头写错了", "billing", "billing"),
    ("Вся партия брак, платы нерабочие", "quality", "quality"),
    ("May reklamo ako, hindi katanggap-tanggap ang kabayaran", "dispute", "default"),
    ("Adakah versi baharu serasi dengan tapak lama?", "technical", "default"),
    ("Hello", "general", "default"),
]


@pytest.mark.parametrize(("text", "topic", "queue"), TOPIC_CASES)
async def test_topic_chooses_the_queue(text: str, topic: str, queue: str) -> None:
    config, built = steps(make_config(
        {"topics": {"queues": {"order_status": "orders"}}},
        queues={"default": {"email": "support@example.com"},
                "billing": {"email": "billing@example.com", "topics": ["billing"]},
                "quality": {"email": "quality@example.com", "topics": ["quality"]},
                "orders": {"email": "orders@example.com"}}))
    turn = await Chat(config, built).say(text)
    assert turn.conversation.topic == topic
    assert turn.notes["queue"] == queue
    # a dispute is proposed to the agents, not started on the bot's word
    assert not turn.conversation.tags
    proposed = [m for m in turn.outbound if m.name == "dispute_proposed"]
    assert bool(proposed) is (topic == "dispute")


async def test_language_is_remembered_per_contact_and_short_messages_keep_it() -> None:
    config, built = steps()
    chat = Chat(config, built, contact=Contact(id="c1", language=""))
    turn = await chat.say("Nasaan na ang order ko? Dapat naipadala na last week.")
    assert turn.conversation.language == "tl"
    assert chat.contact.language == "tl" and turn.contact_changed
    turn = await chat.say("ok")
    assert turn.conversation.language == "tl"
    assert not turn.contact_changed
    turn = await chat.say("Где мой заказ? Он должен был прийти вчера.")
    assert turn.conversation.language == "ru" and chat.contact.language == "ru"


async def test_unknown_language_falls_back_to_the_platform_hint_then_default() -> None:
    config, built = steps()
    chat = Chat(config, built, contact=Contact(id="c1"))
    from bridge.model import Message, Sender
    turn = await chat.run(Message(kind="customer", channel="api", address="a", text="12345",
                                  sender=Sender(id="u", language="ms-MY")))
    assert turn.conversation.language == "ms"
    chat2 = Chat(config, built, contact=Contact(id="c2"))
    assert (await chat2.say("ok")).conversation.language == "en"


async def test_vip_repeats_and_channel_make_a_case_urgent_with_the_reason() -> None:
    config, built = steps(make_config({"urgency": {"urgent_channels": ["hotline"], "repeat_count": 3,
                                                   "repeat_window_s": 300}}))
    vip = Chat(config, built, contact=Contact(id="c1", tier="VIP"))
    turn = await vip.say("Could you send me a quote for 500 pcs?")
    assert turn.conversation.urgency == "urgent"
    assert "VIP customer" in turn.conversation.urgency_reason

    chat = Chat(config, built)
    for _ in range(2):
        assert (await chat.say("hello? anyone there")).conversation.urgency == "routine"
        chat.clock.advance(minutes=1)
    turn = await chat.say("hello? anyone there")
    assert turn.conversation.urgency == "urgent"
    assert "3 messages within 5 min" in turn.conversation.urgency_reason

    slow = Chat(config, built, address="other")
    for _ in range(3):
        turn = await slow.say("a question about pricing")
        slow.clock.advance(minutes=4)
    assert turn.conversation.urgency == "routine"

    hotline = Chat(config, built, channel="hotline")
    turn = await hotline.say("Hi, a question about a quote")
    assert turn.conversation.urgency_reason == "channel hotline"


async def test_auto_replies_are_not_triaged() -> None:
    config, built = steps()
    turn = await Chat(config, built).say("Out of office: urgent matters call +65 1234", auto=True)
    assert turn.conversation.urgency == "routine"
    assert turn.conversation.language == ""


async def test_configured_phrases_and_keywords_extend_the_builtins() -> None:
    config, built = steps(make_config({"urgency": {"phrases": {"en": {"line_down": ["reflow oven dead"]}}}},
                                      triage={"urgent_keywords": {"en": ["recall notice"]}}))
    chat = Chat(config, built)
    assert (await chat.say("our reflow oven dead again")).conversation.urgency == "urgent"
    chat2 = Chat(config, built, address="x")
    turn = await chat2.say("we got a recall notice from our customer")
    assert "keyword" in turn.conversation.urgency_reason


def test_bad_step_config_names_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        urgency.build(make_config({"urgency": {"repeat_count": 1}}))
    assert "flows.urgency.repeat_count" in str(err.value)
    with pytest.raises(ConfigError) as err:
        topics.build(make_config({"topics": {"queues": {"billing": "nope"}}}))
    assert "flows.topics.queues.billing" in str(err.value)
    with pytest.raises(ConfigError) as err:
        language.build(make_config({"language": {"languages": ["en", "xx"]}}))
    assert "flows.language.languages" in str(err.value)
    with pytest.raises(ConfigError) as err:
        language.build(make_config({"language": {"colour": "blue"}}))
    assert "flows.language.colour: unknown key" in str(err.value)


async def test_a_long_message_is_read_off_the_event_loop_with_the_same_verdict() -> None:
    """Reading costs milliseconds: a long mail read on the loop would hold every other
    conversation. A ticker task counts the loop's turns while each message is read."""
    config = make_config()
    step = triage.build(config)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    running = asyncio.create_task(ticker())
    short = "Our SMT line is down, the reels you sent are the wrong part"
    long = short + ". " + "We checked every feeder twice and the labels match the order. " * 10
    assert len(short) <= triage.OFF_LOOP_CHARS < len(long)
    try:
        await Chat(config, [step]).say("hello")  # the model is loaded (the loop runs meanwhile)
        for text, read_off_the_loop in ((short, False), (long, True)):
            before = ticks
            conversation = (await Chat(config, [step]).say(text)).conversation
            assert (ticks > before) is read_off_the_loop, text
            assert (conversation.urgency, conversation.language) == ("urgent", "en")
            assert "line down" in conversation.urgency_reason
    finally:
        running.cancel()
