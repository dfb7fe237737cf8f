"""Satisfaction surveys after resolution, with a controllable clock."""

from __future__ import annotations

import pytest

from bridge.flowstate import SurveyState, read_state
from flows import language, sla, survey, urgency
from flows.survey import parse_score
from tests.test_flows_helpers import Chat, Clock, events, make_config, replies


def chat(clock: Clock, channel: str = "telegram", **settings: object) -> Chat:
    config = make_config({"survey": {"delay_min": 30, **settings}}, clock=clock, channels=(channel,))
    return Chat(config, [survey.build(config), language.build(config), urgency.build(config), sla.build(config)],
                channel=channel)


async def resolved(clock: Clock, channel: str = "telegram", **settings: object) -> Chat:
    c = chat(clock, channel, **settings)
    await c.say("The invoice for my last order has the wrong address, please fix it")
    await c.agent("Fixed, new invoice attached")
    await c.command("resolve")
    return c


async def test_survey_is_asked_after_the_delay_with_buttons_and_a_good_score_is_recorded() -> None:
    clock = Clock()
    c = await resolved(clock)
    clock.advance(minutes=29)
    assert await c.fire_due() == []
    clock.advance(minutes=1)
    fired = await c.fire_due()
    (ask,) = replies(fired)
    assert ask.text == "Your case abc123-1 is closed. How did we do? 1 is poor, 5 is excellent."
    assert [(b.label, b.value) for b in ask.buttons] == [(str(n), f"survey:{n}") for n in range(1, 6)]
    clock.advance(minutes=3)
    turn = await c.say("survey:5")
    assert turn.stopped
    assert c.conversation.status == "resolved" and c.conversation.resolved_ms > 0  # type: ignore[union-attr]
    assert replies(turn)[0].text.startswith("Thank you for your rating!")
    (result,) = events(turn, "survey_result")
    assert result.text == "Satisfaction 5/5"
    turn = await c.say("Very fast, thank you Bo")
    assert c.conversation.status == "resolved"  # type: ignore[union-attr]
    assert read_state(c.conversation, "survey", SurveyState).comment == "Very fast, thank you Bo"  # type: ignore[arg-type]
    assert events(turn, "survey_result")[0].text == "Comment on satisfaction 5/5: Very fast, thank you Bo"
    assert turn.timers == []  # no SLA armed by a survey answer


async def test_email_gets_a_number_question_and_a_low_score_reopens() -> None:
    clock = Clock()
    c = await resolved(clock, channel="email")
    clock.advance(hours=1)
    (ask,) = replies(await c.fire_due())
    assert ask.buttons == []
    assert "Reply with a number from 1 (poor) to 5 (excellent)" in ask.text
    turn = await c.say("2 - took three days to get an answer")
    conv = c.conversation
    assert conv is not None and conv.status == "open" and "low_satisfaction" in conv.tags
    survey = read_state(conv, "survey", SurveyState)
    assert survey.score == 2 and survey.comment == "took three days to get an answer"
    assert events(turn, "survey_result")[0].text.startswith("Satisfaction 2/5 - case reopened")
    assert replies(turn)[0].text.startswith("We are sorry we let you down.")


async def test_flag_keeps_a_low_score_resolved() -> None:
    clock = Clock()
    c = await resolved(clock, low_action="flag")
    clock.advance(hours=1)
    await c.fire_due()
    turn = await c.say("1")
    assert c.conversation.status == "resolved" and "low_satisfaction" in c.conversation.tags  # type: ignore[union-attr]
    assert "case flagged" in events(turn, "survey_result")[0].text


async def test_a_reopened_case_is_not_surveyed_and_a_new_problem_is_not_a_score() -> None:
    clock = Clock()
    c = await resolved(clock)
    clock.advance(minutes=10)
    await c.say("Sorry, the new invoice still has the old address")  # reopens before the survey
    clock.advance(hours=1)
    assert replies(await c.fire_due()) == []
    await c.command("resolve")
    clock.advance(hours=1)
    assert len(replies(await c.fire_due())) == 1
    turn = await c.say("Actually I have another question about shipping")
    assert not turn.stopped and c.conversation.status == "open"  # type: ignore[union-attr]


async def test_auto_replies_do_not_answer_a_survey() -> None:
    clock = Clock()
    c = await resolved(clock, channel="email")
    clock.advance(hours=1)
    await c.fire_due()
    turn = await c.say("5 days out of office", auto=True)
    assert read_state(c.conversation, "survey", SurveyState).score is None  # type: ignore[arg-type]
    assert replies(turn) == []


@pytest.mark.parametrize(("text", "data", "expected"), [
    ("4", {}, (4, "")), ("4/5", {}, (4, "")), ("５", {}, (5, "")), ("3 из 5, долго", {}, (3, "долго")),
    ("", {"button": "survey:1"}, (1, "")), ("12345", {}, None), ("6", {}, None), ("2.5", {}, None),
    ("great", {}, None),
])
def test_parse_score(text: str, data: dict[str, str], expected: tuple[int, str] | None) -> None:
    assert parse_score(text, data) == expected
