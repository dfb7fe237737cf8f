"""Step ``survey``: ask how it went, a while after a conversation is resolved.

A ``survey`` timer is armed for ``delay_min`` after a conversation is resolved (seen on the
resolving turn, or found by a probe timer that each agent answer starts, backing off).
When it fires and the conversation is still resolved by the same resolution, the
customer is asked on their own channel: buttons 1-5 where the channel has buttons, else
a question to answer with a number (an email reply "4", "4/5", "５"). The answer is
recorded in ``conversation.data["survey"]`` (score, comment, times), posted to agents
(event ``survey_result``) and does not reopen the case, unless the score is at most
``low_score``: then the case is reopened (``low_action: reopen``) or only tagged
(``flag``), and the agents are told so. A message right after the score is taken as the
comment. Put this step first after ``commands``: the answer must not be triaged as a
new problem.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bridge.flowstate import SurveyState, flow_state
from bridge.model import Button
from bridge.turn import FlowConfig, Step, Turn
from flows.common import is_auto, render, step_settings

TIMER = "survey"
BUTTON_PREFIX = "survey:"
MAX_PROBES = 12  # an agent's last answer is followed by probes at 1, 2, 4, ... 2048 x delay_min
MIN_PROBE_MS = 1000  # (or x 1 s when delay_min is shorter)
_SCORE = re.compile(r"^\s*(?:survey:)?([1-5])(?:\s*(?:/|из|of|dari|sa)\s*5)?(?!\d|[.,]\d)[\s.,;:!)\-–—]*(.*)$",
                    re.DOTALL | re.IGNORECASE)


class SurveySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delay_min: float = Field(60.0, ge=0)
    answer_within_h: float = Field(72.0, gt=0)
    comment_within_min: float = Field(30.0, ge=0)
    low_score: int = Field(2, ge=1, le=5)
    low_action: Literal["reopen", "flag"] = "reopen"
    low_tag: str = "low_satisfaction"
    skip_channels: list[str] = []  # channels never surveyed


def parse_score(message_text: str, data: dict[str, Any]) -> tuple[int, str] | None:
    """(score, comment) from a button value or a reply like "4", "4/5 fast help", "５"."""
    button = str(data.get("button") or data.get("value") or "")
    if button.startswith(BUTTON_PREFIX) and button[len(BUTTON_PREFIX):].isdigit():
        score = int(button[len(BUTTON_PREFIX):])
        return (score, "") if 1 <= score <= 5 else None
    text = unicodedata.normalize("NFKC", message_text)
    found = _SCORE.match(text.strip())
    if not found:
        return None
    return int(found.group(1)), found.group(2).strip()


def build(config: FlowConfig) -> Step:
    settings = step_settings(config, "survey", SurveySettings)
    answer_ms = int(settings.answer_within_h * 3_600_000)
    comment_ms = int(settings.comment_within_min * 60_000)
    delay_ms = int(settings.delay_min * 60_000)
    probe_ms = max(delay_ms, MIN_PROBE_MS)

    def keep_resolved(turn: Turn, state: SurveyState) -> None:
        """Undo the engine's reopening: a survey answer is not a new problem."""
        if turn.reopened or turn.conversation.status != "resolved":
            turn.conversation.status = "resolved"
            turn.conversation.resolved_ms = state.resolved_ms or turn.conversation.resolved_ms

    def ask(turn: Turn, state: SurveyState) -> None:
        conversation = turn.conversation
        resolved_ms = int(turn.message.data.get("resolved_ms", -1))
        if conversation.status != "resolved" or conversation.resolved_ms != resolved_ms:
            return  # reopened (or resolved again) since: that resolution's survey is void
        if state.asked_for == resolved_ms or conversation.unreachable:
            return
        state.state, state.asked_for, state.asked_ms, state.resolved_ms = "asked", resolved_ms, turn.now_ms, resolved_ms
        reference = conversation.id
        if config.can(conversation.channel).buttons:
            turn.reply(render(turn, "survey_buttons", reference=reference),
                       buttons=[Button(label=str(n), value=f"{BUTTON_PREFIX}{n}") for n in range(1, 6)],
                       data={"survey": True})
        else:
            turn.reply(render(turn, "survey", reference=reference), data={"survey": True})

    def answer(turn: Turn, state: SurveyState) -> bool:
        """Take the customer's message as a score or a comment; False when it is neither."""
        message = turn.message
        conversation = turn.conversation
        if state.state == "asked" and turn.now_ms - state.asked_ms <= answer_ms:
            parsed = parse_score(message.text, message.data)
            if parsed is None:
                state.state = "unanswered"
                return False
            score, comment = parsed
            low = score <= settings.low_score
            state.state, state.score, state.scored_ms, state.low = "scored", score, turn.now_ms, low
            if comment:
                state.comment = comment
            keep_resolved(turn, state)
            if low:
                if settings.low_tag and settings.low_tag not in conversation.tags:
                    conversation.tags.append(settings.low_tag)
                if settings.low_action == "reopen":
                    conversation.status = "open"
                    conversation.resolved_ms = 0
                turn.reply(render(turn, "survey_low"))
            else:
                turn.reply(render(turn, "survey_thanks"))
            action = f" - case {'reopened' if settings.low_action == 'reopen' else 'flagged'}" if low else ""
            turn.notify_agents("survey_result", text=f"Satisfaction {score}/5{action}" + (
                f": {comment}" if comment else ""), data={"survey": {"score": score, "comment": comment, "low": low}})
            return True
        if (state.state == "scored" and not state.comment and not state.low
                and turn.now_ms - state.scored_ms <= comment_ms and turn.reopened):
            state.comment = message.text.strip()
            state.state = "commented"
            keep_resolved(turn, state)
            turn.reply(render(turn, "survey_comment_thanks"))
            turn.notify_agents("survey_result", text=f"Comment on satisfaction {state.score}/5: {state.comment}",
                               data={"survey": {"score": state.score, "comment": state.comment, "low": False}})
            return True
        return False

    def arm(turn: Turn, state: SurveyState) -> None:
        """Schedule the survey for the conversation's current resolution, once."""
        conversation = turn.conversation
        if state.armed_for == conversation.resolved_ms:
            return
        state.armed_for = conversation.resolved_ms
        due = max(turn.now_ms, conversation.resolved_ms + delay_ms)
        turn.schedule(due, TIMER, {"resolved_ms": conversation.resolved_ms})

    def probe(turn: Turn, state: SurveyState) -> None:
        """A probe timer: resolved by now? Then arm; else look again later (backing off)."""
        conversation = turn.conversation
        if conversation.status == "resolved" and conversation.resolved_ms:
            arm(turn, state)
            return
        n = int(turn.message.data.get("probe", 1))
        if n < MAX_PROBES and int(turn.message.data.get("after_ms", 0)) == state.probe_after_ms:
            turn.schedule(turn.now_ms + probe_ms * 2 ** n, TIMER, {"probe": n + 1, "after_ms": state.probe_after_ms})

    def survey(turn: Turn) -> None:
        message = turn.message
        conversation = turn.conversation
        if conversation.channel in settings.skip_channels:
            return
        state = flow_state(conversation, "survey", SurveyState)
        if message.kind == "command" and message.name == TIMER:
            if "probe" in message.data:
                probe(turn, state)
            else:
                ask(turn, state)
            return
        if message.kind == "customer":
            if not is_auto(message) and (message.text.strip() or message.data) and answer(turn, state):
                turn.stop()
            return
        if message.kind == "agent":
            # The engine's commands step ends the pipeline on "resolve", so this step may never
            # see it: each agent answer starts a probe that arms the survey once resolved.
            state.probe_after_ms = turn.now_ms
            turn.schedule(turn.now_ms + probe_ms, TIMER, {"probe": 1, "after_ms": turn.now_ms})
            return
        if conversation.status == "resolved" and conversation.resolved_ms:
            arm(turn, state)

    return survey
