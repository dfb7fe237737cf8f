"""Step ``topics``: what the case is about, and which email queue it goes to.

Every customer message gets a topic from the configured set (``flows.topics.topics``;
built in: order_status, shipping, billing, technical, quality, dispute, supply, accounts),
``general`` when none fits. Two readers: phrase lists of the message's own languages
(flows/data/phrases, extended by ``flows.topics.phrases``; the topic with the most
phrases wins, ties go to the earlier topic in ``priority``) and the learned model
(flows/model.py). A phrase topic stands unless the model is sure of another one
(``model_over``); with no phrase, the model's topic counts from ``model_min``.

The queue (``turn.notes["queue"]``, where routing files the case) is the one whose
``queues.<name>.topics`` lists the topic, else ``flows.topics.queues`` maps it, else
``default``. A conversation keeps its first topic unless a later message is clearer.
A dispute in the customer's words is proposed to the agents (event ``dispute_proposed``;
they start the dispute steps with the ``dispute`` command); ``tags`` can instead tag the
conversation, which starts them at once.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bridge.errors import ConfigError
from bridge.turn import FlowConfig, Step, Turn
from flows.common import flow_state, is_customer_text, step_settings
from flows.phrases import LANGUAGES, PhraseMatcher, builtin

TOPICS = ("dispute", "quality", "order_status", "accounts", "supply", "billing", "shipping", "technical")
GENERAL = "general"


class TopicSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topics: list[str] = [*TOPICS, GENERAL]  # the topic set; general is the fallback
    phrases: dict[str, dict[str, list[str]]] = {}  # language -> topic -> extra phrases
    builtin_phrases: bool = True
    model: bool = True  # the learned model's topic beside the phrases
    model_min: float = Field(0.3, ge=0, le=1)  # no phrase found: the model's topic from this probability
    model_over: float = Field(0.7, ge=0, le=1)  # the model overrules a phrase topic from this probability
    priority: list[str] = list(TOPICS)  # tie-break order; topics not listed come last
    queues: dict[str, str] = {}  # topic -> queue name, when no queue lists the topic
    tags: dict[str, str] = {}  # topic -> tag added to the conversation (dispute: starts the dispute steps)
    propose: dict[str, str] = {"dispute": "dispute"}  # topic -> flow proposed to the agents
    fuzzy_cutoff: float = Field(90.0, ge=50, le=100)


def build(config: FlowConfig) -> Step:
    from flows import model as learned
    from flows.urgency import message_languages

    settings = step_settings(config, "topics", TopicSettings)
    queues = config.settings.queues
    problems = [f"flows.topics.queues.{topic}: queue {queue!r} is not configured under queues:"
                for topic, queue in settings.queues.items() if queue not in queues]
    if GENERAL not in settings.topics:
        problems.append(f"flows.topics.topics: must include {GENERAL!r} (the topic when none fits)")
    if problems:
        raise ConfigError(problems)
    known = set(settings.topics)
    route: dict[str, str] = dict(settings.queues)
    for name, queue_settings in queues.items():
        for topic in queue_settings.topics:
            route[topic] = name
    phrases: dict[str, list[tuple[str, str, str]]] = {}
    if settings.builtin_phrases:
        for lang in LANGUAGES:
            for topic, words in (builtin(lang).get("topics") or {}).items():
                if topic in known:
                    phrases.setdefault(lang, []).extend((topic, w, lang) for w in words)
    for lang, topics in settings.phrases.items():
        for topic, words in topics.items():
            phrases.setdefault(lang, []).extend((topic, w, lang) for w in words)
    matchers = {lang: PhraseMatcher(items, fuzzy_cutoff=settings.fuzzy_cutoff) for lang, items in phrases.items()}
    rank = {t: i for i, t in enumerate(settings.priority)}
    holder = learned.holder_for(learned.model_dir(config.settings.redis.data_dir)) if settings.model else None

    def choose(text: str, languages: list[str], model: Any) -> tuple[str, float, str]:
        """(topic, strength, reason)."""
        counts: Counter[str] = Counter()
        for lang in languages:
            if lang in matchers:
                counts.update({h.group for h in matchers[lang].find(text)})
        phrase_topic = min(counts, key=lambda t: (-counts[t], rank.get(t, len(rank)), t)) if counts else ""
        model_topic, p = "", 0.0
        if model is not None:
            _, model_topic, p = model.predict(text)
            if model_topic not in known:
                model_topic, p = "", 0.0
        if phrase_topic and not (model_topic and model_topic != phrase_topic and p >= settings.model_over):
            return phrase_topic, counts[phrase_topic] + (p if model_topic == phrase_topic else 0), "phrases"
        if model_topic and p >= settings.model_min:
            return model_topic, p, f"model {p:.2f}"
        return GENERAL, 0.0, "none fits"

    def topics_step(turn: Turn) -> None:
        if not is_customer_text(turn) or "topic" in turn.notes:
            return  # (already done when both "triage" and "topics" are configured)
        conversation = turn.conversation
        model = holder.current() if holder is not None else None
        topic, strength, why = choose(learned.capped(turn.message.text), message_languages(turn), model)
        turn.notes["topic"] = topic
        turn.notes["topic_reason"] = why
        state = flow_state(turn, "topic")
        clearer = not conversation.topic or conversation.topic == GENERAL or strength > float(state.get("strength", 0))
        if clearer and (topic != GENERAL or not conversation.topic):
            conversation.topic = topic
            state["strength"] = strength
        tag = settings.tags.get(conversation.topic)
        if tag and tag not in conversation.tags:
            conversation.tags.append(tag)
        flow = settings.propose.get(conversation.topic)
        if flow and not state.get(f"proposed_{flow}") and not tag:
            state[f"proposed_{flow}"] = True
            turn.notes["propose"] = flow
            turn.notify_agents(f"{flow}_proposed", data={"flow": flow, "topic": conversation.topic},
                               text=f"The customer's words read as a {conversation.topic} ({why}): start the "
                                    f"{flow} steps with the command `{flow}` (step: start)?")
        queue = route.get(conversation.topic, "default")
        state["queue"] = turn.notes["queue"] = queue if queue in queues else "default"

    return Topics(topics_step, holder)


class Topics:
    """The step: waits (without blocking the loop) for the model once, then chooses."""

    def __init__(self, choose_turn: Step, holder: Any) -> None:
        self.choose_turn = choose_turn
        self.holder = holder

    async def __call__(self, turn: Turn) -> None:
        if self.holder is not None and is_customer_text(turn):
            await self.holder.ready()
        self.choose_turn(turn)
