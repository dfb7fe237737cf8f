"""Property-based tests (hypothesis) over triage: whatever a customer writes (any script,
punctuation soup, phrase fragments, huge messages), triage answers with a language, an
urgency, a topic and a reason, and never raises. How its cost grows with the input is
printed by ``python -m bench.triage_quality`` (it reads a capped prefix and suffix)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.turn import FlowConfig, Step
from flows import triage
from flows.phrases import _WORD, Hit, PhraseMatcher, builtin, normalize
from tests.test_flows_helpers import Chat, make_config

FAST = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

PIECES = ["line", "down", "stopped", "not", "urgent", "no rush", "не", "срочно", "линия стоит", "不用急", "紧急",
          "停线", "walang", "pagmamadali", "tidak", "mendesak", "running again", "已恢复", "order", "12345", "#",
          "!", "?", "...", "\n", " ", "\u200b", "🙂", "é", "ё", "-", "'", "’", "Manila", "Penang", "OK lang"]
TEXT = st.one_of(st.text(max_size=400), st.lists(st.sampled_from(PIECES), max_size=60).map(" ".join))


@FAST
@given(TEXT)
def test_the_phrase_matcher_never_raises_and_hits_lie_inside_the_text(text: str) -> None:
    phrases = [(group, phrase, "en") for group, items in (builtin("en").get("urgent") or {}).items()
               for phrase in items][:200]
    for hit in PhraseMatcher(phrases).find(text):
        assert 0 <= hit.start <= hit.end


def _one_by_one(matcher: PhraseMatcher, text: str) -> list[Hit]:
    """The matcher's phrases searched one at a time, as the matcher did before it learned to
    skip phrases and score fuzzy ones in groups: the oracle its results must equal."""
    from rapidfuzz import fuzz, process

    norm = normalize(text)
    spans = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(norm)]
    hits: list[Hit] = []
    for phrase in matcher._phrases if norm else []:
        if phrase.pattern is None:
            if (pos := norm.find(phrase.text)) >= 0:
                hits.append(Hit(phrase.group, phrase.text, phrase.language, pos, pos + len(phrase.text)))
            continue
        if found := phrase.pattern.search(norm):
            hits.append(Hit(phrase.group, phrase.text, phrase.language, found.start(), found.end()))
            continue
        n = phrase.words
        if not phrase.fuzzy or len(spans) < n:
            continue
        runs = [" ".join(w for w, _, _ in spans[i:i + n]) for i in range(len(spans) - n + 1)]
        best = None
        for candidates in (runs, [r[:len(phrase.text) + 1] for r in runs]):
            one = process.extractOne(phrase.text, candidates, scorer=fuzz.ratio, score_cutoff=matcher.fuzzy_cutoff)
            if one is not None and (best is None or one[1] > best[1]):
                best = one
        if best is not None:
            start, end = spans[best[2]][1], spans[best[2] + n - 1][2]
            hits.append(Hit(phrase.group, phrase.text, phrase.language, start, end, fuzzy=True))
    return hits


@cache
def _matchers() -> list[PhraseMatcher]:
    lists = []
    for lang in ("en", "ru", "tl"):
        data = builtin(lang)
        lists.append([(f"{key}:{group}", phrase, lang) for key in ("urgent", "topics")
                      for group, items in (data.get(key) or {}).items() for phrase in items])
    return [PhraseMatcher(phrases, fuzzy_cutoff=cutoff) for phrases in lists for cutoff in (88.0, 75.0)]


def _typo(phrase: str, edits: list[tuple[int, str]]) -> str:
    chars = list(phrase)
    for at, letter in edits:
        if chars:
            chars[at % len(chars)] = letter
    return "".join(chars)


PHRASES = sorted({p for lang in ("en", "ru", "tl") for key in ("urgent", "topics")
                  for items in (builtin(lang).get(key) or {}).values() for p in items})
TYPOED = st.builds(_typo, st.sampled_from(PHRASES),
                   st.lists(st.tuples(st.integers(0, 40), st.sampled_from("aeiostnrлиа ")), max_size=2))


CUSTOMERS = [row["text"] for row in yaml.safe_load((Path(__file__).parent / "data" / "triage_fresh.yaml")
                                                  .read_text(encoding="utf-8"))]


@settings(FAST, max_examples=150)
@given(st.lists(st.one_of(TYPOED, st.sampled_from(PIECES), st.sampled_from(CUSTOMERS), st.text(max_size=20)),
                max_size=30).map(" ".join))
def test_the_phrase_matcher_finds_what_searching_phrase_by_phrase_finds(text: str) -> None:
    for matcher in _matchers():
        assert matcher.find(text) == _one_by_one(matcher, text)


@cache
def _triage() -> tuple[FlowConfig, Step]:
    """Built once: language detector and model are loaded once, as in a running bridge."""
    config = make_config({})
    return config, triage.build(config)


@FAST
@given(TEXT, st.integers(min_value=0, max_value=3))
async def test_triage_decides_for_any_message(text: str, repeat_power: int) -> None:
    config, step = _triage()
    chat = Chat(config, [step])
    turn = await chat.say(text * (10 ** repeat_power))
    conversation = turn.conversation
    assert conversation.urgency in ("urgent", "routine")
    if text.strip():  # words to read (a blank message is left to the defaults)
        assert conversation.language and conversation.topic
