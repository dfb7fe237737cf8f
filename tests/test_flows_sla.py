"""SLA timers with a controllable clock: warnings, breaches, and timers that no longer matter."""

from __future__ import annotations

import datetime as dt

import pytest
from prometheus_client import REGISTRY

from bridge.errors import ConfigError
from bridge.flowstate import SlaState, read_state
from flows import sla, urgency
from tests.test_flows_helpers import Chat, Clock, events, make_config

FLOWS = {"sla": {"targets": {"urgent": {"first_response_min": 10, "resolution_h": 2},
                             "routine": {"first_response_min": 240, "resolution_h": 48}},
                 "warn_fraction": 0.5}}


def chat(clock: Clock) -> Chat:
    config = make_config(FLOWS, clock=clock)
    return Chat(config, [urgency.build(config), sla.build(config)])


def counted(kind: str, level: str, urgency_name: str) -> float:
    return REGISTRY.get_sample_value("bridge_sla_events_total",
                                     {"kind": kind, "level": level, "urgency": urgency_name}) or 0.0


async def test_urgent_first_response_warning_then_breach_posted_and_counted() -> None:
    clock = Clock()
    c = chat(clock)
    before = counted("first_response", "breach", "urgent")
    turn = await c.say("URGENT: our production line is down")
    assert sorted((due - clock.now_ms) // 60_000 for due, _ in turn.timers) == [5, 10, 60, 120]
    clock.advance(minutes=4)
    assert await c.fire_due() == []
    clock.advance(minutes=1)
    (warned,) = events(await c.fire_due())
    assert warned.name == "sla_warning"
    assert warned.text == "SLA warning: urgent first response due in 5 min"
    clock.advance(minutes=7)
    (breached,) = events(await c.fire_due())
    assert breached.name == "sla_breach"
    assert breached.text == "SLA breach: urgent first response target missed by 2 min"
    assert breached.data["sla"]["kind"] == "first_response"
    assert counted("first_response", "breach", "urgent") == before + 1
    state = read_state(c.conversation, "sla", SlaState)  # type: ignore[arg-type]
    assert [(e.kind, e.level) for e in state.events] == [("first_response", "warning"),
                                                                  ("first_response", "breach")]


async def test_an_answer_in_time_and_a_resolution_silence_the_timers() -> None:
    clock = Clock()
    c = chat(clock)
    await c.say("Could you send the datasheet?")
    clock.advance(minutes=30)
    await c.agent("Here it is")
    clock.advance(hours=10)
    assert events(await c.fire_due()) == []  # first response met: no warning, no breach
    clock.advance(hours=14)
    (warned,) = events(await c.fire_due())  # resolution warning at 24 h of 48 h
    assert warned.text == "SLA warning: routine resolution due in 23 h 30 min"  # fired 30 min after it was due
    await c.command("resolve")
    clock.advance(days=3)
    assert events(await c.fire_due()) == []


async def test_turning_urgent_rearms_with_the_tighter_target_and_old_timers_are_ignored() -> None:
    clock = Clock()
    c = chat(clock)
    await c.say("a question about an invoice")
    clock.advance(minutes=1)
    turn = await c.say("now our line is down because of your parts!")
    assert read_state(c.conversation, "sla", SlaState).urgency == "urgent"  # type: ignore[arg-type]
    assert len(turn.timers) == 4
    clock.advance(hours=4)
    fired = await c.fire_due()
    texts = [e.text for e in events(fired)]
    assert texts == ["SLA warning: urgent first response due in 0 min",
                     "SLA breach: urgent first response target missed by 3 h 50 min",
                     "SLA warning: urgent resolution due in 0 min",
                     "SLA breach: urgent resolution target missed by 2 h"]  # routine timers: stale


def test_sla_config_needs_both_urgencies() -> None:
    with pytest.raises(ConfigError) as err:
        sla.build(make_config({"sla": {"targets": {"urgent": {"first_response_min": 5, "resolution_h": 1}}}}))
    assert "flows.sla.targets.routine" in str(err.value)
    with pytest.raises(ConfigError) as err:
        sla.build(make_config({"sla": {"warn_fraction": 1.5}}))
    assert "flows.sla.warn_fraction" in str(err.value)


def utc(day: int, hour: int, minute: int = 0) -> int:
    return int(dt.datetime(2026, 11, day, hour, minute, tzinfo=dt.UTC).timestamp() * 1000)


async def test_routine_clocks_run_only_in_business_hours_urgent_ones_always() -> None:
    clock = Clock(utc(20, 17))  # Friday 17:00 UTC; the team works Mon-Fri 09:00-18:00 UTC
    flows = {"sla": {"targets": {"urgent": {"first_response_min": 10, "resolution_h": 2},
                                 "routine": {"first_response_min": 120, "resolution_h": 48}},
                     "warn_fraction": 0.5, "business_hours": ["routine"]},
             "hours": {"teams": {"support": {"timezone": "UTC"}}}}
    config = make_config(flows, clock=clock)
    c = Chat(config, [urgency.build(config), sla.build(config)])
    await c.say("Could you send the datasheet for the LM317?")
    state = read_state(c.conversation, "sla", SlaState)  # type: ignore[arg-type]
    assert state.first_response_due_ms == utc(23, 10)  # 1 h on Friday, 1 h on Monday
    clock.now_ms = utc(21, 12)  # Saturday noon: only the warning (at Friday 18:00) has fired
    assert [e.text for e in events(await c.fire_due())] == ["SLA warning: routine first response due in 46 h"]
    clock.now_ms = utc(23, 9, 59)
    assert events(await c.fire_due()) == []
    clock.now_ms = utc(23, 10)
    (breach,) = events(await c.fire_due())
    assert breach.text == "SLA breach: routine first response target missed"

    urgent = Chat(config, [urgency.build(config), sla.build(config)])
    clock.now_ms = utc(21, 12)  # Saturday: urgent cases keep the calendar clock
    await urgent.say("URGENT: our production line is down")
    assert read_state(urgent.conversation, "sla", SlaState).first_response_due_ms == utc(21, 12, 10)  # type: ignore[arg-type]


def test_business_hours_must_name_a_target() -> None:
    with pytest.raises(ConfigError) as err:
        sla.build(make_config({"sla": {"business_hours": ["vip"]}}))
    assert "flows.sla.business_hours: 'vip' has no target under flows.sla.targets" in str(err.value)
