"""Triage quality on the labelled set stays where it was measured (a regression guard)."""

from __future__ import annotations

import pytest

from bench.triage_quality import evaluate, load, main


def test_labelled_set_is_big_and_covers_five_languages() -> None:
    items = load()
    assert len(items) >= 200
    assert {i["lang"] for i in items} == {"en", "zh", "ru", "tl", "ms"}
    assert sum("mixed" in (i.get("tags") or []) for i in items) >= 5
    assert sum("typo" in (i.get("tags") or []) for i in items) >= 10


def test_precision_holds_everywhere_and_recall_on_the_tuned_part() -> None:
    tuned = evaluate(holdout=False)
    assert tuned.urgency.precision >= 0.97 and tuned.urgency.recall >= 0.97
    assert tuned.faq.precision >= 0.97 and tuned.faq.recall >= 0.75
    held = evaluate(holdout=True)
    # never tuned on: the bot must not answer wrongly nor escalate needlessly
    assert held.urgency.precision >= 0.9 and held.faq.precision >= 0.8


def test_bench_command_prints_the_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "urgency:      precision" in out and "faq matching: precision" in out and "held out" in out
