"""Business hours per team, with a controllable clock."""

from __future__ import annotations

import datetime as dt

import pytest

from bridge.errors import ConfigError
from bridge.model import Contact
from flows import hours, language, topics, urgency
from flows.hours import Schedule, TeamHours
from tests.test_flows_helpers import Chat, Clock, events, make_config, replies

SG = dt.timezone(dt.timedelta(hours=8))


def at(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    """Milliseconds of a Singapore wall-clock time."""
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=SG).timestamp() * 1000)


TEAMS = {
    "default_team": "support",
    "teams": {
        "support": {"timezone": "Asia/Singapore", "holidays": ["2026-12-25"],
                    "week": {"mon": "09:00-18:00", "tue": "09:00-18:00", "wed": "09:00-18:00",
                             "thu": "09:00-18:00", "fri": "09:00-12:00,13:00-17:00"}},
        "billing": {"timezone": "Europe/Moscow", "week": {"mon": "10:00-16:00"}, "queues": ["billing"],
                    "oncall_mention": "@billing-oncall"},
    },
}


def chat(clock: Clock, **kwargs: object) -> Chat:
    config = make_config({"hours": TEAMS}, clock=clock, agents={"channels": ["slack"], "urgent_mention": "@oncall"},
                         queues={"default": {"email": "s@example.com"},
                                 "billing": {"email": "b@example.com", "topics": ["billing"]}})
    return Chat(config, [language.build(config), urgency.build(config), topics.build(config),
                         hours.build(config)], **kwargs)  # type: ignore[arg-type]


def test_schedule_open_and_next_opening() -> None:
    team = Schedule("support", TeamHours.model_validate(TEAMS["teams"]["support"]))  # type: ignore[index]
    assert team.is_open(at(2026, 11, 18, 9, 0))
    assert not team.is_open(at(2026, 11, 18, 18, 0))
    assert not team.is_open(at(2026, 11, 20, 12, 30))  # Friday lunch
    assert team.next_open(at(2026, 11, 20, 12, 30)) == dt.datetime(2026, 11, 20, 13, 0, tzinfo=SG)
    assert team.next_open(at(2026, 11, 20, 19, 0)) == dt.datetime(2026, 11, 23, 9, 0, tzinfo=SG)
    assert team.next_open(at(2026, 11, 18, 7, 0)) == dt.datetime(2026, 11, 18, 9, 0, tzinfo=SG)
    # Christmas is a Friday: closed all day, open again Monday
    assert not team.is_open(at(2026, 12, 25, 10, 0))
    assert team.next_open(at(2026, 12, 24, 20, 0)) == dt.datetime(2026, 12, 28, 9, 0, tzinfo=SG)


async def test_inside_hours_nothing_is_said() -> None:
    turn = await chat(Clock(at(2026, 11, 18, 10, 0))).say("Could someone call me about our forecast?")
    assert replies(turn) == [] and events(turn) == []


async def test_outside_hours_the_customer_is_told_once_when_a_person_answers() -> None:
    clock = Clock(at(2026, 11, 20, 19, 30))  # Friday evening
    c = chat(clock)
    turn = await c.say("Could someone call me about our forecast?")
    assert [r.text for r in replies(turn)] == [
        "Our team is away right now. A person will answer from 2026-11-23 09:00 (Asia/Singapore)."]
    clock.advance(hours=2)
    turn = await c.say("also the datasheet please")
    assert replies(turn) == []  # already told for this closed period
    clock.now_ms = at(2026, 11, 23, 18, 30)  # Monday evening: a new closed period
    turn = await c.say("any news?")
    assert "2026-11-24 09:00" in replies(turn)[0].text


async def test_reply_in_the_customers_language_and_team_by_queue() -> None:
    clock = Clock(at(2026, 11, 18, 20, 0))
    turn = await chat(clock).say("发票抬头写错了，请修改")  # billing queue: Moscow team, Mondays only
    assert turn.conversation.language == "zh"
    assert replies(turn)[0].text == ("我们的团队目前不在工作时间。"
                                     "工作人员将于 2026-11-23 10:00（Europe/Moscow）起回复您。")


async def test_urgent_outside_hours_pages_the_on_call_mention() -> None:
    clock = Clock(at(2026, 11, 21, 3, 0))  # Saturday night
    c = chat(clock, contact=Contact(id="c1"))
    turn = await c.say("Our SMT line is down, the reels are the wrong part")
    (page,) = events(turn, "page")
    assert page.text.startswith("@oncall urgent case outside support hours: line down")
    assert page.data["mention"] == "@oncall" and page.data["team"] == "support"
    assert replies(turn)[0].text.startswith("Our office is closed right now, but your urgent message")
    clock.advance(minutes=5)
    assert events(await c.say("please hurry"), "page") == []  # paged once per closed period


def test_bad_hours_config_names_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        hours.build(make_config({"hours": {"teams": {"support": {"timezone": "Mars/Olympus"}}}}))
    assert "flows.hours.teams.support.timezone" in str(err.value)
    with pytest.raises(ConfigError) as err:
        hours.build(make_config({"hours": {"teams": {"support": {"week": {"mon": "18:00-09:00"}}}}}))
    assert "flows.hours.teams.support.week" in str(err.value)
    with pytest.raises(ConfigError) as err:
        hours.build(make_config({"hours": {"default_team": "x"}}))
    assert "flows.hours.default_team" in str(err.value)


def test_open_time_skips_nights_weekends_lunch_and_holidays() -> None:
    support = Schedule("support", TeamHours.model_validate(TEAMS["teams"]["support"]))
    hour = 3_600_000
    # Friday 16:00 in Singapore, 2 hours of work: 1 h on Friday (closes 17:00), 1 h on Monday
    assert support.add_open_time(at(2026, 11, 20, 16), 2 * hour) == at(2026, 11, 23, 10)
    # Friday 11:30, 1 hour: 30 min before lunch, 30 min after
    assert support.add_open_time(at(2026, 11, 20, 11, 30), hour) == at(2026, 11, 20, 13, 30)
    # Christmas Eve (a Thursday) 17:30, 1 hour: 30 min that evening; Christmas Day is a
    # holiday, then the weekend; 30 min on Monday
    assert support.add_open_time(at(2026, 12, 24, 17, 30), hour) == at(2026, 12, 28, 9, 30)
    # an hour exactly to closing time is closing time, not the next morning
    assert support.add_open_time(at(2026, 11, 18, 17), hour) == at(2026, 11, 18, 18)


def test_open_time_counts_real_hours_across_a_change_of_clocks() -> None:
    # Berlin falls back on Sunday 2026-10-25 at 03:00: that day has 25 hours
    berlin = Schedule("eu", TeamHours(timezone="Europe/Berlin", week={"sun": "00:00-24:00"}))
    midnight = int(dt.datetime(2026, 10, 25, tzinfo=berlin.zone).timestamp() * 1000)
    due = berlin.add_open_time(midnight, 24 * 3_600_000)
    assert dt.datetime.fromtimestamp(due / 1000, berlin.zone).strftime("%a %H:%M") == "Sun 23:00"
    never = Schedule("none", TeamHours(week={}))
    assert never.add_open_time(midnight, 60_000) == midnight + 60_000  # no hours at all: the calendar
