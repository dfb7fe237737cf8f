"""Routing: what a message causes.

- urgent (newly, or a resolved urgent case reopened): an instant reply on the customer's
  channel and an escalation event (the agents' side keeps the case's thread);
- a new routine case (or the first message a person must see after the bot answered):
  an acknowledgement promising a reply time, an entry in its email queue (the topics
  step's choice, else by topic), and the agents told. The promise comes from the SLA's
  clock (flows/sla.py `Clock`): the same target and business hours the SLA timers use,
  stated as a time ("by Monday 2026-11-23 09:00 (UTC)", in the customer's language and
  time zone when known) when business hours stop the clock, else as a span. A case triage
  is unsure about ("check urgency") gets the short ``check`` target and the agents an
  event ``check_urgency``;
- a customer's follow-up: shown to the agents;
- an agent's message: delivered to the customer on the customer's channel (unless the
  translation step holds it to send it translated: flows/translation.py).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge.turn import FlowConfig, Step, Turn
from flows.common import render, shown_to_customer
from flows.sla import Clock

WEEKDAYS = {
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "zh": ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"),
    "ru": ("понедельник", "вторник", "среда", "четверг", "пятница", "суббота", "воскресенье"),
    "tl": ("Lunes", "Martes", "Miyerkules", "Huwebes", "Biyernes", "Sabado", "Linggo"),
    "ms": ("Isnin", "Selasa", "Rabu", "Khamis", "Jumaat", "Sabtu", "Ahad"),
}


def when(due_ms: int, zone_name: str, language: str) -> str:
    """'Monday 2026-11-23 09:00 (UTC)' with the weekday in the customer's language."""
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone, zone_name = ZoneInfo("UTC"), "UTC"
    local = dt.datetime.fromtimestamp(due_ms / 1000, zone)
    day = WEEKDAYS.get(language, WEEKDAYS["en"])[local.weekday()]
    return f"{day} {local:%Y-%m-%d %H:%M} ({zone_name})"


class Routing:
    def __init__(self, config: FlowConfig) -> None:
        self.settings = config.settings
        self.clock = Clock(config)

    def choose_queue(self, turn: Turn) -> str:
        if turn.conversation.queue in self.settings.queues:
            return turn.conversation.queue
        chosen = turn.notes.get("queue")  # the topics step's choice
        if isinstance(chosen, str) and chosen in self.settings.queues:
            return chosen
        topic = turn.conversation.topic
        for name, queue in self.settings.queues.items():
            if topic and topic in queue.topics:
                return name
        return "default"

    def __call__(self, turn: Turn) -> None:
        message = turn.message
        if message.kind == "customer":
            self._customer(turn)
        elif message.kind == "agent":
            self._agent(turn)

    def _customer(self, turn: Turn) -> None:
        message = turn.message
        if message.data.get("auto"):  # an auto-reply or bounce: recorded, never answered
            turn.notify_agents("customer_message", text=message.text, data={"auto": True}, record=False)
            return
        if turn.notes.get("escalate"):
            if not turn.notes.get("out_of_hours_replied"):  # the hours step told them on-call has it
                turn.reply(turn.text("urgent"))
            data = {"mention": self.settings.agents.urgent_mention, "new": turn.is_new}
            if turn.notes.get("kb"):
                data["kb_suggestion"] = turn.notes["kb"]  # a knowledge-base match, for the agent
            turn.notify_agents("escalation", text=message.text, data=data, record=False)
        elif turn.reopened and turn.conversation.urgency == "urgent":
            # a resolved urgent case the customer reopens: on-call again, in its own thread
            turn.reply(turn.text("urgent"))
            data = {"mention": self.settings.agents.urgent_mention, "new": False, "reopened": True}
            turn.notify_agents("escalation", text=message.text, data=data, record=False)
        elif turn.is_new or turn.reopened or self._unfiled(turn):
            queue = self.choose_queue(turn)
            level = self.clock.level(turn)
            turn.reply(self.promise(turn, level, queue))
            turn.enqueue(queue)
            data = {"reopened": turn.reopened, "check_urgency": level == "check"}
            turn.notify_agents("new_conversation", text=message.text, data=data, record=False)
            if level == "check":
                turn.notify_agents("check_urgency", text=f"Check urgency: {turn.conversation.urgency_reason}",
                                   data={"mention": self.settings.agents.urgent_mention})
        else:
            team = self._team(turn)
            turn.notify_agents("customer_message", text=message.text, data=team, record=False)
            self._follow_ticket(turn, team)

    def _team(self, turn: Turn) -> dict[str, str]:
        """Where the case's ticket went: a follow-up whose ticket was never sent (it failed,
        or email was configured later) is mailed there as the ticket instead."""
        queue = self.settings.queues.get(turn.conversation.queue)
        return {"queue": turn.conversation.queue, "team": queue.email} if queue and queue.email else {}

    def promise(self, turn: Turn, level: str, queue: str) -> str:
        """The acknowledgement, its reply time from the SLA's clock."""
        duration_ms = self.clock.first_response_ms(turn, level, queue)
        schedule = self.clock.schedule(turn, level)
        reference = turn.conversation.id
        if schedule is None:  # the calendar clock: a span says it exactly
            minutes = duration_ms / 60_000
            within = (turn.text("minutes", n=f"{minutes:g}") if minutes < 120
                      else turn.text("hours", n=f"{minutes / 60:g}"))
            return turn.text("ack", reply_within=within, reference=reference)
        due_ms = schedule.add_open_time(turn.now_ms, duration_ms)
        zone = str((turn.contact.data.get("timezone") if turn.contact else "") or schedule.timezone)
        return render(turn, "ack_by", reply_by=when(due_ms, zone, turn.language), reference=reference)

    def _follow_ticket(self, turn: Turn, team: dict[str, str]) -> None:
        """A customer's follow-up on a case filed by email joins the ticket's thread, also
        when email is not an agents' channel."""
        mail = turn.config.email_channel()
        if turn.conversation.queue and mail is not None and mail not in self.settings.agents.channels:
            turn.notify_agents("customer_message", text=turn.message.text, data=team, channels=[mail],
                               record=False)

    @staticmethod
    def _unfiled(turn: Turn) -> bool:
        """A routine conversation no person has seen yet: the bot answered its first
        message (knowledge base, order status), and now the customer writes again."""
        conversation = turn.conversation
        return (not conversation.queue and conversation.urgency != "urgent" and not conversation.assignee
                and not conversation.first_response_ms)

    def _agent(self, turn: Turn) -> None:
        message = turn.message
        if not message.text.strip() and not message.attachments:
            return
        conversation = turn.conversation
        if not turn.notes.get("hold_reply"):  # the translation step sends it once translated
            turn.reply(message.text, sender=shown_to_customer(message.sender), attachments=message.attachments,
                       data={"notify_delivery": True, "agent_channel": message.channel})
        if not conversation.first_response_ms:
            conversation.first_response_ms = turn.now_ms
        if conversation.status != "resolved":
            conversation.status = "pending"
        if not conversation.assignee and message.sender is not None:
            # the console names its agent's login in data (the sender's name is the display name)
            conversation.assignee = str(message.data.get("agent") or message.sender.name or message.sender.id)


def build(config: FlowConfig) -> Step:
    return Routing(config)
