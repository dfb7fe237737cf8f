"""Step ``topics``: what the case is about, and which email queue it goes to.

Every customer message gets a topic from the configured set (``flows.topics.topics``;
built in: order_status, shipping, billing, technical, quality, dispute, supply, accounts),
``general`` when none fits. The built-in topics, as the shipped labels use them (what the
customer asks for decides, not every word they use):

- ``dispute``: the customer contests a decision or a charge: a rejected claim or RMA, a
  fee they refuse to pay, a threatened chargeback, complaint to a bank or legal action.
- ``quality``: the goods are faulty or not what was ordered: defects, failures, dead on
  arrival, wrong or mixed parts, counterfeits, out of spec, safety incidents (smoke, fire,
  swelling), damage a part caused; RMAs, 8D and failure reports for faulty goods.
- ``technical``: using or designing with a product: datasheets, specifications, pinouts,
  footprints, compatibility, firmware, software, drivers and tools (an update that breaks
  devices too).
- ``shipping``: getting goods to the customer: late, lost or missing deliveries, tracking,
  couriers, customs, damage in transit, delivery address, method, cost and destinations.
- ``order_status``: the state of an order with no problem told: confirmed? shipped? when?
  and changes to an order not yet sent (quantities, lines, cancelling).
- ``supply``: availability before an order ships: stock, lead times, allocation,
  shortages, end of life and PCNs, last-time buys, alternatives to a part.
- ``billing``: money: prices and quotes, invoices, payments and reminders, refunds,
  credit notes, taxes, payment terms.
- ``accounts``: access and account data: logins, passwords, two-factor, portal users,
  the account's contact details.
- ``general``: none of these: greetings, thanks, status updates asking nothing, questions
  about the company (opening hours, visits), samples, minimum quantities, certificates.

Two readers, added up per topic (`TopicChooser`): the learned model's confidence in each
topic (flows/model.py, summing to 1) and the phrases of the message's own languages
(flows/data/phrases, extended by ``flows.topics.phrases``): ``phrase_weight`` for the topic
with the most phrases, in proportion for the others. The best score wins (ties go to the
earlier topic in ``priority``); below ``min_score`` the message is ``general``, so
``general`` is the answer only when nothing is confident.

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
from flows.common import is_customer_text, state_dict, step_settings
from flows.phrases import LANGUAGES, PhraseMatcher, builtin

TOPICS = ("dispute", "quality", "order_status", "accounts", "supply", "billing", "shipping", "technical")
GENERAL = "general"


class TopicSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topics: list[str] = [*TOPICS, GENERAL]  # the topic set; general is the fallback
    phrases: dict[str, dict[str, list[str]]] = {}  # language -> topic -> extra phrases
    builtin_phrases: bool = True
    model: bool = True  # the learned model's topic beside the phrases
    phrase_weight: float = Field(0.5, ge=0, le=10)  # what the phrases add to the model's confidence
    min_score: float = Field(0.35, ge=0, le=10)  # a topic below this score: general
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
    route: dict[str, str] = dict(settings.queues)
    for name, queue_settings in queues.items():
        for topic in queue_settings.topics:
            route[topic] = name
    chooser = TopicChooser(settings)
    holder = learned.holder_for(learned.model_dir(config.settings.redis.data_dir)) if settings.model else None

    def topics_step(turn: Turn) -> None:
        if not is_customer_text(turn) or "topic" in turn.notes:
            return  # (already done when both "triage" and "topics" are configured)
        conversation = turn.conversation
        model = holder.current() if holder is not None else None
        topic, strength, why = chooser.choose(learned.capped(turn.message.text), message_languages(turn), model)
        turn.notes["topic"] = topic
        turn.notes["topic_reason"] = why
        state = state_dict(turn, "topic")
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

    return learned.AfterModel(topics_step, holder)


class TopicChooser:
    """Phrases and the model's confidences, added up per topic (see the module's docstring)."""

    def __init__(self, settings: TopicSettings) -> None:
        self.settings = settings
        self.known = set(settings.topics)
        phrases: dict[str, list[tuple[str, str, str]]] = {}
        if settings.builtin_phrases:
            for lang in LANGUAGES:
                for topic, words in (builtin(lang).get("topics") or {}).items():
                    if topic in self.known:
                        phrases.setdefault(lang, []).extend((topic, w, lang) for w in words)
        for lang, topics in settings.phrases.items():
            for topic, words in topics.items():
                phrases.setdefault(lang, []).extend((topic, w, lang) for w in words)
        self.matchers = {lang: PhraseMatcher(items, fuzzy_cutoff=settings.fuzzy_cutoff)
                         for lang, items in phrases.items()}
        self.rank = {t: i for i, t in enumerate(settings.priority)}

    def phrase_counts(self, text: str, languages: list[str]) -> Counter[str]:
        counts: Counter[str] = Counter()
        for lang in languages:
            if lang in self.matchers:
                counts.update({h.group for h in self.matchers[lang].find(text)})
        return counts

    def choose(self, text: str, languages: list[str], model: Any) -> tuple[str, float, str]:
        """(topic, score, reason) for one message; ``model`` may be None (phrases only)."""
        counts = self.phrase_counts(text, languages)
        confidences: dict[str, float] = {}
        if model is not None:
            confidences = {t: p for t, p in model.topic_probabilities(text).items() if t in self.known}
        most = max(counts.values(), default=0)
        scores = {t: confidences.get(t, 0.0) + self.settings.phrase_weight * counts[t] / most if most else
                  confidences.get(t, 0.0) for t in {*counts, *confidences}}
        if not scores:
            return GENERAL, 0.0, "none fits"
        best = min(scores, key=lambda t: (-scores[t], self.rank.get(t, len(self.rank)), t))
        reason = "; ".join(part for part in (
            f"model {confidences[best]:.2f}" if best in confidences else "",
            f"phrases {counts[best]}" if counts[best] else "") if part)
        if best == GENERAL or scores[best] < self.settings.min_score:
            return GENERAL, 0.0, f"none fits ({best} {scores[best]:.2f})" if best != GENERAL else reason
        return best, scores[best], reason
