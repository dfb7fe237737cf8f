"""Step ``kb``: answer common questions from a knowledge base (FAQ YAML file).

Each entry has question variants per language and an answer per language. A message is
compared with every variant (rapidfuzz): Latin and Cyrillic text by a blend of
``token_set_ratio`` (the variant's words are all there) and ``token_sort_ratio`` (and
not much else), Chinese by ``partial_ratio`` blended with ``ratio``. A best score of at
least ``min_score``, ahead of the best other entry by ``min_margin``, is confident: the
bot answers in the customer's language, offers a way to reach a person, and stops the
pipeline. Urgent messages are never answered by the bot alone: the match is left in
``turn.notes["kb"]`` for the agents. Once the customer asked for a person or an agent
answered, the bot keeps quiet in that conversation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rapidfuzz import fuzz

from bridge.errors import ConfigError
from bridge.flowstate import KbState, flow_state
from bridge.model import Button
from bridge.turn import FlowConfig, Step, Turn
from flows.common import is_auto, is_customer_text, render, step_settings
from flows.phrases import LANGUAGES, PhraseMatcher, builtin, has_cjk, normalize

HANDOFF_VALUE = "handoff"


class KbSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: Path  # the FAQ file; relative to the config file's directory, e.g. flows/data/faq.yaml
    min_score: float = Field(80.0, ge=0, le=100)
    min_margin: float = Field(5.0, ge=0, le=100)
    max_words: int = Field(30, ge=1)  # longer messages are cases, not questions
    handoff_phrases: dict[str, list[str]] = {}  # language -> extra "talk to a person" phrases


class FaqEntry(BaseModel):
    id: str
    questions: dict[str, list[str]]
    answer: dict[str, str]


@dataclass(frozen=True)
class Match:
    entry: FaqEntry
    score: float
    variant: str


class KnowledgeBase:
    """FAQ entries and the matcher over their question variants."""

    def __init__(self, entries: list[FaqEntry], *, min_score: float = 80.0, min_margin: float = 5.0,
                 max_words: int = 30) -> None:
        self.entries = entries
        self.min_score = min_score
        self.min_margin = min_margin
        self.max_words = max_words
        self._latin: list[tuple[str, int]] = []
        self._cjk: list[tuple[str, int]] = []
        for index, entry in enumerate(entries):
            for variants in entry.questions.values():
                for variant in variants:
                    norm = normalize(variant)
                    if norm:
                        (self._cjk if has_cjk(norm) else self._latin).append((norm, index))

    @classmethod
    def load(cls, path: Path, **options: float) -> KnowledgeBase:
        """Read a FAQ file; a problem raises ConfigError naming ``flows.kb.path``."""
        key = "flows.kb.path"
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError([f"{key}: no such file {str(path)!r}"]) from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError([f"{key}: {path} cannot be read: {exc}"]) from None
        if not isinstance(raw, list):
            raise ConfigError([f"{key}: {path} must hold a list of entries (id, questions, answer)"])
        entries: list[FaqEntry] = []
        problems: list[str] = []
        for i, item in enumerate(raw):
            try:
                entries.append(FaqEntry.model_validate(item))
            except ValidationError as exc:
                problems.extend(f"{key}: {path} entry {i}: {'.'.join(map(str, e['loc']))}: {e['msg']}"
                                for e in exc.errors())
        ids = [e.id for e in entries]
        problems.extend(f"{key}: {path}: entry id {d!r} is used twice" for d in sorted({i for i in ids
                                                                                     if ids.count(i) > 1}))
        if problems:
            raise ConfigError(problems)
        return cls(entries, **options)  # type: ignore[arg-type]

    def scores(self, text: str) -> list[Match]:
        """The best score of each entry for ``text``, best first."""
        norm = normalize(text)
        if not norm:
            return []
        best: dict[int, tuple[float, str]] = {}
        if has_cjk(norm):
            compact = norm.replace(" ", "")
            for variant, index in self._cjk:
                v = variant.replace(" ", "")
                score = 0.75 * fuzz.partial_ratio(v, compact) + 0.25 * fuzz.ratio(v, compact)
                if score > best.get(index, (-1.0, ""))[0]:
                    best[index] = (score, variant)
        else:
            for variant, index in self._latin:
                score = 0.6 * fuzz.token_set_ratio(variant, norm) + 0.4 * fuzz.token_sort_ratio(variant, norm)
                if score > best.get(index, (-1.0, ""))[0]:
                    best[index] = (score, variant)
        found = [Match(self.entries[i], round(s, 1), v) for i, (s, v) in best.items()]
        found.sort(key=lambda m: -m.score)
        return found

    def match(self, text: str) -> Match | None:
        """The confident match for ``text``, or None."""
        if len(normalize(text).split()) > self.max_words:
            return None
        found = self.scores(text)
        if not found or found[0].score < self.min_score:
            return None
        if len(found) > 1 and found[0].score - found[1].score < self.min_margin:
            return None
        return found[0]


def build(config: FlowConfig) -> Step:
    settings = step_settings(config, "kb", KbSettings)
    path = settings.path if settings.path.is_absolute() else config.settings.config_dir / settings.path
    kb = KnowledgeBase.load(path, min_score=settings.min_score, min_margin=settings.min_margin,
                            max_words=settings.max_words)
    handoff_phrases = [("handoff", w, lang) for lang in LANGUAGES for w in builtin(lang).get("handoff") or []]
    handoff_phrases += [("handoff", w, lang) for lang, words in settings.handoff_phrases.items() for w in words]
    handoff = PhraseMatcher(handoff_phrases, fuzzy_min_len=100)

    def wants_person(turn: Turn) -> bool:
        message = turn.message
        if message.data.get("button") == HANDOFF_VALUE or message.text.strip().lower() in (HANDOFF_VALUE, "/agent"):
            return True
        norm = normalize(message.text)
        return len(norm.split()) <= 8 and bool(handoff.find(norm, normalized=True))

    def kb_step(turn: Turn) -> None:
        message = turn.message
        if message.kind != "customer" or is_auto(message):
            return
        conversation = turn.conversation
        state = flow_state(conversation, "kb", KbState)
        if wants_person(turn):
            state.handoff = True
            turn.notes["handoff"] = True
            return
        if not is_customer_text(turn):
            return
        if state.handoff or conversation.first_response_ms or conversation.assignee:
            return
        found = kb.match(turn.message.text)
        if found is None:
            return
        turn.notes["kb"] = {"id": found.entry.id, "score": found.score}
        if conversation.urgency == "urgent":
            return  # a person answers urgent messages; the suggestion travels in the notes
        language = turn.language
        answer = found.entry.answer.get(language) or found.entry.answer.get(
            config.templates.default_language) or next(iter(found.entry.answer.values()))
        with_buttons = config.can(conversation.channel).buttons
        hint = render(turn, "kb_handoff_button" if with_buttons else "kb_handoff_text")
        buttons = [Button(label=render(turn, "kb_button"), value=HANDOFF_VALUE)] if with_buttons else None
        turn.reply(render(turn, "kb_answer", answer=answer, handoff=hint), buttons=buttons,
                   data={"kb": found.entry.id})
        state.answered.append(found.entry.id)
        turn.stop()

    return kb_step
