"""Topics a support lead can trust: the model's confidences and the phrases of the message's
own language added up per topic, ``general`` only when nothing is confident, the topic set
from config, a dispute told in the customer's words proposed to the agents."""

from __future__ import annotations

import pytest

from flows import order_status, routing, triage
from flows.topics import TopicChooser, TopicSettings
from tests.test_flows_helpers import Chat, events, make_config, replies
from tests.test_flows_order_status import Shop, shop  # noqa: F401  (the fake shop fixture)


class Confidences:
    """A model that answers fixed topic confidences (the chooser's only use of a model)."""

    def __init__(self, **confidences: float) -> None:
        self.confidences = confidences

    def topic_probabilities(self, text: str) -> dict[str, float]:
        return dict(self.confidences)


def chooser(**settings: object) -> TopicChooser:
    return TopicChooser(TopicSettings.model_validate(settings))


def test_the_model_alone_decides_when_no_phrase_is_found() -> None:
    model = Confidences(quality=0.6, general=0.4)
    topic, score, why = chooser().choose("the thing from last week again", ["en"], model)
    assert (topic, why) == ("quality", "model 0.60")
    assert score == pytest.approx(0.6)


def test_general_only_when_nothing_is_confident() -> None:
    spread = Confidences(quality=0.25, shipping=0.25, supply=0.25, billing=0.25)
    topic, score, why = chooser().choose("hmm, about the thing", ["en"], spread)
    assert topic == "general" and score == 0.0 and why.startswith("none fits")
    # the same spread plus one phrase of the message's language is confident enough
    assert chooser().choose("about the invoice thing", ["en"], spread)[0] == "billing"
    # with no model (not trained yet), phrases alone; nothing found: general
    assert chooser().choose("please send the invoice again", ["en"], None)[0] == "billing"
    assert chooser().choose("hello again", ["en"], None)[0] == "general"


def test_phrases_and_model_add_up() -> None:
    # the model leans to shipping, the words say billing: both readers count
    model = Confidences(shipping=0.45, billing=0.35, general=0.2)
    topic, _, why = chooser().choose("the invoice for the last lot", ["en"], model)
    assert topic == "billing" and why == "model 0.35; phrases 1"
    # a model sure of its topic is not overruled by one phrase of another
    sure = Confidences(quality=0.9, billing=0.1)
    assert chooser().choose("the invoice says 500 but half of them are dead", ["en"], sure)[0] == "quality"
    # the weights are settings
    assert chooser(phrase_weight=0.0).choose("the invoice for the last lot", ["en"], model)[0] == "shipping"
    assert chooser(min_score=0.5).choose("hmm", ["en"], Confidences(quality=0.45, general=0.1))[0] == "general"


def test_only_the_message_languages_phrases_are_read() -> None:
    # "bayad" (paid) is a Tagalog billing word: not read in an English message
    assert chooser().choose("bayad", ["en"], None)[0] == "general"
    assert chooser().choose("bayad", ["tl"], None)[0] == "billing"


def test_the_topic_set_comes_from_config() -> None:
    model = Confidences(accounts=0.7, general=0.3)
    assert chooser().choose("I cannot log in", ["en"], model)[0] == "accounts"
    narrow = chooser(topics=["billing", "general"])
    assert narrow.choose("I cannot log in", ["en"], model)[0] == "general"
    extra = chooser(topics=["warranty", "general"], phrases={"en": {"warranty": ["warranty"]}})
    assert extra.choose("how long is the warranty?", ["en"], None)[0] == "warranty"


# What a customer writes, in each language, and the topic the definitions in flows/topics.py
# give it (none of these is in the shipped training set or the held-out sets).
TOPIC_TABLE = [
    ("I keep getting 'invalid password' on the customer portal even after a reset", "en", "accounts"),
    ("The charger you sold us started sparking and the casing melted, is it safe to keep using the rest?",
     "en", "quality"),
    ("We do not accept your decision on claim 7731 and will take this to our lawyer.", "en", "dispute"),
    ("密码重置以后还是登录不了客户门户", "zh", "accounts"),
    ("收到的电源有三个一通电就冒烟", "zh", "quality"),
    ("Не могу зайти в личный кабинет, пароль не подходит даже после сброса", "ru", "accounts"),
    ("Счёт выставлен дважды, верните, пожалуйста, лишнюю оплату", "ru", "billing"),
    ("Hindi ako makapag-login sa portal kahit na-reset ko na ang password", "tl", "accounts"),
    ("Umusok ang dalawang power supply pagkasaksak, sira ang buong batch", "tl", "quality"),
    ("Saya tak boleh log masuk portal walaupun dah reset kata laluan", "ms", "accounts"),
    ("Bila invois untuk pesanan bulan lepas akan dihantar? Akaun kami perlukan.", "ms", "billing"),
]


@pytest.mark.parametrize(("text", "lang", "topic"), TOPIC_TABLE)
async def test_topics_in_five_languages(text: str, lang: str, topic: str) -> None:
    config = make_config()
    turn = await Chat(config, [triage.build(config), routing.build(config)]).say(text)
    assert turn.conversation.language == lang
    assert turn.conversation.topic == topic, turn.notes.get("topic_reason")
    # a dispute in the customer's words is proposed to the agents, never started by the bot
    proposed = events(turn, "dispute_proposed")
    assert bool(proposed) is (topic == "dispute")
    assert "dispute" not in turn.conversation.tags


async def test_hello_do_you_ship_to_manila_is_answered_in_english() -> None:
    config = make_config()
    turn = await Chat(config, [triage.build(config), routing.build(config)]).say("hello, do you ship to Manila?")
    assert turn.conversation.language == "en"
    assert turn.conversation.topic == "shipping"
    (ack,) = replies(turn)
    assert ack.text.startswith("Thank you for your message. Our team will reply")


async def test_the_chinese_order_question_of_the_issue_looks_the_order_up(shop: Shop) -> None:  # noqa: F811
    shop.orders["99999"] = {"status": "shipped", "carrier": "SF", "tracking": "SF100", "eta": "2026-12-05"}
    config = make_config({"order_status": {"url": shop.url + "/orders/{order}?lang={language}", "allow_private": True,
                                           "headers": {"Authorization": "Bearer t0ken"}}})
    turn = await Chat(config, [triage.build(config), order_status.build(config)]).say("我的订单 99999 到哪了？")
    assert shop.requests == ["/orders/99999?lang=zh"]
    assert replies(turn)[0].text.startswith("订单 99999")
    assert turn.conversation.topic == "order_status"
