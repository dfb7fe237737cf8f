"""Step ``dispute``: a conversation tagged ``dispute`` follows the dispute steps.

1. identify_claim: what the customer claims (agents record ``claim``);
2. gather_evidence: files and facts (agents add ``evidence``; the customer's attachments
   are recorded by themselves);
3. propose_resolution: agents record the ``resolution`` offered;
4. confirm_in_writing: the agreed resolution is sent to the customer by email (the
   contact's address through the ``email`` channel; else on the customer's channel,
   and the agents are told);
5. follow_up: after ``follow_up_days`` the customer is asked whether it was carried out;
then closed.

Agents move it with the command ``dispute`` (``data``: ``step`` = ``next`` or a step
name, and any of ``claim``, ``evidence``, ``resolution``, ``note``). Every change is
posted to the agents as event ``dispute_step`` and kept in
``conversation.data["dispute"]`` (step, history, claim, evidence, resolution).
"""

from __future__ import annotations

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from bridge.flowstate import DisputeConfirmation, DisputeEntry, DisputeNote, DisputeState, flow_state
from bridge.model import Message
from bridge.turn import FlowConfig, Step, Turn
from flows.common import render, step_settings

STEPS = ("identify_claim", "gather_evidence", "propose_resolution", "confirm_in_writing", "follow_up", "closed")
TITLES = {
    "identify_claim": "identify the claim",
    "gather_evidence": "gather evidence",
    "propose_resolution": "propose a resolution",
    "confirm_in_writing": "confirm it in writing",
    "follow_up": "follow up",
    "closed": "closed",
}
COMMAND = "dispute"
TIMER = "dispute_follow_up"


class DisputeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: str = "dispute"
    follow_up_days: float = Field(7.0, ge=0)


def build(config: FlowConfig) -> Step:
    settings = step_settings(config, "dispute", DisputeSettings)
    follow_up_ms = int(settings.follow_up_days * 86_400_000)

    def post(turn: Turn, state: DisputeState, text: str) -> None:
        step = state.step
        number = STEPS.index(step) + 1
        title = f"step {number}/{len(STEPS) - 1}: {TITLES[step]}" if step != "closed" else "closed"
        turn.notify_agents("dispute_step", text=f"Dispute {title}" + (f" - {text}" if text else ""),
                           data={"dispute": {k: v for k, v in msgspec.to_builtins(state).items() if k != "history"}
                                 | {"title": TITLES[step], "number": number}})

    def enter(turn: Turn, state: DisputeState, step: str, by: str) -> str:
        """Move to ``step``; returns what happened, for the agents."""
        state.step = step
        state.history.append(DisputeEntry(step=step, at_ms=turn.now_ms, by=by))
        if step == "confirm_in_writing":
            return confirm(turn, state)
        if step == "follow_up":
            turn.schedule(turn.now_ms + follow_up_ms, TIMER, {"entered_ms": turn.now_ms})
            state.follow_up_due_ms = turn.now_ms + follow_up_ms
            return f"customer will be asked in {settings.follow_up_days:g} days"
        return ""

    def confirm(turn: Turn, state: DisputeState) -> str:
        conversation = turn.conversation
        resolution = state.resolution
        text = render(turn, "dispute_confirmation", reference=conversation.id, resolution=resolution)
        subject = render(turn, "dispute_confirmation_subject", reference=conversation.id)
        email = turn.contact.email if turn.contact else ""
        mail = turn.config.email_channel()
        if conversation.channel == mail:
            turn.reply(text, data={"subject": subject, "dispute": "confirmation"})
            via = f"email to {conversation.address}"
        elif email and mail is not None:
            turn.outbound.append(Message(kind="reply", channel=mail, address=email,
                                         conversation_id=conversation.id, text=text, reply_to=turn.message.id,
                                         data={"subject": subject, "dispute": "confirmation"},
                                         created_ms=turn.now_ms))
            via = f"email to {email}"
        else:
            turn.reply(text, data={"subject": subject, "dispute": "confirmation"})
            via = f"{conversation.channel} (no email address on file: ask the customer for one)"
        state.confirmation = DisputeConfirmation(sent_ms=turn.now_ms, via=via, resolution=resolution)
        return f"written confirmation sent by {via}"

    def command(turn: Turn, state: DisputeState) -> None:
        data = turn.message.data
        sender = turn.message.sender
        by = (sender.name or sender.id) if sender else ""
        if not state.step:
            start(turn, state, by)
        if data.get("claim"):
            state.claim = str(data["claim"])
        if data.get("resolution"):
            state.resolution = str(data["resolution"])
        if data.get("evidence"):
            state.evidence.append(str(data["evidence"]))
        wanted = str(data.get("step") or "")
        current = state.step
        problem = ""
        said = ""
        if wanted == "start":
            wanted = ""  # started above if it was not yet
        if wanted == "next":
            wanted = STEPS[min(STEPS.index(current) + 1, len(STEPS) - 1)]
        if wanted and wanted not in STEPS:
            problem = f"unknown dispute step {wanted!r}; steps: {', '.join(STEPS)}"
        elif wanted == "confirm_in_writing" and not state.resolution:
            problem = "record the agreed resolution first (data.resolution)"
        elif wanted and wanted != current:
            said = enter(turn, state, wanted, by)
        if data.get("note"):
            state.notes.append(DisputeNote(text=str(data["note"]), by=by, at_ms=turn.now_ms))
        post(turn, state, problem or said)

    def start(turn: Turn, state: DisputeState, by: str) -> None:
        state.step, state.started_ms = STEPS[0], turn.now_ms
        state.history.append(DisputeEntry(step=STEPS[0], at_ms=turn.now_ms, by=by))
        if settings.tag not in turn.conversation.tags:
            turn.conversation.tags.append(settings.tag)

    def follow_up(turn: Turn, state: DisputeState) -> None:
        if state.step != "follow_up" or state.followed_up_ms:
            return
        if not state.history or turn.message.data.get("entered_ms") != state.history[-1].at_ms:
            return
        state.followed_up_ms = turn.now_ms
        turn.reply(render(turn, "dispute_follow_up", reference=turn.conversation.id, resolution=state.resolution))
        post(turn, state, "customer asked whether the resolution was carried out")

    def dispute(turn: Turn) -> None:
        message = turn.message
        conversation = turn.conversation
        if message.kind == "command" and message.name == COMMAND:
            command(turn, flow_state(conversation, "dispute", DisputeState))
            return
        if message.kind == "command" and message.name == TIMER:
            follow_up(turn, flow_state(conversation, "dispute", DisputeState))
            return
        if settings.tag not in conversation.tags:
            return
        state = flow_state(conversation, "dispute", DisputeState)
        if not state.step:
            start(turn, state, "triage")
            post(turn, state, conversation.urgency_reason or conversation.topic or "")
            return
        if message.kind == "customer" and state.step == "gather_evidence" and message.attachments:
            names = [a.name or a.ref for a in message.attachments]
            state.evidence.extend(f"customer file: {n}" for n in names)
            post(turn, state, f"customer sent {len(names)} file(s)")

    return dispute
