"""Triage quality on the labelled set: ``python -m bench.triage_quality [-v] [FILE]``.

Runs the language, urgency, topics and kb steps (with the example FAQ) over every
message of tests/data/labelled_messages.yaml, each in a fresh conversation, and prints
precision and recall of urgency (positive: urgent) and of FAQ matching (a prediction
counts when it names the expected entry), topic and language accuracy: for the whole set,
for the part the phrase lists and thresholds were tuned on, and for the held-out part.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridge.config import Settings
from bridge.model import Contact, Conversation, Message
from flows import kb, language, topics, urgency
from flows.templates import Templates
from flows.turn import FlowConfig, Turn

ROOT = Path(__file__).resolve().parent.parent
LABELLED = ROOT / "tests" / "data" / "labelled_messages.yaml"
FAQ = ROOT / "flows" / "data" / "faq.yaml"


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@dataclass
class Result:
    messages: int = 0
    urgency: Counts = field(default_factory=Counts)
    faq: Counts = field(default_factory=Counts)
    topic_right: int = 0
    language_right: int = 0
    by_language: dict[str, dict[str, Counts]] = field(default_factory=lambda: defaultdict(
        lambda: {"urgency": Counts(), "faq": Counts()}))
    misses: list[str] = field(default_factory=list)
    seconds: float = 0.0


def load(path: Path = LABELLED) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return list(data)


def flow_config(faq: Path = FAQ) -> FlowConfig:
    settings = Settings.model_validate({"flows": {"kb": {"path": str(faq)}}})
    return FlowConfig(settings=settings, channels=frozenset(), templates=Templates(), clock_ms=lambda: 0)


def triage(config: FlowConfig, steps: list[Any], text: str, channel: str = "api") -> Turn:
    """One message through the triage steps in a fresh conversation."""
    conversation = Conversation(id="bench-1", channel=channel, address="customer")
    turn = Turn(message=Message(kind="customer", channel=channel, address="customer", text=text),
                conversation=conversation, contact=Contact(id="c1"), config=config, now_ms=0, is_new=True)
    for step in steps:
        step(turn)
        if turn.stopped:
            break
    return turn


def evaluate(path: Path = LABELLED, faq: Path = FAQ, *, holdout: bool | None = None) -> Result:
    """Score the set; ``holdout`` True/False keeps only the held-out/tuned part."""
    config = flow_config(faq)
    steps = [language.build(config), urgency.build(config), topics.build(config), kb.build(config)]
    result = Result()
    started = time.perf_counter()
    for item in load(path):
        if holdout is not None and bool(item.get("holdout")) != holdout:
            continue
        text, lang = str(item["text"]), str(item["lang"])
        turn = triage(config, steps, text)
        result.messages += 1
        is_urgent = turn.conversation.urgency == "urgent"
        _count(result.urgency, bool(item["urgent"]), is_urgent)
        _count(result.by_language[lang]["urgency"], bool(item["urgent"]), is_urgent)
        expected = None if item.get("faq") in (None, "none") else str(item["faq"])
        got = (turn.notes.get("kb") or {}).get("id")
        for counts in (result.faq, result.by_language[lang]["faq"]):
            if got is not None and got == expected:
                counts.tp += 1
            else:
                counts.fp += got is not None
                counts.fn += expected is not None
                counts.tn += got is None and expected is None
        result.topic_right += turn.conversation.topic == (item.get("topic") or "")
        result.language_right += turn.conversation.language == lang
        if is_urgent != bool(item["urgent"]) or got != expected:
            result.misses.append(f"[{lang}] urgent={is_urgent} ({turn.conversation.urgency_reason or '-'}) "
                                 f"faq={got} (want urgent={item['urgent']} faq={expected}): {text}")
    result.seconds = time.perf_counter() - started
    return result


def _count(counts: Counts, truth: bool, predicted: bool) -> None:
    if truth and predicted:
        counts.tp += 1
    elif predicted:
        counts.fp += 1
    elif truth:
        counts.fn += 1
    else:
        counts.tn += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("file", nargs="?", type=Path, default=LABELLED)
    parser.add_argument("--faq", type=Path, default=FAQ)
    parser.add_argument("-v", "--verbose", action="store_true", help="list every misclassified message")
    args = parser.parse_args(argv)
    for title, part in (("all messages", None), ("tuned on (phrases and thresholds were adjusted on these)", False),
                        ("held out (never tuned on)", True)):
        r = evaluate(args.file, args.faq, holdout=part)
        if not r.messages:
            continue
        print(f"== {title}: {r.messages} labelled messages, {r.seconds * 1000 / r.messages:.2f} ms per message")
        print(f"urgency:      precision {r.urgency.precision:.3f}  recall {r.urgency.recall:.3f}  "
              f"(tp {r.urgency.tp}, fp {r.urgency.fp}, fn {r.urgency.fn})")
        print(f"faq matching: precision {r.faq.precision:.3f}  recall {r.faq.recall:.3f}  "
              f"(right {r.faq.tp}, wrong or unwanted {r.faq.fp}, missed {r.faq.fn})")
        print(f"topic accuracy {r.topic_right / r.messages:.3f}, "
              f"language accuracy {r.language_right / r.messages:.3f}")
        if part is None:
            for lang, counts in sorted(r.by_language.items()):
                u, f = counts["urgency"], counts["faq"]
                print(f"  {lang}: urgency P {u.precision:.2f} R {u.recall:.2f}   "
                      f"faq P {f.precision:.2f} R {f.recall:.2f}")
            if args.verbose:
                for line in r.misses:
                    print("  miss", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
