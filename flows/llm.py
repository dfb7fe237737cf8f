"""Optional LLM triage: an OpenAI-compatible chat-completions endpoint (a local Ollama, vLLM
or llama.cpp server, or a hosted one) reads a message and answers urgency, topic and
language as JSON that must fit a schema.

It is a second opinion, never in the way: `LlmClient.classify` gives up on any failure
(timeout, HTTP error, 429, a reply that is not the JSON asked for, the per-minute budget
spent) and returns None, and triage stands on the rules and the model. It is meant to run
as a job beside the engine (never holding a partition); its answer comes back as the
command ``triage_llm`` (``data``: the verdict), which `apply` merges: it can make a routine
case urgent (escalated then) or give a ``general`` case its topic, never calm one.

Example::

    flows:
      llm:
        url: http://127.0.0.1:11434/v1/chat/completions
        model: qwen2.5:7b-instruct
        headers: {Authorization: "Bearer ${LLM_API_KEY}"}
        timeout_s: 5
        per_minute: 30
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bridge.model import Message
from bridge.ratelimit import Budget
from bridge.turn import FlowConfig, Turn
from flows import model as learned
from flows.common import render, state_dict, step_settings

log = logging.getLogger("bridge.triage")
COMMAND = "triage_llm"

PROMPT = (
    "You triage customer-support messages for an electronics manufacturer and distributor. "
    "A message is urgent when a person must see it within minutes: a production line stopped "
    "or about to stop, dead or defective batches, shortages that stop production, end-of-life "
    "or counterfeit parts, shipments lost or late against a deadline, safety hazards. "
    "Hedges ('no rush'), negations ('not urgent') and problems told as resolved are not urgent. "
    "Answer only with the JSON object the schema describes."
)


class LlmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str  # the chat-completions endpoint
    model: str
    headers: dict[str, str] = {}
    timeout_s: float = Field(5.0, gt=0)
    per_minute: int = Field(30, ge=1)  # requests at most; beyond, rules and model alone


class Verdict(BaseModel):
    model_config = ConfigDict(extra="ignore")

    urgent: bool
    topic: str
    language: str
    reason: str = ""


def schema(topics: list[str], languages: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["urgent", "topic", "language", "reason"],
        "properties": {
            "urgent": {"type": "boolean"},
            "topic": {"type": "string", "enum": topics},
            "language": {"type": "string", "enum": languages},
            "reason": {"type": "string", "maxLength": 200},
        },
    }


class LlmClient:
    def __init__(self, settings: LlmSettings, topics: list[str], languages: list[str],
                 clock_s: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.topics = topics
        self.languages = languages
        self.budget = Budget(settings.per_minute, clock_s)
        self.last_error = ""

    def request(self, text: str) -> dict[str, Any]:
        return {
            "model": self.settings.model,
            "temperature": 0,
            "messages": [{"role": "system", "content": PROMPT},
                         {"role": "user", "content": learned.capped(text)}],
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "triage", "strict": True, "schema": schema(self.topics, self.languages)}},
        }

    async def classify(self, text: str) -> Verdict | None:
        """The endpoint's verdict, or None (and ``last_error`` says why)."""
        if not self.budget.take():
            self.last_error = f"budget of {self.settings.per_minute} requests per minute spent"
            return None
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                    self.settings.url, json=self.request(text), headers=self.settings.headers) as response:
                if response.status != 200:
                    self.last_error = f"HTTP {response.status}"
                    return None
                body = await response.json(content_type=None)
            content = body["choices"][0]["message"]["content"]
            verdict = Verdict.model_validate(json.loads(content))
        except (TimeoutError, aiohttp.ClientError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            return None
        except (ValueError, KeyError, IndexError, TypeError, ValidationError) as exc:
            self.last_error = f"not the JSON asked for: {type(exc).__name__}"
            return None
        if verdict.topic not in self.topics or verdict.language not in self.languages:
            self.last_error = f"outside the schema: topic {verdict.topic!r}, language {verdict.language!r}"
            return None
        self.last_error = ""
        return verdict


def apply(turn: Turn, data: dict[str, Any]) -> None:
    """Merge a verdict that came back as the ``triage_llm`` command: it may raise urgency
    (and escalate) or fill a ``general`` topic; it never calms a case."""
    try:
        verdict = Verdict.model_validate(data)
    except ValidationError:
        return
    conversation = turn.conversation
    state_dict(turn, "triage")["llm"] = verdict.model_dump()
    if verdict.topic and conversation.topic in ("", "general"):
        conversation.topic = verdict.topic
    if verdict.urgent and conversation.urgency != "urgent":
        conversation.urgency = "urgent"
        conversation.urgency_reason = f"LLM: {verdict.reason or 'urgent'}"
        turn.reply(render(turn, "urgent"))
        turn.notify_agents("escalation", text=f"Urgent on second reading: {conversation.urgency_reason}",
                           data={"mention": turn.config.settings.agents.urgent_mention, "new": False})


def job(config: FlowConfig) -> Callable[[Message], Awaitable[Message | None]] | None:
    """The LLM's side of the job the engine runs beside a partition (None: ``flows.llm`` not
    configured). Given the triaged customer message, it returns the ``triage_llm`` command to
    publish for that conversation, or None when the LLM gave no usable answer."""
    if not config.settings.flows.get("llm"):
        return None
    from flows.topics import GENERAL, TopicSettings

    settings = step_settings(config, "llm", LlmSettings)
    topics = step_settings(config, "topics", TopicSettings).topics
    client = LlmClient(settings, [t for t in topics if t] or [GENERAL], list(config.settings.triage.languages))

    async def run(message: Message) -> Message | None:
        verdict = await client.classify(message.text)
        if verdict is None:
            log.info("LLM triage skipped: %s", client.last_error)
            return None
        return Message(kind="command", channel=message.channel, name=COMMAND,
                       conversation_id=message.conversation_id, data=verdict.model_dump())

    return run
