"""Agent actions on a conversation: claim, assign, resolve, reopen, urgency, link, note,
and the dispatcher's delivery reports. Always the first step; it ends the pipeline for
the commands it knows, except the state changes later steps react to (PASS_ON), and lets
others (timers) through."""

from __future__ import annotations

from typing import Any

from bridge.contacts import ContactEvent, event_record
from bridge.store import Store
from bridge.turn import FlowConfig, Step, Turn


def _agent(turn: Turn) -> str:
    sender = turn.message.sender
    return str(turn.message.data.get("agent") or (sender.name or sender.id if sender else "") or "an agent")


def _claim(turn: Turn, data: dict[str, Any]) -> str:
    """claim (to me), assign (to ``assignee``); ``if_unassigned`` (automatic round-robin)
    never takes a case someone has meanwhile claimed."""
    if data.get("if_unassigned") and turn.conversation.assignee:
        return ""
    by = _agent(turn)
    turn.conversation.assignee = str(data.get("assignee") or by)
    return f"assigned to {turn.conversation.assignee}" + (f" by {by}" if by != turn.conversation.assignee else "")


def _resolve(turn: Turn, data: dict[str, Any]) -> str:
    turn.conversation.status = "resolved"
    turn.conversation.resolved_ms = turn.now_ms
    return f"resolved by {_agent(turn)}"


def _reopen(turn: Turn, data: dict[str, Any]) -> str:
    turn.conversation.status = "open"
    turn.conversation.resolved_ms = 0
    return f"reopened by {_agent(turn)}"


def _urgency(turn: Turn, data: dict[str, Any]) -> str:
    level = str(data.get("urgency", "")).lower()
    if level not in ("urgent", "routine"):
        return f"urgency not changed: {level!r} is neither urgent nor routine"
    turn.conversation.urgency = level
    turn.conversation.urgency_reason = f"set by {_agent(turn)}"
    return f"urgency set to {level} by {_agent(turn)}"


def _note(turn: Turn, data: dict[str, Any]) -> str:
    turn.record = True  # internal: kept in the transcript, never sent to the customer
    return ""


def _delivery(turn: Turn, data: dict[str, Any]) -> str:
    if data.get("status") == "failed" and data.get("unreachable"):
        turn.conversation.unreachable = str(data.get("reason", "unreachable"))
    if data.get("notify"):
        turn.notify_agents("delivery", text=str(data.get("reason", "")), data=data)
    return ""


HANDLERS = {
    "claim": _claim,
    "assign": _claim,
    "resolve": _resolve,
    "reopen": _reopen,
    "urgency": _urgency,
    "note": _note,
    "delivery": _delivery,
}


#: state changes later steps react to (the survey after a resolution, SLA timers after a
#: change of urgency); routing ignores commands, so passing them on is safe
PASS_ON = {"resolve", "reopen", "urgency"}


class Commands:
    def __init__(self, store: Store | None) -> None:
        self.store = store

    async def __call__(self, turn: Turn) -> None:
        message = turn.message
        if message.kind != "command":
            return
        if message.name == "link":
            await self._link(turn)
        elif message.name in HANDLERS:
            change = HANDLERS[message.name](turn, message.data)
            if change:
                turn.notify_agents("state", text=change, data={"change": message.name})
        else:
            return  # a timer or another step's command
        if message.name not in PASS_ON:
            turn.stop()

    async def _link(self, turn: Turn) -> None:
        """Give the conversation's contact an email; if another contact has it, the
        conversation's address joins that contact (one person, several channels)."""
        email = str(turn.message.data.get("email", "")).strip().lower()
        contact = turn.contact
        if not email or "@" not in email or contact is None:
            return
        existing_id = await self.store.contact_id_by_email(email, archive=True) if self.store else None
        existing = await self.store.contact(existing_id) if self.store and existing_id else None
        address = f"{turn.conversation.channel}:{turn.conversation.address}"
        event = ContactEvent(at_ms=turn.now_ms, agent=_agent(turn), action="link", via=turn.message.channel,
                             field="email", value=email, contact=contact.id)
        if existing is not None and existing.id != contact.id:
            if address not in existing.addresses:
                existing.addresses.append(address)
            turn.contact = existing
            turn.conversation.contact_id = existing.id
            event.other = existing.id
            turn.contact_events.append((existing.id, event_record(event)))
        else:
            contact.email = email
        turn.contact_events.append((contact.id, event_record(event)))
        turn.contact_changed = True
        turn.notify_agents("state", text=f"linked to {email}", data={"change": "link"})


def build(config: FlowConfig) -> Step:
    return Commands(config.store)
