"""The console's work queue: what the list shows of each case, its order and its filters.

Built from the conversation record and the tail of its transcript (the last ``TAIL``
entries: bounded work per row, whatever the conversation's length):

- the customer's last words (never the bot's reply or a notice);
- since when the customer waits for a person: the first customer message after the last
  human answer (an agent's reply; the bot's does not count); not waiting once a person
  answered or the case is resolved;
- the SLA due time from the SLA step's state (`bridge.flowstate.SlaState`): the first-response due
  time until a person answered since the clock started, then the resolution due time;
- the times of the recent customer messages, for the per-agent unread count.
"""

from __future__ import annotations

import math
from typing import Any

from bridge.flowstate import SlaState, read_state
from bridge.model import Contact, Conversation, Message

TAIL = 30  # transcript entries read per row; unread counts stop at what this shows
STATUSES = ("open", "pending", "resolved")
FILTERS = ("queue", "channel", "agent", "language")  # query parameters of the list, besides status
UNASSIGNED = "-"  # the agent filter's value for cases nobody has


def is_human_answer(message: Message) -> bool:
    return message.kind == "agent" or (message.kind == "reply" and bool(message.sender and message.sender.is_agent))


def is_customer_words(message: Message) -> bool:
    """A customer's own message: not an auto-reply or bounce."""
    return message.kind == "customer" and not message.data.get("auto")


def last_customer_words(tail: list[Message]) -> str:
    return next((m.text for m in reversed(tail) if is_customer_words(m)), "")


def waiting_since_ms(conversation: Conversation, tail: list[Message]) -> int:
    """When the customer's unanswered message came (0: nobody waits for us)."""
    if conversation.status == "resolved":
        return 0
    since, answered = 0, False
    for message in tail:
        if is_customer_words(message):
            since = since or message.created_ms
        elif is_human_answer(message):
            since, answered = 0, True
    if since and not answered and not conversation.first_response_ms:
        return conversation.created_ms or since  # never answered: waiting since it opened
    return since


def sla_due(conversation: Conversation) -> tuple[int, str]:
    """(due ms, "first_response" or "resolution"), or (0, "") with no SLA clock running."""
    state = read_state(conversation, "sla", SlaState)
    if conversation.status == "resolved" or not state.started_ms:
        return 0, ""
    answered = max(conversation.first_response_ms, state.answered_ms)
    if not (answered and answered >= state.started_ms) and state.first_response_due_ms:
        return state.first_response_due_ms, "first_response"
    return state.resolution_due_ms, "resolution" if state.resolution_due_ms else ""


def row(conversation: Conversation, contact: Contact | None, tail: list[Message]) -> dict[str, Any]:
    """One line of the list (``customer_times`` is for `unread` and is not sent)."""
    due_ms, due_kind = sla_due(conversation)
    return {
        "id": conversation.id, "channel": conversation.channel, "address": conversation.address,
        "status": conversation.status, "urgency": conversation.urgency,
        "urgency_reason": conversation.urgency_reason, "language": conversation.language,
        "topic": conversation.topic, "queue": conversation.queue, "assignee": conversation.assignee,
        "unreachable": conversation.unreachable, "updated_ms": conversation.updated_ms,
        "last_customer_ms": conversation.last_customer_ms, "messages": conversation.messages,
        "customer": contact.name if contact else "",
        "preview": last_customer_words(tail)[:140],
        "waiting_since_ms": waiting_since_ms(conversation, tail),
        "due_ms": due_ms, "due_kind": due_kind,
        "customer_times": [m.created_ms for m in tail if is_customer_words(m)],
    }


def sort_key(r: dict[str, Any]) -> tuple[float, ...]:
    """Open before pending before resolved; then urgent first; then the earliest SLA due
    time (none: last); then the longest waiting; then the most recently changed."""
    status = STATUSES.index(r["status"]) if r["status"] in STATUSES else len(STATUSES)
    return (status, 0 if r["urgency"] == "urgent" else 1, r["due_ms"] or math.inf,
            r["waiting_since_ms"] or math.inf, -r["updated_ms"])


def matches(r: dict[str, Any], filters: dict[str, str]) -> bool:
    """Every given filter holds (an empty value: any)."""
    for name, wanted in filters.items():
        if not wanted:
            continue
        value = r["assignee"] if name == "agent" else r.get(name, "")
        if name == "agent" and wanted == UNASSIGNED:
            if value:
                return False
        elif value != wanted:
            return False
    return True


def facets(rows: list[dict[str, Any]], queues: list[str]) -> dict[str, list[str]]:
    """The values each filter can take: configured queues and what the rows hold."""
    found: dict[str, set[str]] = {name: set() for name in FILTERS}
    found["queue"].update(queues)
    for r in rows:
        for name in FILTERS:
            value = r["assignee"] if name == "agent" else r.get(name, "")
            if value:
                found[name].add(str(value))
    return {name: sorted(values) for name, values in found.items()}


def unread(r: dict[str, Any], seen_ms: int) -> int:
    """Customer messages since the agent last had the case open (at most `TAIL`)."""
    return sum(1 for t in r["customer_times"] if t > seen_ms)


def public(r: dict[str, Any], seen_ms: int) -> dict[str, Any]:
    """The row as one agent's console gets it."""
    out = {k: v for k, v in r.items() if k != "customer_times"}
    out["unread"] = unread(r, seen_ms)
    return out
