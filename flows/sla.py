"""Step ``sla``: first-response and resolution targets per urgency, warned and breached.

When a conversation opens (or reopens, or turns urgent) the step arms four timers
(Redis sorted set, fired back through the engine as ``timer`` commands): a warning at
``warn_fraction`` of each target and the breach at the target. A firing timer checks
that it still matters (same arming ``epoch``; no first response yet; not resolved): there
is no cancel, so stale timers are ignored here. Warnings and breaches are posted to the
agents (events ``sla_warning`` / ``sla_breach``), counted in the Prometheus counter
``bridge_sla_events_total{kind,level,urgency}``, and recorded in
``conversation.data["sla"]["events"]`` for reports.
"""

from __future__ import annotations

import msgspec
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field

from bridge.errors import ConfigError
from bridge.flowstate import SlaEvent, SlaState, flow_state
from bridge.turn import FlowConfig, Step, Turn
from flows import hours
from flows.common import is_auto, step_settings

SLA_EVENTS = Counter("bridge_sla_events_total", "SLA warnings and breaches", ["kind", "level", "urgency"])

TIMER = "sla"  # timer command name; data: kind (first_response|resolution), level (warning|breach), epoch


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")

    first_response_min: float = Field(gt=0)
    resolution_h: float = Field(gt=0)


class SlaSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: dict[str, Target] = {
        "urgent": Target(first_response_min=15, resolution_h=8),
        "check": Target(first_response_min=60, resolution_h=24),  # triage unsure: a person checks the urgency
        "routine": Target(first_response_min=24 * 60, resolution_h=72),
    }
    warn_fraction: float = Field(0.8, gt=0, lt=1)
    # urgencies whose clocks run only while the serving team is open (flows.hours), e.g.
    # [routine]: a mail on Friday evening is not late on Saturday; the others run around the clock
    business_hours: list[str] = []


def _label(kind: str) -> str:
    return "first response" if kind == "first_response" else "resolution"


def _span(ms: int) -> str:
    """'25 min', '23 h 30 min', '46 h'."""
    minutes = max(0, ms) // 60_000
    if minutes < 120:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


class Clock:
    """The one clock of promises and targets: the acknowledgement a customer reads and the
    SLA timers agents are held to are computed here, from the same targets and hours.

    The routine first-response target of a queue is its ``reply_within_h`` (the promise);
    the others come from ``flows.sla.targets``. Urgencies listed in ``business_hours``
    count only the serving team's open time (flows.hours)."""

    def __init__(self, config: FlowConfig) -> None:
        self.settings = settings = step_settings(config, "sla", SlaSettings)
        for needed in ("urgent", "routine"):
            if needed not in settings.targets:
                raise ConfigError([f"flows.sla.targets.{needed}: required (first_response_min, resolution_h)"])
        unknown = [u for u in settings.business_hours if u not in settings.targets]
        if unknown:
            raise ConfigError([f"flows.sla.business_hours: {u!r} has no target under flows.sla.targets"
                               for u in unknown])
        self.queues = config.settings.queues
        self.teams = hours.Teams(config) if settings.business_hours else None

    def level(self, turn: Turn) -> str:
        """urgent, check (triage unsure) or routine."""
        urgency = turn.conversation.urgency if turn.conversation.urgency in self.settings.targets else "routine"
        if urgency == "routine" and turn.notes.get("check_urgency") and "check" in self.settings.targets:
            return "check"
        return urgency

    def schedule(self, turn: Turn, level: str) -> hours.Schedule | None:
        """The serving team's hours when this level's clock follows them, else None (calendar time)."""
        if self.teams is None or level not in self.settings.business_hours:
            return None
        return self.teams.serving(turn)[1]

    def first_response_ms(self, turn: Turn, level: str, queue: str = "") -> int:
        queue = queue or turn.conversation.queue or str(turn.notes.get("queue") or "")
        if level == "routine" and queue in self.queues:
            return int(self.queues[queue].reply_within_h * 3_600_000)
        return int(self.settings.targets[level].first_response_min * 60_000)

    def due(self, turn: Turn, level: str, duration_ms: int) -> int:
        schedule = self.schedule(turn, level)
        return schedule.add_open_time(turn.now_ms, duration_ms) if schedule is not None else turn.now_ms + duration_ms


def build(config: FlowConfig) -> Step:
    clock = Clock(config)
    settings = clock.settings

    def arm(turn: Turn, state: SlaState, urgency: str) -> None:
        target = settings.targets[urgency]
        state.epoch += 1

        def later(ms: int) -> int:
            return clock.due(turn, urgency, ms)

        first_ms, resolve_ms = clock.first_response_ms(turn, urgency), int(target.resolution_h * 3_600_000)
        state.urgency, state.started_ms = urgency, turn.now_ms
        state.first_response_due_ms, state.resolution_due_ms = later(first_ms), later(resolve_ms)
        for kind, duration, due in (("first_response", first_ms, state.first_response_due_ms),
                                    ("resolution", resolve_ms, state.resolution_due_ms)):
            turn.schedule(later(int(duration * settings.warn_fraction)), TIMER,
                          {"kind": kind, "level": "warning", "epoch": state.epoch})
            turn.schedule(due, TIMER, {"kind": kind, "level": "breach", "epoch": state.epoch})

    def fire(turn: Turn, state: SlaState) -> None:
        data = turn.message.data
        kind, level = str(data.get("kind")), str(data.get("level"))
        if data.get("epoch") != state.epoch:
            return  # re-armed since: a newer timer covers it
        conversation = turn.conversation
        if conversation.status == "resolved":
            return
        answered_ms = max(conversation.first_response_ms, state.answered_ms)
        if kind == "first_response" and answered_ms and answered_ms >= state.started_ms:
            return
        due = state.first_response_due_ms if kind == "first_response" else state.resolution_due_ms
        urgency = state.urgency or conversation.urgency
        event = SlaEvent(kind=kind, level=level, urgency=urgency, due_ms=due, at_ms=turn.now_ms)
        state.events.append(event)
        SLA_EVENTS.labels(kind, level, urgency).inc()
        if level == "breach":
            late = turn.now_ms - due
            text = f"SLA breach: {urgency} {_label(kind)} target missed" + (f" by {_span(late)}" if late >= 60_000
                                                                               else "")
        else:
            text = f"SLA warning: {urgency} {_label(kind)} due in {_span(due - turn.now_ms)}"
        turn.notify_agents("sla_breach" if level == "breach" else "sla_warning", text=text,
                           data={"sla": msgspec.to_builtins(event)})

    def sla(turn: Turn) -> None:
        message = turn.message
        state = flow_state(turn.conversation, "sla", SlaState)
        if message.kind == "command" and message.name == TIMER:
            fire(turn, state)
            return
        if message.kind == "agent":
            state.answered_ms = turn.now_ms  # a person answered: first response met
            return
        if message.kind != "customer" or is_auto(message):
            return
        urgency = clock.level(turn)
        if not state.epoch or turn.is_new or turn.reopened or (urgency == "urgent" and state.urgency != "urgent"):
            arm(turn, state, urgency)

    return sla
