"""Agent corrections as labels, and training and evaluating the triage model on them.

An agent's ``urgency`` command (``!urgency urgent|routine`` in Slack, the console, the
API) or ``topic`` command (``data.topic``) is a label: the triage step records it as an
event ``triage_label`` in the conversation's transcript (the store's own record), with the
words triage read. `collect` reads them back; ``bridge triage train`` trains on the
shipped set plus these labels and writes the next model version into the data
directory; ``bridge triage eval`` prints per-language precision and recall,
cross-validated and on a held-out split that training never sees (flows/data/triage/
holdout.yaml and one agent label in five, chosen by a hash of its text).
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridge.model import Message
from bridge.store import Store
from bridge.turn import Turn
from flows import model as learned
from flows.common import state_dict
from flows.topics import TopicChooser, TopicSettings

LABEL_EVENT = "triage_label"
TEXT_CHARS = 1000  # what a label keeps of the customer's words
HOLDOUT = learned.TRAIN_DIR / "holdout.yaml"


def remember_text(turn: Turn) -> None:
    """Keep the customer's words triage read (a label needs them later)."""
    state = state_dict(turn, "triage")
    text = str(state.get("text", ""))
    if len(text) < TEXT_CHARS:
        state["text"] = (text + "\n" + learned.capped(turn.message.text) if text else
                         learned.capped(turn.message.text))[:TEXT_CHARS]


def record_correction(turn: Turn) -> None:
    """An agent's ``urgency`` or ``topic`` command becomes a label in the transcript."""
    message = turn.message
    conversation = turn.conversation
    if message.name == "topic":
        topic = str(message.data.get("topic", "")).strip().lower()
        if not topic:
            return
        conversation.topic = topic
        by = str(message.data.get("agent") or (message.sender.name or message.sender.id if message.sender else "")
                 or "an agent")
        turn.notify_agents("state", text=f"topic set to {topic} by {by}", data={"change": "topic"})
        queue = next((name for name, q in turn.config.settings.queues.items() if topic in q.topics), "")
        if queue and conversation.queue and conversation.queue != queue:
            conversation.queue = queue
    elif message.name != "urgency" or conversation.urgency not in ("urgent", "routine"):
        return
    text = str(state_dict(turn, "triage").get("text", ""))
    if not text:
        return
    turn.notices.append(Message(kind="event", channel=conversation.channel, name=LABEL_EVENT,
                                conversation_id=conversation.id, created_ms=turn.now_ms,
                                sender=message.sender,
                                data={"text": text, "lang": conversation.language,
                                      "urgent": conversation.urgency == "urgent",
                                      "topic": conversation.topic or "general", "by": message.name}))


async def collect(store: Store, limit: int = 100_000) -> list[learned.Example]:
    """Every conversation's latest label (agent corrections) still in the store."""
    out: list[learned.Example] = []
    for conversation in await store.list(limit=limit):
        latest: dict[str, Any] | None = None
        for message in await store.transcript(conversation.id, limit=10_000):
            if message.kind == "event" and message.name == LABEL_EVENT:
                latest = message.data
        if latest and latest.get("text"):
            out.append(learned.Example(text=str(latest["text"]), lang=str(latest.get("lang") or ""),
                                       urgent=bool(latest.get("urgent")),
                                       topic=str(latest.get("topic") or "general"), source="agent"))
    return out


def held_out(example: learned.Example) -> bool:
    """One agent label in five never trains (a stable choice: a hash of its words)."""
    return example.source == "agent" and hashlib.sha256(example.text.encode()).digest()[0] % 5 == 0


def shipped_holdout() -> list[learned.Example]:
    items = yaml.safe_load(HOLDOUT.read_text(encoding="utf-8")) if HOLDOUT.exists() else []
    return [learned.Example(text=str(i["text"]), lang=str(i["lang"]), urgent=bool(i["urgent"]),
                            topic=str(i.get("topic") or "general"), source="holdout") for i in items or []]


def training_set(labels: Iterable[learned.Example]) -> list[learned.Example]:
    return [*learned.shipped_examples(), *(e for e in labels if not held_out(e))]


def train_and_save(labels: list[learned.Example], data_dir: Path) -> tuple[learned.TriageModel, Path]:
    """Blocking (seconds): run it in a thread from async code."""
    started = time.perf_counter()
    fitted = learned.train(training_set(labels))
    fitted.meta["seconds"] = round(time.perf_counter() - started, 2)
    return fitted, learned.save(fitted, learned.model_dir(data_dir))


# -- evaluation ---------------------------------------------------------------------------


@dataclass
class Scores:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    n: int = 0
    topic_right: int = 0

    def add(self, truth: bool, predicted: bool, topic_ok: bool) -> None:
        self.n += 1
        self.tp += truth and predicted
        self.fp += predicted and not truth
        self.fn += truth and not predicted
        self.topic_right += topic_ok

    def line(self, name: str) -> str:
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0
        topic = self.topic_right / self.n if self.n else 0.0
        return (f"  {name:<4} precision {precision:.2f} (of {self.tp + self.fp} flagged)  recall {recall:.2f} "
                f"(of {self.tp + self.fn} urgent)  topic {topic:.2f} (of {self.n})")


@dataclass
class Evaluation:
    by_language: dict[str, Scores] = field(default_factory=lambda: defaultdict(Scores))
    total: Scores = field(default_factory=Scores)

    def add(self, example: learned.Example, p_urgent: float, topic: str, threshold: float) -> None:
        for scores in (self.total, self.by_language[example.lang or "?"]):
            scores.add(example.urgent, p_urgent >= threshold, topic == example.topic)

    def lines(self) -> list[str]:
        return [self.total.line("all")] + [s.line(k) for k, s in sorted(self.by_language.items())]


def _topic(fitted: learned.TriageModel, example: learned.Example, chooser: TopicChooser | None) -> str:
    if chooser is None:
        return fitted.predict(example.text)[1]
    return chooser.choose(example.text, [example.lang] if example.lang else [], fitted)[0]


def cross_validate(examples: list[learned.Example], folds: int = 5, threshold: float = 0.5,
                   chooser: TopicChooser | None = None) -> Evaluation:
    """Each example predicted by a model that never saw it: urgency by the model alone, the
    topic by the model alone or, with a ``chooser``, by the topics step's phrases and model."""
    result = Evaluation()
    ordered = sorted(examples, key=lambda e: hashlib.sha256(e.text.encode()).hexdigest())
    for k in range(folds):
        test = ordered[k::folds]
        fitted = learned.train([e for i, e in enumerate(ordered) if i % folds != k])
        for example in test:
            result.add(example, fitted.predict(example.text)[0], _topic(fitted, example, chooser), threshold)
    return result


def evaluate_on(fitted: learned.TriageModel, examples: list[learned.Example], threshold: float = 0.5,
                chooser: TopicChooser | None = None) -> Evaluation:
    result = Evaluation()
    for example in examples:
        result.add(example, fitted.predict(example.text)[0], _topic(fitted, example, chooser), threshold)
    return result


def evaluation_report(labels: list[learned.Example], extra_holdout: list[learned.Example] | None = None,
                      folds: int = 5) -> list[str]:
    """The text `bridge triage eval` prints."""
    train = training_set(labels)
    held = [*shipped_holdout(), *(e for e in labels if held_out(e)), *(extra_holdout or [])]
    out = [f"training set: {len(train)} examples ({sum(e.source == 'agent' for e in train)} agent labels); "
           f"held out: {len(held)}"]
    chooser = TopicChooser(TopicSettings())
    out.append(f"== cross-validated ({folds} folds) on the training set: urgency by the model alone, "
               "topic by the built-in phrases and the model")
    out.extend(cross_validate(train, folds, chooser=chooser).lines())
    if held:
        out.append("== held out (never trained or tuned on), model trained on the whole training set")
        out.extend(evaluate_on(learned.train(train), held, chooser=chooser).lines())
    return out


# -- the `bridge triage` commands (run by bridge/cli.py through the registry) ---------------


async def train_command(store: Store | None, data_dir: Path) -> list[str]:
    """Train on the shipped set and the store's labels; write the next model version."""
    import asyncio

    labels = await collect(store) if store is not None else []
    fitted, path = await asyncio.to_thread(train_and_save, labels, data_dir)
    used = sum(not held_out(e) for e in labels)
    return [f"trained on {fitted.examples} examples ({used} agent labels, {len(labels) - used} kept out for "
            f"evaluation) in {fitted.meta.get('seconds')} s", f"model version {fitted.version}: {path}"]


async def eval_command(store: Store | None, extra: list[Path]) -> list[str]:
    """Per-language precision and recall, cross-validated and on the held-out split."""
    import asyncio

    labels = await collect(store) if store is not None else []
    more: list[learned.Example] = []
    for path in extra:
        for item in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
            more.append(learned.Example(text=str(item["text"]), lang=str(item["lang"]), urgent=bool(item["urgent"]),
                                        topic=str(item.get("topic") or "general"), source="holdout"))
    return await asyncio.to_thread(evaluation_report, labels, more)
