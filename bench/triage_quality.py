"""Triage quality: ``python -m bench.triage_quality [-v] [--set FILE]``.

Runs the triage step as ``config.example.yaml`` builds it (language, urgency with the
rules and the shipped model, topics) and, for FAQ matching, the kb step with the example
FAQ, over every message of a labelled set, each in a fresh conversation. Prints:

- on tests/data/triage_fresh.yaml (the unseen set: written before the second round of
  tuning, never trained or tuned on): urgency precision and recall (positive: urgent;
  "check urgency" counts as routine), topic and language accuracy, per language, each with
  the number of messages it rests on;
- the same on tests/data/triage_holdout.yaml (the first round's held-out set: never
  trained on, but read while tuning the second round, so no longer unseen);
- on tests/data/labelled_messages.yaml (its ``holdout: true`` part never trained on):
  the same plus FAQ matching;
- the cost of triaging long messages, in milliseconds per 1,000 characters.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridge.config import Settings, load_raw
from bridge.model import Contact, Conversation, Message
from bridge.templates import Templates
from bridge.turn import FlowConfig, Step, Turn
from flows import kb, triage

ROOT = Path(__file__).resolve().parent.parent
FRESH = ROOT / "tests" / "data" / "triage_fresh.yaml"
HOLDOUT = ROOT / "tests" / "data" / "triage_holdout.yaml"
LABELLED = ROOT / "tests" / "data" / "labelled_messages.yaml"
FAQ = ROOT / "flows" / "data" / "faq.yaml"
EXAMPLE = ROOT / "config.example.yaml"
_LOOP = asyncio.new_event_loop()  # the steps are async (they wait for the model once)


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

    def add(self, truth: bool, predicted: bool) -> None:
        if truth and predicted:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif truth:
            self.fn += 1
        else:
            self.tn += 1


@dataclass
class Part:
    messages: int = 0
    urgency: Counts = field(default_factory=Counts)
    check: int = 0  # routine messages sent to agents as "check urgency"
    check_urgent: int = 0  # urgent messages missed as urgent but sent as "check urgency"
    faq: Counts = field(default_factory=Counts)
    topic_right: int = 0
    topic_labelled: int = 0  # messages with a topic label (an empty one is not scored)
    language_right: int = 0


@dataclass
class Result:
    total: Part = field(default_factory=Part)
    by_language: dict[str, Part] = field(default_factory=lambda: defaultdict(Part))
    misses: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def messages(self) -> int:
        return self.total.messages

    @property
    def urgency(self) -> Counts:
        return self.total.urgency

    @property
    def faq(self) -> Counts:
        return self.total.faq


def load(path: Path = LABELLED) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return list(data)


def example_settings(faq: Path = FAQ) -> Settings:
    """config.example.yaml's settings (its channels left out: they need secrets)."""
    raw = load_raw(EXAMPLE)
    raw.pop("channels", None)
    raw.pop("redis", None)
    raw.setdefault("flows", {})["kb"] = {**(raw["flows"].get("kb") or {}), "path": str(faq)}
    return Settings.model_validate(raw)


def flow_config(faq: Path = FAQ) -> FlowConfig:
    settings = example_settings(faq)
    return FlowConfig(settings=settings, channels=frozenset({"api"}), clock_ms=lambda: 0,
                      templates=Templates(settings.replies, settings.triage.default_language))


def build_steps(config: FlowConfig, with_kb: bool = True) -> list[Step]:
    steps = [triage.build(config)]
    return [*steps, kb.build(config)] if with_kb else steps


def run(config: FlowConfig, steps: list[Step], text: str, channel: str = "api") -> Turn:
    """One message through the steps in a fresh conversation."""
    conversation = Conversation(id="bench-1", channel=channel, address="customer")
    turn = Turn(message=Message(kind="customer", channel=channel, address="customer", text=text),
                conversation=conversation, contact=Contact(id="c1"), config=config, now_ms=0, is_new=True)
    for step in steps:
        result = step(turn)
        if inspect.isawaitable(result):
            _LOOP.run_until_complete(result)
        if turn.stopped:
            break
    return turn


def evaluate(path: Path = LABELLED, faq: Path = FAQ, *, holdout: bool | None = None) -> Result:
    """Score a set; ``holdout`` True/False keeps only the part marked (or not) ``holdout``."""
    config = flow_config(faq)
    steps = build_steps(config)
    result = Result()
    started = time.perf_counter()
    for item in load(path):
        if holdout is not None and bool(item.get("holdout")) != holdout:
            continue
        text, lang = str(item["text"]), str(item["lang"])
        turn = run(config, steps, text)
        conv = turn.conversation
        is_urgent = conv.urgency == "urgent"
        truth = bool(item["urgent"])
        labelled = item.get("topic") is not None and str(item["topic"]) != ""
        want_topic = str(item.get("topic") or "general")
        expected = None if item.get("faq") in (None, "none") else str(item["faq"])
        got = (turn.notes.get("kb") or {}).get("id")
        for part in (result.total, result.by_language[lang]):
            part.messages += 1
            part.urgency.add(truth, is_urgent)
            part.check += bool(turn.notes.get("check_urgency")) and not truth
            part.check_urgent += bool(turn.notes.get("check_urgency")) and truth and not is_urgent
            part.topic_labelled += labelled
            part.topic_right += labelled and (conv.topic or "general") == want_topic
            part.language_right += conv.language == lang
            if "faq" in item:
                if got is not None and got == expected:
                    part.faq.tp += 1
                else:
                    part.faq.fp += got is not None
                    part.faq.fn += expected is not None
                    part.faq.tn += got is None and expected is None
        if is_urgent != truth or (labelled and (conv.topic or "general") != want_topic) or conv.language != lang:
            result.misses.append(f"[{lang}->{conv.language}] urgent={is_urgent} want {truth} "
                                 f"topic={conv.topic or 'general'} want {want_topic} "
                                 f"({conv.urgency_reason or '-'}): {text}")
    result.seconds = time.perf_counter() - started
    return result


def _share(right: int, of: int) -> str:
    return f"{right / of:.2f} (of {of})" if of else "- (no topic labels)"


def _line(name: str, part: Part, faq: bool) -> str:
    u, n = part.urgency, part.messages
    text = (f"  {name:<4} urgency P {u.precision:.2f} (of {u.tp + u.fp} flagged) "
            f"R {u.recall:.2f} (of {u.tp + u.fn} urgent)  check-urgency: {part.check} routine, "
            f"{part.check_urgent} missed urgent  "
            f"topic {_share(part.topic_right, part.topic_labelled)}  language {part.language_right / n:.2f} (of {n})")
    if faq:
        text += f"  faq P {part.faq.precision:.2f} R {part.faq.recall:.2f}"
    return text


def report(title: str, result: Result, *, faq: bool, verbose: bool) -> None:
    n = result.messages
    print(f"== {title}: {n} messages, {result.seconds * 1000 / max(n, 1):.2f} ms per message")
    print(_line("all", result.total, faq))
    for lang, part in sorted(result.by_language.items()):
        print(_line(lang, part, faq))
    if verbose:
        for line in result.misses:
            print("    miss", line)


def cost_per_kchar(sizes: tuple[int, ...] = (1_000, 10_000, 100_000)) -> list[tuple[int, float]]:
    """Milliseconds per 1,000 characters of triaging messages of these sizes (triage reads a
    capped start and end, so the time per message stays bounded)."""
    config = flow_config()
    steps = build_steps(config, with_kb=False)
    unit = "Our SMT line is down since the morning, 生产线停了, линия стоит, huminto ang linya. "
    out = []
    for size in sizes:
        text = (unit * (size // len(unit) + 1))[:size]
        run(config, steps, text)  # warm
        started = time.perf_counter()
        rounds = 5
        for _ in range(rounds):
            run(config, steps, text)
        seconds = (time.perf_counter() - started) / rounds
        out.append((size, seconds * 1000 / (size / 1000)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--set", type=Path, default=None, help="score only this labelled file")
    parser.add_argument("--faq", type=Path, default=FAQ)
    parser.add_argument("-v", "--verbose", action="store_true", help="list every misclassified message")
    parser.add_argument("--no-cost", action="store_true", help="skip the long-message timing")
    args = parser.parse_args(argv)
    if args.set is not None:
        report(str(args.set), evaluate(args.set, args.faq), faq=False, verbose=args.verbose)
        return 0
    report(f"UNSEEN: fresh held-out set, written before tuning, never trained or tuned on ({FRESH.name})",
           evaluate(FRESH, args.faq), faq=False, verbose=args.verbose)
    report(f"first round's held-out set, never trained on but read while tuning ({HOLDOUT.name})",
           evaluate(HOLDOUT, args.faq), faq=False, verbose=args.verbose)
    report(f"held-out part of {LABELLED.name} (never trained on)",
           evaluate(LABELLED, args.faq, holdout=True), faq=True, verbose=args.verbose)
    report(f"trained-on part of {LABELLED.name} (the model saw these)",
           evaluate(LABELLED, args.faq, holdout=False), faq=True, verbose=False)
    if not args.no_cost:
        print("== cost of long messages")
        for size, ms in cost_per_kchar():
            print(f"  {size:>7} characters: {ms:.3f} ms per 1,000 characters ({ms * size / 1000:.1f} ms per message)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
