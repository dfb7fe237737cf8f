"""Step ``hours``: business hours per team, with time zone and holidays.

Outside a team's hours the customer is told, once per closed period, when a person will
answer (the next opening, in the team's time zone). An urgent message outside hours
pages the on-call mention on the agents' side (event ``page``) and tells the customer
that the engineer on call has it. The team is the one serving the conversation's queue
(``flows.hours.teams.<team>.queues``), else ``default_team``.

Example::

    flows:
      hours:
        default_team: support
        teams:
          support:
            timezone: Asia/Singapore
            week: {mon: "09:00-18:00", tue: "09:00-18:00", wed: "09:00-18:00",
                   thu: "09:00-18:00", fri: "09:00-12:00,13:00-18:00"}
            holidays: ["2026-12-25", "2027-01-01"]
            oncall_mention: "@oncall-hw"
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, field_validator

from bridge.errors import ConfigError
from bridge.turn import FlowConfig, Step, Turn
from flows.common import is_customer_text, render, state_dict, step_settings

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _parse_windows(text: str) -> list[tuple[int, int]]:
    """ "09:00-12:00,13:00-18:00" -> [(540, 720), (780, 1080)] in minutes of the day."""
    windows = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            start_s, end_s = part.split("-")
            start = _minutes(start_s)
            end = _minutes(end_s)
        except ValueError:
            raise ValueError(f"{part!r} is not HH:MM-HH:MM") from None
        if not 0 <= start < end <= 24 * 60:
            raise ValueError(f"{part!r}: the start must come before the end, within one day")
        windows.append((start, end))
    return sorted(windows)


def _minutes(text: str) -> int:
    hours, minutes = text.strip().split(":")
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise ValueError(text)
    return h * 60 + m


class TeamHours(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str = "UTC"
    week: dict[str, str] = {d: "09:00-18:00" for d in DAYS[:5]}  # day -> windows; a missing day is closed
    holidays: list[dt.date] = []
    oncall_mention: str | None = None  # default: agents.urgent_mention
    queues: list[str] = []  # queues this team serves

    @field_validator("week")
    @classmethod
    def _week(cls, value: dict[str, str]) -> dict[str, str]:
        for day, windows in value.items():
            if day not in DAYS:
                raise ValueError(f"unknown day {day!r}; use {', '.join(DAYS)}")
            _parse_windows(windows)
        return value


class HoursSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    teams: dict[str, TeamHours] = {"support": TeamHours()}
    default_team: str = "support"
    page_event: str = "page"


class Schedule:
    """One team's opening hours."""

    def __init__(self, name: str, hours: TeamHours) -> None:
        self.name = name
        self.zone = ZoneInfo(hours.timezone)
        self.timezone = hours.timezone
        self.week = {DAYS.index(d): _parse_windows(w) for d, w in hours.week.items()}
        self.holidays = set(hours.holidays)

    def _windows(self, day: dt.date) -> list[tuple[int, int]]:
        return [] if day in self.holidays else self.week.get(day.weekday(), [])

    def is_open(self, now_ms: int) -> bool:
        local = dt.datetime.fromtimestamp(now_ms / 1000, self.zone)
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self._windows(local.date()))

    def add_open_time(self, start_ms: int, duration_ms: int) -> int:
        """When ``duration_ms`` of opening hours will have passed after ``start_ms`` (an SLA
        clock that runs only while the team works). Computed in UTC instants, so a change
        to or from summer time inside a window counts as the time it really is."""
        remaining = duration_ms
        local = dt.datetime.fromtimestamp(start_ms / 1000, self.zone)
        for offset in range(400):
            day = local.date() + dt.timedelta(days=offset)
            midnight = dt.datetime.combine(day, dt.time())
            for start, end in self._windows(day):
                opens = int((midnight + dt.timedelta(minutes=start)).replace(tzinfo=self.zone).timestamp() * 1000)
                closes = int((midnight + dt.timedelta(minutes=end)).replace(tzinfo=self.zone).timestamp() * 1000)
                begin = max(opens, start_ms)
                if begin >= closes:
                    continue
                if remaining <= closes - begin:
                    return begin + remaining
                remaining -= closes - begin
        return start_ms + duration_ms  # never open (no windows): the calendar clock

    def next_open(self, now_ms: int) -> dt.datetime | None:
        """The next opening (local time) after ``now_ms`` when closed; None if never within 60 days."""
        local = dt.datetime.fromtimestamp(now_ms / 1000, self.zone)
        minute = local.hour * 60 + local.minute
        for offset in range(60):
            day = local.date() + dt.timedelta(days=offset)
            for start, end in self._windows(day):
                if offset == 0 and minute >= end:
                    continue
                if offset == 0 and start <= minute:
                    return local
                opening = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=start)
                return opening.replace(tzinfo=self.zone)
        return None


class Teams:
    """The teams of ``flows.hours`` and which serves a queue (the ``hours`` and ``sla`` steps)."""

    def __init__(self, config: FlowConfig) -> None:
        self.settings = settings = step_settings(config, "hours", HoursSettings)
        self.schedules: dict[str, Schedule] = {}
        problems = []
        for name, team in settings.teams.items():
            try:
                self.schedules[name] = Schedule(name, team)
            except (ZoneInfoNotFoundError, ValueError):
                problems.append(f"flows.hours.teams.{name}.timezone: unknown time zone {team.timezone!r} "
                                "(use an IANA name such as Asia/Singapore)")
            for queue in team.queues:
                if queue not in config.settings.queues:
                    problems.append(f"flows.hours.teams.{name}.queues: queue {queue!r} is not configured "
                                    "under queues:")
        if settings.default_team not in settings.teams:
            problems.append(f"flows.hours.default_team: no team named {settings.default_team!r} "
                            "under flows.hours.teams")
        if problems:
            raise ConfigError(problems)
        self.by_queue = {q: name for name, team in settings.teams.items() for q in team.queues}

    def serving(self, turn: Turn) -> tuple[str, Schedule]:
        """The team serving the conversation's queue, else the default team."""
        queue = turn.conversation.queue or str(turn.notes.get("queue") or "")
        name = self.by_queue.get(queue, self.settings.default_team)
        return name, self.schedules[name]


def build(config: FlowConfig) -> Step:
    teams = Teams(config)
    settings = teams.settings

    def hours(turn: Turn) -> None:
        if not is_customer_text(turn):
            return
        conversation = turn.conversation
        team_name, schedule = teams.serving(turn)
        if schedule.is_open(turn.now_ms):
            return
        opens = schedule.next_open(turn.now_ms)
        opens_ms = int(opens.timestamp() * 1000) if opens else turn.now_ms + 86_400_000
        turn.notes["out_of_hours"] = {"team": team_name, "opens_ms": opens_ms}
        state = state_dict(turn, "hours")
        urgent = conversation.urgency == "urgent"
        kind = "urgent" if urgent else "routine"
        if state.get(f"{kind}_until_ms", 0) > turn.now_ms:
            return  # already told during this closed period
        state[f"{kind}_until_ms"] = opens_ms
        if urgent:
            mention = settings.teams[team_name].oncall_mention
            if mention is None:
                mention = config.settings.agents.urgent_mention
            text = f"{mention} urgent case outside {team_name} hours: {conversation.urgency_reason}".strip()
            turn.notify_agents(settings.page_event, text=text,
                               data={"team": team_name, "mention": mention, "opens_ms": opens_ms})
            turn.reply(render(turn, "urgent_out_of_hours"))
            turn.notes["out_of_hours_replied"] = True  # routing skips its "within minutes" reply
        else:
            when = opens.strftime("%Y-%m-%d %H:%M") if opens else "-"
            turn.reply(render(turn, "out_of_hours", opens=when, timezone=schedule.timezone))

    return hours
