"""Property-based tests (hypothesis) over triage: whatever a customer writes (any script,
punctuation soup, phrase fragments, huge messages), triage answers with a language, an
urgency, a topic and a reason, and never raises. How its cost grows with the input is
printed by ``python -m bench.triage_quality`` (it reads a capped prefix and suffix)."""

from __future__ import annotations

from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.turn import FlowConfig, Step
from flows import triage
from flows.phrases import PhraseMatcher, builtin
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
