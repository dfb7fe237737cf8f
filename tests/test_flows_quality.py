"""Triage quality on the labelled sets stays where it was measured (a regression guard)."""

from __future__ import annotations

import pytest

from bench.triage_quality import FRESH, HOLDOUT, evaluate, load, main


def test_labelled_sets_are_big_and_cover_five_languages() -> None:
    items = load()
    assert len(items) >= 200
    assert {i["lang"] for i in items} == {"en", "zh", "ru", "tl", "ms"}
    assert sum("mixed" in (i.get("tags") or []) for i in items) >= 5
    assert sum("typo" in (i.get("tags") or []) for i in items) >= 10
    for path in (FRESH, HOLDOUT):
        held = load(path)
        for lang in ("en", "zh", "ru", "tl", "ms"):
            assert sum(i["lang"] == lang for i in held) >= 40
    # the unseen set shares no message with anything the model trains on
    from flows.model import shipped_examples

    trained = {e.text for e in shipped_examples()}
    assert not trained & {i["text"] for i in load(FRESH)}


def test_the_unseen_set_meets_the_bar_in_every_language() -> None:
    """The bar of issue 10 on tests/data/triage_fresh.yaml (never trained or tuned on):
    urgency recall >= 0.90 at precision >= 0.80, topic >= 0.75, language >= 0.97."""
    result = evaluate(FRESH)
    # measured 2026-12-03: P 0.93 R 0.97, topic 0.90 (0.88-0.93 per language), language 1.00
    assert result.urgency.recall >= 0.9 and result.urgency.precision >= 0.8
    assert result.total.topic_right / result.total.topic_labelled >= 0.85
    assert result.total.language_right / result.messages >= 0.97
    for lang, part in result.by_language.items():
        assert part.urgency.recall >= 0.8, lang
        assert part.topic_right / part.topic_labelled >= 0.75, lang
        assert part.language_right / part.messages >= 0.95, lang


def test_the_first_held_out_set_stays_where_it_was() -> None:
    result = evaluate(HOLDOUT)
    # measured 2026-12-03: P 0.98 R 0.96, topic 0.79 (it was 0.67 before the second round)
    assert result.urgency.recall >= 0.9 and result.urgency.precision >= 0.8
    assert result.total.topic_right / result.total.topic_labelled >= 0.75
    for lang, part in result.by_language.items():
        assert part.urgency.recall >= 0.8, lang
    assert result.total.language_right / result.messages >= 0.97


def test_precision_holds_on_the_original_set() -> None:
    tuned = evaluate(holdout=False)
    assert tuned.urgency.precision >= 0.95 and tuned.urgency.recall >= 0.95
    assert tuned.faq.precision >= 0.97 and tuned.faq.recall >= 0.75
    held = evaluate(holdout=True)
    assert held.urgency.precision >= 0.9 and held.faq.precision >= 0.8


def test_bench_command_prints_the_figures_with_their_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--no-cost"]) == 0
    out = capsys.readouterr().out
    assert "UNSEEN: fresh held-out set" in out and "read while tuning" in out
    assert "never trained or tuned on" in out
    assert "urgency P" in out and "(of 18 urgent)" in out and "topic" in out and "language" in out
    for lang in ("en", "zh", "ru", "tl", "ms"):
        assert f"  {lang}   urgency P" in out
