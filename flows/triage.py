"""Triage: which language, is it urgent, what is it about.

By default the ``triage`` step (`Triage`) runs the ``language``, ``urgency`` and
``topics`` steps in one: built-in multilingual phrases, the learned model and
``triage.urgent_keywords`` (each in its own language). A config opts out with
``flows: {triage: {multilingual: false}}`` and gets `KeywordTriage`, config keywords
only: keywords match case-insensitively on word boundaries; in languages written without
spaces (Chinese) they match anywhere. The matched keyword is recorded as the reason.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import msgspec
from pydantic import BaseModel, ConfigDict

from bridge.model import Message
from bridge.turn import FlowConfig, Step, Turn

_UNSPACED = {"zh", "ja", "th"}
# A text longer than this is read in a thread of its own: the phrases (fuzzy ones too) and
# the model cost milliseconds per message, up to about 8.5 ms for the 2,000 characters they
# read of a long mail (`flows.model.capped`), which on the event loop would hold every other
# conversation that long; 250 characters cost about 3 ms, less than the interpreter's own
# switch interval. One thread: at most one partition's long text at a time (the GIL allows
# no more); the others wait their turn, never the loop.
OFF_LOOP_CHARS = 250
_reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="triage")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")


def _pattern(language: str, words: list[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(w.strip()) for w in sorted(words, key=len, reverse=True))
    if language in _UNSPACED:
        return re.compile(f"(?:{alternatives})", re.IGNORECASE)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def normalize_language(tag: str) -> str:
    """'en-US' -> 'en', 'zh-hans' -> 'zh'."""
    return tag.replace("_", "-").split("-", 1)[0].lower()


class KeywordTriage:
    def __init__(self, config: FlowConfig) -> None:
        triage = config.settings.triage
        self.languages = triage.languages
        self.default_language = triage.default_language
        self.rules = [(lang, _pattern(lang, words)) for lang, words in triage.urgent_keywords.items() if words]

    def match(self, text: str) -> tuple[str, str] | None:
        """(language, keyword) of the first urgent keyword in ``text``."""
        for language, pattern in self.rules:
            found = pattern.search(text)
            if found:
                return language, found.group(0)
        return None

    def guess_language(self, turn: Turn, matched: str | None) -> str:
        sender = turn.message.sender
        hint = normalize_language(sender.language) if sender and sender.language else ""
        if hint in self.languages:
            return hint
        if matched:
            return matched
        text = turn.message.text
        if _CJK.search(text) and "zh" in self.languages:
            return "zh"
        if _CYRILLIC.search(text) and "ru" in self.languages:
            return "ru"
        return self.default_language

    def __call__(self, turn: Turn) -> None:
        if turn.message.kind != "customer":
            return
        hit = self.match(turn.message.text)
        conversation = turn.conversation
        if not conversation.language:
            conversation.language = self.guess_language(turn, hit[0] if hit else None)
        if hit and conversation.urgency != "urgent":
            conversation.urgency = "urgent"
            conversation.urgency_reason = f"keyword {hit[1]!r} ({hit[0]})"
            turn.notes["escalate"] = True


class _Part(NamedTuple):
    ready: Callable[[Turn], Awaitable[None]] | None  # waits for the learned model (on the loop)
    decide: Callable[[Turn], None]  # reads the text: CPU only, safe in a thread


def _part(step: Step) -> _Part:
    from flows.model import AfterModel

    if isinstance(step, AfterModel):
        return _Part(step.ready, step.decide)
    return _Part(None, step)  # type: ignore[arg-type]  # the language steps are synchronous


class Triage:
    """The default ``triage`` step: the ``language``, ``urgency`` and ``topics`` steps in one.

    Language detection needs lingua (the ``flows`` extra); without it the guess of
    `KeywordTriage` (platform hint, script) is used. Urgency covers the built-in phrases
    per language, ``triage.urgent_keywords``, VIP, repeats and channel (see
    flows/urgency.py); topics choose the email queue (flows/topics.py).
    """

    def __init__(self, config: FlowConfig) -> None:
        from flows import topics, urgency

        steps: list[Step] = []
        try:
            from flows import language

            steps.append(language.build(config))
        except ImportError:
            steps.append(_GuessLanguage(KeywordTriage(config)))
        steps.append(urgency.build(config))
        steps.append(topics.build(config))
        self.parts = [_part(step) for step in steps]
        from flows import llm

        self.config = config
        self.llm_job = llm.job(config)  # None unless flows.llm is configured

    async def __call__(self, turn: Turn) -> None:
        from flows import labels, llm
        from flows.common import is_customer_text

        message = turn.message
        if message.kind == "command" and message.name in ("urgency", "topic"):
            labels.record_correction(turn)  # an agent's correction: a label for the model
            return
        if message.kind == "command" and message.name == llm.COMMAND:
            llm.apply(turn, message.data)  # the optional LLM's second reading, back from its job
            return
        for part in self.parts:
            if part.ready is not None:
                await part.ready(turn)
        if len(message.text) > OFF_LOOP_CHARS:  # the turn is this partition's alone while it waits
            await asyncio.get_running_loop().run_in_executor(_reader, self._decide, turn)
        else:
            self._decide(turn)
        if is_customer_text(turn):
            labels.remember_text(turn)
            self._second_reading(turn)

    def _decide(self, turn: Turn) -> None:
        for part in self.parts:
            part.decide(turn)

    def _second_reading(self, turn: Turn) -> None:
        """The optional LLM reads the message as a job: the partition does not wait, and
        the verdict comes back as the ``triage_llm`` command."""
        if self.llm_job is None or self.config.jobs is None:
            return
        message = msgspec.structs.replace(turn.message, conversation_id=turn.conversation.id)
        llm_job = self.llm_job

        async def verdict() -> Message | None:
            command = await llm_job(message)
            return None if command is None else msgspec.structs.replace(command, dedupe_key=f"llm:{message.id}")

        turn.start_job(verdict(), "triage_llm")


class _GuessLanguage:
    def __init__(self, keywords: KeywordTriage) -> None:
        self.keywords = keywords

    def __call__(self, turn: Turn) -> None:
        if turn.message.kind == "customer" and not turn.conversation.language:
            hit = self.keywords.match(turn.message.text)
            turn.conversation.language = self.keywords.guess_language(turn, hit[0] if hit else None)


class TriageFlowSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    multilingual: bool = True  # false: config keywords only (no language detection, phrases, model, topics)


def build(config: FlowConfig) -> Step:
    """The multilingual `Triage` unless ``flows.triage.multilingual`` is false (`KeywordTriage`)."""
    from flows.common import step_settings

    if step_settings(config, "triage", TriageFlowSettings).multilingual:
        return Triage(config)
    return KeywordTriage(config)
