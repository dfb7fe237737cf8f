"""Step ``topics``: what the case is about, and which email queue it goes to.

Topics come from phrase lists per language (built in: order_status, shipping, billing,
technical, quality, dispute, supply; extended by ``flows.topics.phrases``). The topic
with the most phrases found wins; ties go to the earlier topic in ``priority``. The
queue (``turn.notes["queue"]``, where routing files the case) is the one whose
``queues.<name>.topics`` lists the topic, else ``flows.topics.queues``
maps it, else ``default``. A conversation keeps its first topic unless a later message
is clearer (more phrases found). The topic ``dispute`` also tags the conversation
``dispute``, which starts the dispute steps.
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from bridge.errors import ConfigError
from flows.common import flow_state, is_customer_text, step_settings
from flows.phrases import LANGUAGES, PhraseMatcher, builtin
from flows.turn import FlowConfig, Step, Turn

TOPICS = ("dispute", "quality", "order_status", "supply", "billing", "shipping", "technical")


class TopicSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phrases: dict[str, dict[str, list[str]]] = {}  # language -> topic -> extra phrases
    builtin_phrases: bool = True
    priority: list[str] = list(TOPICS)  # tie-break order; topics not listed come last
    queues: dict[str, str] = {}  # topic -> queue name, when no queue lists the topic
    tags: dict[str, str] = {"dispute": "dispute"}  # topic -> tag added to the conversation
    fuzzy_cutoff: float = Field(90.0, ge=50, le=100)


def build(config: FlowConfig) -> Step:
    settings = step_settings(config, "topics", TopicSettings)
    queues = config.settings.queues
    for topic, queue in settings.queues.items():
        if queue not in queues:
            raise ConfigError([f"flows.topics.queues.{topic}: queue {queue!r} is not configured under queues:"])
    route: dict[str, str] = dict(settings.queues)
    for name, queue_settings in queues.items():
        for topic in queue_settings.topics:
            route[topic] = name
    phrases: list[tuple[str, str, str]] = []
    if settings.builtin_phrases:
        for lang in LANGUAGES:
            for topic, words in (builtin(lang).get("topics") or {}).items():
                phrases.extend((topic, w, lang) for w in words)
    for lang, topics in settings.phrases.items():
        for topic, words in topics.items():
            phrases.extend((topic, w, lang) for w in words)
    matcher = PhraseMatcher(phrases, fuzzy_cutoff=settings.fuzzy_cutoff)
    rank = {t: i for i, t in enumerate(settings.priority)}

    def choose(text: str) -> tuple[str, int]:
        hits = matcher.find(text)
        counts = Counter(h.group for h in hits)
        if not counts:
            return "", 0
        topic = min(counts, key=lambda t: (-counts[t], rank.get(t, len(rank)), t))
        return topic, counts[topic]

    def topics_step(turn: Turn) -> None:
        if not is_customer_text(turn) or "topic" in turn.notes:
            return  # (already done when both "triage" and "topics" are configured)
        conversation = turn.conversation
        topic, strength = choose(turn.message.text)
        turn.notes["topic"] = topic
        state = flow_state(turn, "topic")
        if topic and (not conversation.topic or strength > int(state.get("strength", 0))):
            conversation.topic = topic
            state["strength"] = strength
            tag = settings.tags.get(topic)
            if tag and tag not in conversation.tags:
                conversation.tags.append(tag)
        queue = route.get(conversation.topic, "default")
        state["queue"] = turn.notes["queue"] = queue if queue in queues else "default"

    return topics_step
