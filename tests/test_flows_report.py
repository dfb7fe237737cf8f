"""The report, generated from a seeded data set in a real Redis, opened and checked."""

from __future__ import annotations

import csv
import datetime as dt
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bridge.model import Conversation, Message, Sender
from bridge.ops import Ops
from bridge.report import RedisSource, write_report
from bridge.store import Store
from tests.harness import commit

DAY0 = int(dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp() * 1000)
MIN = 60_000
HOUR = 3_600_000


class Page(HTMLParser):
    """Collects the charts (svg), their bars and the data tables of the report."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: list[str] = []
        self.bars: dict[str, list[dict[str, str]]] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.kpis: dict[str, str] = {}
        self.external: list[str] = []
        self._chart = ""
        self._table = ""
        self._row: list[str] | None = None
        self._cell: str | None = None
        self._kpi = ""
        self._in_b = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in ("script", "link", "img") or (tag != "a" and a.get("src")):
            self.external.append(tag)
        if tag == "svg":
            self._chart = a["data-chart"]
            self.charts.append(self._chart)
            self.bars[self._chart] = []
        elif tag == "rect" and ("bar" in a.get("class", "") or "segment" in a.get("class", "")):
            self.bars[self._chart].append(a)
        elif tag == "table":
            self._table = a["data-table"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = ""
        elif tag == "div" and a.get("data-kpi"):
            self._kpi = a["data-kpi"]
        elif tag == "b" and self._kpi:
            self._in_b = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = ""
        elif tag == "b":
            self._in_b = False
            self._kpi = ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell += data
        if self._in_b:
            self.kpis[self._kpi] = data


def conv(n: int, channel: str, *, day: int, urgency: str = "routine", first_min: float | None = None,
         resolved_h: float | None = None, topic: str = "", language: str = "en",
         breaches: list[tuple[str, str]] = (), score: int | None = None) -> Conversation:  # type: ignore[assignment]
    created = DAY0 + day * 24 * HOUR + 9 * HOUR
    data: dict[str, Any] = {}
    if breaches:
        data["sla"] = {"events": [{"kind": k, "level": "breach", "urgency": urgency} for k, _ in breaches]
                       + [{"kind": "first_response", "level": "warning", "urgency": urgency}]}
    if score is not None:
        data["survey"] = {"score": score, "comment": "quick" if score > 3 else "slow"}
    return Conversation(id=f"h{n:03d}-1", channel=channel, address=f"addr{n}", status="resolved" if resolved_h
                        else "open", urgency=urgency, topic=topic, language=language, created_ms=created,
                        updated_ms=created, first_response_ms=created + int(first_min * MIN) if first_min else 0,
                        resolved_ms=created + int(resolved_h * HOUR) if resolved_h else 0, data=data, messages=2)


SEED = [
    conv(1, "telegram", day=0, urgency="urgent", first_min=3, resolved_h=2, topic="quality", language="zh",
         breaches=[("resolution", "")], score=5),
    conv(2, "telegram", day=0, first_min=10, resolved_h=20, topic="billing", language="ru", score=4),
    conv(3, "email", day=1, first_min=45, resolved_h=30, topic="billing", language="en", score=2),
    conv(4, "widget", day=1, urgency="urgent", first_min=90, topic="quality", language="tl",
         breaches=[("first_response", ""), ("resolution", "")]),
    conv(5, "email", day=3, first_min=300, resolved_h=100, topic="shipping", language="ms", score=5),
    conv(6, "telegram", day=3, language="en"),
]
SEED[5].data["kb"] = {"answered": ["payment_methods"]}


async def seed(redis: aioredis.Redis) -> None:
    store = Store(redis, partitions=8)
    ops: Ops = []
    for c in SEED:
        ops.extend(store.save_ops(c, None))
        ops.extend(store.transcript_ops(c.id, Message(kind="customer", channel=c.channel, address=c.address,
                                                      text=f"hello from {c.id}, \"quoted\", comma",
                                                      sender=Sender(id="u", name="Ana"), created_ms=c.created_ms)))
        ops.extend(store.transcript_ops(c.id, Message(kind="reply", channel=c.channel, address=c.address,
                                                      text="On it", sender=Sender(id="U1", name="Bo", is_agent=True),
                                                      created_ms=c.created_ms + MIN)))
    await commit(redis, ops)


async def test_report_has_charts_and_the_right_numbers(redis: aioredis.Redis, tmp_path: Path) -> None:
    store = Store(redis, partitions=8)
    await seed(redis)
    page_path = await write_report(RedisSource(store), tmp_path / "out", now_ms=DAY0 + 10 * 24 * HOUR)
    assert page_path == tmp_path / "out" / "report.html"
    page = Page()
    page.feed(page_path.read_text(encoding="utf-8"))
    assert page.external == []  # self-contained
    assert page.charts == ["volume", "first_response", "resolution", "sla_breaches", "satisfaction", "topics",
                           "languages"]
    assert page.kpis["conversations"] == "6"
    assert page.kpis["urgent"] == "2"
    assert page.kpis["resolved"] == "4"
    assert page.kpis["answered by the bot"] == "1"
    assert page.kpis["SLA breaches"] == "3"
    assert page.kpis["satisfaction"] == "4.00 / 5 (4 answers)"
    assert page.kpis["median first response"] == "45 min"  # 3, 10, 45, 90, 300 min
    assert page.kpis["median resolution"] == "25.0 h"  # 2, 20, 30, 100 h

    segments = {(b["data-day"], b["data-channel"]): int(b["data-value"]) for b in page.bars["volume"]}
    assert segments == {("2026-11-02", "telegram"): 2, ("2026-11-03", "email"): 1, ("2026-11-03", "widget"): 1,
                        ("2026-11-05", "email"): 1, ("2026-11-05", "telegram"): 1}
    assert page.tables["volume_by_channel"] == [["telegram", "3"], ["email", "2"], ["widget", "1"]]

    def bars(name: str) -> dict[str, int]:
        return {b["data-label"]: int(b["data-value"]) for b in page.bars[name]}

    assert bars("first_response") == {"< 5 min": 1, "5-15 min": 1, "15-60 min": 1, "1-4 h": 1, "4-24 h": 1,
                                      "> 24 h": 0}
    assert bars("resolution") == {"< 1 h": 0, "1-4 h": 1, "4-24 h": 1, "1-3 days": 1, "3-7 days": 1,
                                  "> 7 days": 0}
    assert bars("sla_breaches") == {"urgent resolution": 2, "urgent first response": 1}
    assert bars("satisfaction") == {"5 ★": 2, "4 ★": 1, "3 ★": 0, "2 ★": 1, "1 ★": 0}
    assert bars("topics") == {"quality": 2, "billing": 2, "shipping": 1, "(none)": 1}
    assert bars("languages") == {"en": 2, "zh": 1, "ru": 1, "tl": 1, "ms": 1}

    with (tmp_path / "out" / "conversations.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [c.id for c in SEED]
    first = rows[0]
    assert (first["channel"], first["urgency"], first["first_response_s"], first["resolution_s"]) == (
        "telegram", "urgent", "180", "7200")
    assert (first["sla_breaches"], first["satisfaction"], first["survey_comment"]) == ("1", "5", "quick")
    assert rows[5]["resolution_s"] == "" and rows[5]["first_response_s"] == ""
    with (tmp_path / "out" / "transcripts.csv").open(encoding="utf-8") as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 12
    assert lines[0]["text"] == 'hello from h001-1, "quoted", comma'
    assert (lines[1]["kind"], lines[1]["sender"], lines[1]["is_agent"]) == ("reply", "Bo", "True")


async def test_since_limits_the_period_and_an_empty_store_still_renders(redis: aioredis.Redis,
                                                                        tmp_path: Path) -> None:
    store = Store(redis, partitions=8)
    empty = Page()
    empty.feed((await write_report(RedisSource(store), tmp_path / "empty")).read_text(encoding="utf-8"))
    assert empty.kpis["conversations"] == "0" and len(empty.charts) == 7
    await seed(redis)
    page = Page()
    page.feed((await write_report(RedisSource(store), tmp_path / "late", since_ms=DAY0 + 2 * 24 * HOUR)).read_text(
        encoding="utf-8"))
    assert page.kpis["conversations"] == "2"
    assert page.tables["volume_by_channel"] == [["email", "1"], ["telegram", "1"]]


async def test_first_responses_under_a_minute_read_in_seconds(redis: aioredis.Redis, tmp_path: Path) -> None:
    store = Store(redis, partitions=8)
    quick = [conv(20, "widget", day=0, first_min=7 / 60), conv(21, "telegram", day=0, first_min=19 / 60),
             conv(22, "email", day=0, first_min=19 / 60)]
    for pages, cases in (("one", quick[:1]), ("three", quick)):
        ops: Ops = []
        for c in cases:
            ops.extend(store.save_ops(c, None))
        await commit(redis, ops)
        page = Page()
        written = await write_report(RedisSource(store), tmp_path / pages, now_ms=DAY0 + 24 * HOUR)
        page.feed(written.read_text(encoding="utf-8"))
        assert page.kpis["median first response"] == ("7 s" if pages == "one" else "19 s")
