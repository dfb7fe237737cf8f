"""The flows' state kept on a conversation, typed.

A flow's state lives in ``conversation.data[<flow>]``. Steps work on these records (see
`flow_state`); the store encodes them as plain maps, so a record written by an older
version (a plain dict) is read into the record, unknown keys ignored. Reports and the
console read them with `read_state`.
"""

from __future__ import annotations

import logging
from typing import TypeVar

import msgspec

from bridge.model import Conversation

log = logging.getLogger("bridge.flowstate")


class SlaEvent(msgspec.Struct, kw_only=True):
    kind: str  # "first_response" or "resolution"
    level: str  # "warning" or "breach"
    urgency: str = ""
    due_ms: int = 0
    at_ms: int = 0


class SlaState(msgspec.Struct, kw_only=True, omit_defaults=True):
    epoch: int = 0  # the clock's arming; a timer of an older epoch is void
    urgency: str = ""
    started_ms: int = 0
    first_response_due_ms: int = 0
    resolution_due_ms: int = 0
    answered_ms: int = 0  # an agent answered at
    events: list[SlaEvent] = msgspec.field(default_factory=list)

    def breaches(self) -> list[SlaEvent]:
        return [e for e in self.events if e.level == "breach"]


class SurveyState(msgspec.Struct, kw_only=True, omit_defaults=True):
    state: str = ""  # "", "asked", "unanswered", "scored", "commented"
    asked_for: int | None = None  # the resolution (resolved_ms) the survey was asked for
    asked_ms: int = 0
    resolved_ms: int = 0
    score: int | None = None
    comment: str = ""
    low: bool = False
    scored_ms: int = 0
    armed_for: int | None = None  # the resolution whose survey is scheduled
    probe_after_ms: int | None = None  # the agent answer the latest probe timer belongs to


class DisputeEntry(msgspec.Struct, kw_only=True):
    step: str
    at_ms: int = 0
    by: str = ""


class DisputeNote(msgspec.Struct, kw_only=True):
    text: str
    by: str = ""
    at_ms: int = 0


class DisputeConfirmation(msgspec.Struct, kw_only=True):
    sent_ms: int = 0
    via: str = ""
    resolution: str = ""


class DisputeState(msgspec.Struct, kw_only=True, omit_defaults=True):
    step: str = ""  # "" until started
    started_ms: int = 0
    claim: str = ""
    resolution: str = ""
    evidence: list[str] = msgspec.field(default_factory=list)
    notes: list[DisputeNote] = msgspec.field(default_factory=list)
    history: list[DisputeEntry] = msgspec.field(default_factory=list)
    confirmation: DisputeConfirmation | None = None
    follow_up_due_ms: int = 0
    followed_up_ms: int = 0


class KbState(msgspec.Struct, kw_only=True, omit_defaults=True):
    handoff: bool = False  # the customer asked for a person: the bot stops answering
    answered: list[str] = msgspec.field(default_factory=list)  # FAQ entry ids answered, in order


class TranslationState(msgspec.Struct, kw_only=True, omit_defaults=True):
    pending: list[str] = msgspec.field(default_factory=list)  # agent replies held for their translation


S = TypeVar("S", bound=msgspec.Struct)


def read_state(conversation: Conversation, key: str, model: type[S]) -> S:
    """The flow's state as ``model`` (empty when absent, or unreadable: logged)."""
    raw = conversation.data.get(key)
    if isinstance(raw, model):
        return raw
    if isinstance(raw, dict):
        try:
            return msgspec.convert(raw, model, strict=False)
        except msgspec.ValidationError as exc:
            log.warning("flow state unreadable; starting it afresh",
                        extra={"conversation": conversation.id, "flow": key, "error": str(exc)})
    return model()


def flow_state(conversation: Conversation, key: str, model: type[S]) -> S:
    """The flow's state, kept on the conversation: changes to it are saved with the turn."""
    state = read_state(conversation, key, model)
    conversation.data[key] = state
    return state
