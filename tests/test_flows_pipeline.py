"""The default triage step and routing with the support flows around them (no Redis)."""

from __future__ import annotations

import datetime as dt

from bridge.model import Contact
from flows import hours, kb, routing, sla, triage
from tests.test_flows_helpers import FAQ, Chat, Clock, events, make_config, replies

QUEUES = {"default": {"email": "support@example.com"},
          "billing": {"email": "billing@example.com", "topics": ["billing"]},
          "orders": {"email": "orders@example.com"}}


def pipeline(clock: Clock | None = None, **flows: object) -> Chat:
    config = make_config({"triage": {"multilingual": True}, "kb": {"path": str(FAQ)},
                          "topics": {"queues": {"order_status": "orders"}}, **flows},
                         clock=clock, queues=QUEUES, channels=("api", "email"),
                         agents={"channels": ["slack"], "urgent_mention": "@here"})
    return Chat(config, [triage.build(config), kb.build(config), hours.build(config), routing.build(config),
                         sla.build(config)], contact=Contact(id="c1"))


async def test_default_triage_detects_language_urgency_and_topic() -> None:
    c = pipeline()
    turn = await c.say("Линия стоит, срочно нужны микросхемы")
    conv = turn.conversation
    assert (conv.language, conv.urgency) == ("ru", "urgent")
    assert conv.urgency_reason.startswith("line down")
    assert replies(turn)[0].text.startswith("Мы получили ваше срочное сообщение")
    (escalation,) = events(turn, "escalation")
    assert escalation.data["mention"] == "@here"


async def test_routine_case_goes_to_the_topics_queue_with_an_ack_in_language() -> None:
    c = pipeline()
    turn = await c.say("Nasaan na ang order ko 48213? Dapat naipadala na last week.")
    assert turn.conversation.queue == "orders"  # flows.topics.queues, not only queues.*.topics
    assert replies(turn)[0].text.startswith("Salamat sa iyong mensahe.")
    ((queue, case),) = turn.queued
    assert queue == "orders" and case.address == "orders@example.com"


async def test_after_a_bot_answer_the_next_message_is_filed_for_a_person() -> None:
    c = pipeline()
    turn = await c.say("What payment methods do you accept?")
    assert turn.stopped and turn.queued == []
    turn = await c.say("agent please")
    assert [q for q, _ in turn.queued] == ["billing"]
    assert events(turn, "new_conversation")
    turn = await c.say("hello?")
    assert turn.queued == [] and events(turn, "customer_message")


async def test_urgent_with_a_faq_match_escalates_with_the_suggestion() -> None:
    turn = await pipeline().say("URGENT our line is down - what is your return policy?")
    (escalation,) = events(turn, "escalation")
    assert escalation.data["kb_suggestion"]["id"] == "return_policy"
    assert replies(turn)[0].text.startswith("We have received your urgent message")


async def test_urgent_out_of_hours_one_honest_reply_and_a_page() -> None:
    saturday_night = int(dt.datetime(2026, 11, 21, 3, 0, tzinfo=dt.UTC).timestamp() * 1000)
    c = pipeline(Clock(saturday_night), hours={"teams": {"support": {"timezone": "UTC"}}})
    turn = await c.say("Our SMT line is down, the reels are the wrong part")
    assert [r.text for r in replies(turn)] == [
        "Our office is closed right now, but your urgent message has been sent to the engineer on call."]
    assert [e.name for e in events(turn)] == ["page", "escalation"]
    assert events(turn, "page")[0].text.startswith("@here urgent case outside support hours")


def test_multilingual_triage_is_the_default_and_keywords_only_an_opt_out() -> None:
    assert isinstance(triage.build(make_config()), triage.Triage)
    assert isinstance(triage.build(make_config({"triage": {"multilingual": False}})), triage.KeywordTriage)


async def test_templates_in_config_override_the_built_in_texts() -> None:
    config = make_config({"kb": {"path": str(FAQ)}},
                         replies={"kb_answer": {"en": "{answer} (bot) {handoff}"},
                                  "kb_handoff_button": {"en": "Tap below for a human."}})
    c = Chat(config, [kb.build(config)])
    turn = await c.say("What payment methods do you accept?")
    assert replies(turn)[0].text.endswith("(bot) Tap below for a human.")
    c2 = Chat(config, [kb.build(config)], address="other")
    c2.conversation = None
    turn = await c2.say("请问支持哪些付款方式？")
    assert replies(turn)[0].text.startswith("We accept")  # no language step: the default language
