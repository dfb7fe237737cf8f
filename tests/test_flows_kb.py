"""Knowledge-base answers: confident matches answered in the customer's language."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import ConfigError
from flows import kb, language, topics, urgency
from tests.test_flows_helpers import FAQ, Chat, make_config, replies


def chat(channel: str = "api", **kb_settings: object) -> Chat:
    config = make_config({"kb": {"path": str(FAQ), **kb_settings}})
    built = [language.build(config), urgency.build(config), topics.build(config), kb.build(config)]
    return Chat(config, built, channel=channel)


@pytest.mark.parametrize(("text", "faq_id", "answer_start"), [
    ("What payment methods do you accept?", "payment_methods", "We accept credit cards"),
    ("请问最小起订量是多少？", "moq", "大多数物料没有起订量"),
    ("Какой гарантийный срок на блоки питания?", "warranty", "На все компоненты"),
    ("Gaano katagal ang shipping papuntang Cebu?", "shipping_time", "Ang mga order na may stock"),
    ("Saya mahu batalkan pesanan saya", "order_change", "Pesanan boleh diubah"),
    ("what are your bussiness hours?", "business_hours", "Our support team"),
])
async def test_confident_match_is_answered_in_the_customers_language(text: str, faq_id: str,
                                                                     answer_start: str) -> None:
    c = chat()
    turn = await c.say(text)
    assert turn.stopped
    (reply,) = replies(turn)
    assert reply.text.startswith(answer_start)
    assert reply.data == {"kb": faq_id}
    assert [b.value for b in reply.buttons] == ["handoff"]  # a way to reach a person


async def test_channels_without_buttons_get_the_handoff_as_text() -> None:
    turn = await chat(channel="email").say("Do you offer free samples?")
    (reply,) = replies(turn)
    assert reply.buttons == []
    assert 'Write "agent" to reach a person.' in reply.text


async def test_asking_for_a_person_stops_the_bot_in_that_conversation() -> None:
    c = chat()
    await c.say("Do you offer free samples?")
    turn = await c.say("", button="handoff")
    assert turn.notes["handoff"] is True and replies(turn) == []  # the button under the answer
    c = chat()
    await c.say("Do you offer free samples?")
    turn = await c.say("agent please")
    assert turn.notes["handoff"] is True and not turn.stopped and replies(turn) == []
    turn = await c.say("What payment methods do you accept?")
    assert replies(turn) == [] and not turn.stopped
    turn = await chat().say("我要转人工")
    assert turn.notes["handoff"] is True


async def test_urgent_messages_are_never_answered_by_the_bot_alone() -> None:
    turn = await chat().say("URGENT our line is down - what is your return policy?")
    assert turn.conversation.urgency == "urgent"
    assert replies(turn) == [] and not turn.stopped
    assert turn.notes["kb"]["id"] == "return_policy"  # a suggestion for the agent


@pytest.mark.parametrize("text", [
    "I was charged twice for the same order, can you refund one of the payments?",
    "The invoice for order 3321 shows the wrong company name",
    "Hello",
    "Спасибо за быструю помощь вчера!",
])
async def test_unrelated_messages_are_left_to_people(text: str) -> None:
    turn = await chat().say(text)
    assert replies(turn) == [] and not turn.stopped


async def test_once_an_agent_answered_the_bot_keeps_quiet() -> None:
    c = chat()
    await c.say("I have a problem with my order")
    await c.agent("Hi, Bo here, looking at it")
    turn = await c.say("What payment methods do you accept?")
    assert replies(turn) == []


def test_faq_file_problems_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "faq.yaml"
    bad.write_text("- id: a\n  questions: {en: [x]}\n- id: a\n  questions: {en: [y]}\n  answer: {en: z}\n")
    with pytest.raises(ConfigError) as err:
        kb.build(make_config({"kb": {"path": str(bad)}}))
    text = str(err.value)
    assert "flows.kb.path" in text and "entry 0: answer" in text
    with pytest.raises(ConfigError) as err:
        kb.build(make_config({"kb": {"path": str(tmp_path / "missing.yaml")}}))
    assert "no such file" in str(err.value)
    with pytest.raises(ConfigError) as err:
        kb.build(make_config({"kb": {}}))
    assert "flows.kb.path: required key is missing" in str(err.value)
