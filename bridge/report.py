"""``bridge report``: an HTML report with charts and CSV exports, read from the store.

Writes three files into ``out_dir``: ``report.html`` (self-contained: inline SVG charts,
inline CSS, no scripts, no external assets, so it can be mailed or archived),
``conversations.csv`` (one row per conversation) and ``transcripts.csv`` (one row per
message). Every chart has its numbers in a table beside it.

The flow state read here is the flows' typed records (bridge/flowstate.py): SLA
events (level ``breach``), the survey's score and comment, the dispute's step, the FAQ
entries the bot answered.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bridge.flowstate import DisputeState, KbState, SlaState, SurveyState, read_state
from bridge.history.reader import Reader
from bridge.model import Conversation, Message
from bridge.store import Store

STATUSES = ("open", "pending", "resolved")
PALETTE = ("#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#ca8a04", "#dc2626", "#4b5563")

FIRST_RESPONSE_BUCKETS: list[tuple[str, float]] = [("< 5 min", 300), ("5-15 min", 900), ("15-60 min", 3600),
                                                   ("1-4 h", 14_400), ("4-24 h", 86_400), ("> 24 h", float("inf"))]
RESOLUTION_BUCKETS: list[tuple[str, float]] = [("< 1 h", 3600), ("1-4 h", 14_400), ("4-24 h", 86_400),
                                               ("1-3 days", 259_200), ("3-7 days", 604_800),
                                               ("> 7 days", float("inf"))]


@dataclass
class Stats:
    """Everything the report shows, computed from the conversations."""

    conversations: int = 0
    urgent: int = 0
    resolved: int = 0
    bot_answered: int = 0  # answered by the knowledge base and never handed to a person
    volume: dict[str, Counter[str]] = field(default_factory=dict)  # day -> channel -> count
    channels: list[str] = field(default_factory=list)
    first_response_s: list[float] = field(default_factory=list)
    resolution_s: list[float] = field(default_factory=list)
    sla_breaches: Counter[str] = field(default_factory=Counter)  # "urgent first response" -> count
    sla_warnings: int = 0
    scores: Counter[int] = field(default_factory=Counter)
    topics: Counter[str] = field(default_factory=Counter)
    languages: Counter[str] = field(default_factory=Counter)

    @property
    def breaches(self) -> int:
        return sum(self.sla_breaches.values())

    @property
    def satisfaction(self) -> float | None:
        total = sum(self.scores.values())
        return sum(s * n for s, n in self.scores.items()) / total if total else None


def _day(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d")


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if ms else ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:  # a bot-quick or agent-quick answer is not "0 min"
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86_400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} days"


def compute(conversations: Sequence[Conversation]) -> Stats:
    stats = Stats(conversations=len(conversations))
    channels: Counter[str] = Counter()
    for c in conversations:
        channels[c.channel] += 1
        stats.volume.setdefault(_day(c.created_ms), Counter())[c.channel] += 1
        stats.urgent += c.urgency == "urgent"
        stats.bot_answered += bool(read_state(c, "kb", KbState).answered and not c.queue
                                   and not c.first_response_ms and c.urgency != "urgent")
        if c.first_response_ms and c.first_response_ms >= c.created_ms:
            stats.first_response_s.append((c.first_response_ms - c.created_ms) / 1000)
        if c.status == "resolved" and c.resolved_ms >= c.created_ms:
            stats.resolved += 1
            stats.resolution_s.append((c.resolved_ms - c.created_ms) / 1000)
        for event in read_state(c, "sla", SlaState).events:
            if event.level == "breach":
                stats.sla_breaches[f"{event.urgency or c.urgency} {event.kind.replace('_', ' ')}"] += 1
            else:
                stats.sla_warnings += 1
        score = read_state(c, "survey", SurveyState).score
        if score is not None and 1 <= score <= 5:
            stats.scores[score] += 1
        stats.topics[c.topic or "(none)"] += 1
        stats.languages[c.language or "(unknown)"] += 1
    stats.channels = [name for name, _ in channels.most_common()]
    return stats


def bucket(values: list[float], buckets: list[tuple[str, float]]) -> list[tuple[str, int]]:
    counts = [0] * len(buckets)
    for value in values:
        for i, (_, upper) in enumerate(buckets):
            if value < upper:
                counts[i] += 1
                break
    return [(label, n) for (label, _), n in zip(buckets, counts, strict=True)]


# -- charts (inline SVG) -------------------------------------------------------------


def bar_chart(name: str, title: str, bars: list[tuple[str, int]], *, color: str = PALETTE[0],
              width: int = 560) -> str:
    """A horizontal bar chart; one ``<rect class="bar">`` per bar, its value in ``data-value``."""
    row_h, left, right = 26, 150, 60
    height = 36 + row_h * max(1, len(bars))
    top = max((v for _, v in bars), default=0) or 1
    parts = [f'<svg class="chart" data-chart="{name}" role="img" aria-label="{html.escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">',
             f'<text x="0" y="16" class="title">{html.escape(title)}</text>']
    span = width - left - right
    for i, (label, value) in enumerate(bars):
        y = 30 + i * row_h
        w = round(span * value / top) if value else 0
        parts.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{html.escape(label)}</text>')
        parts.append(f'<rect class="bar" data-label="{html.escape(label)}" data-value="{value}" x="{left}" '
                     f'y="{y + 2}" width="{w}" height="{row_h - 8}" fill="{color}"/>')
        parts.append(f'<text x="{left + w + 6}" y="{y + 15}">{value}</text>')
    if not bars:
        parts.append(f'<text x="{left}" y="46">no data</text>')
    parts.append("</svg>")
    return "".join(parts)


def stacked_columns(name: str, title: str, days: list[str], series: list[str],
                    values: dict[str, Counter[str]], *, width: int = 760) -> str:
    """Columns per day stacked by channel; ``<rect class="segment">`` per (day, channel)."""
    height, bottom, left, top_pad = 300, 60, 40, 40
    plot_h = height - bottom - top_pad
    peak = max((sum(values[d].values()) for d in days), default=0) or 1
    slot = (width - left - 10) / max(1, len(days))
    col_w = max(4.0, min(40.0, slot * 0.7))
    parts = [f'<svg class="chart" data-chart="{name}" role="img" aria-label="{html.escape(title)}" '
             f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">',
             f'<text x="0" y="16" class="title">{html.escape(title)}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" stroke="#999"/>',
             f'<text x="{left - 6}" y="{top_pad + 4}" text-anchor="end">{peak}</text>']
    for i, day in enumerate(days):
        x = left + i * slot + (slot - col_w) / 2
        y = float(height - bottom)
        for j, channel in enumerate(series):
            count = values[day].get(channel, 0)
            if not count:
                continue
            h = plot_h * count / peak
            y -= h
            parts.append(f'<rect class="segment" data-day="{day}" data-channel="{html.escape(channel)}" '
                         f'data-value="{count}" x="{x:.1f}" y="{y:.1f}" width="{col_w:.1f}" height="{h:.1f}" '
                         f'fill="{PALETTE[j % len(PALETTE)]}"><title>{day} {html.escape(channel)}: {count}'
                         f'</title></rect>')
        if len(days) <= 31:
            parts.append(f'<text x="{x + col_w / 2:.1f}" y="{height - bottom + 14}" text-anchor="end" '
                         f'transform="rotate(-45 {x + col_w / 2:.1f} {height - bottom + 14})">{day[5:]}</text>')
    for j, channel in enumerate(series):
        lx = left + j * 120
        parts.append(f'<rect x="{lx}" y="{height - 16}" width="10" height="10" fill="{PALETTE[j % len(PALETTE)]}"/>'
                     f'<text x="{lx + 14}" y="{height - 7}">{html.escape(channel)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(name: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="data" data-table="{name}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em;color:#111;max-width:1100px}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
.kpis{display:flex;flex-wrap:wrap;gap:1em}.kpi{border:1px solid #ddd;border-radius:6px;padding:.6em 1em}
.kpi b{display:block;font-size:1.4em}.chart text{font-size:12px;fill:#222}.chart .title{font-weight:600}
table.data{border-collapse:collapse;margin:.5em 0;font-size:.9em}table.data td,table.data th{border:1px solid #ddd;
padding:2px 8px;text-align:left}section{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start}
"""


def render_html(stats: Stats, *, generated_ms: int, since_ms: int | None, until_ms: int | None = None) -> str:
    days = sorted(stats.volume)
    if days:  # every day in the range, quiet days included
        first, last = dt.date.fromisoformat(days[0]), dt.date.fromisoformat(days[-1])
        days = [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
        for day in days:
            stats.volume.setdefault(day, Counter())
    fr = stats.first_response_s
    rs = stats.resolution_s
    median_fr = statistics.median(fr) if fr else None
    median_rs = statistics.median(rs) if rs else None
    kpis = [
        ("conversations", str(stats.conversations)),
        ("urgent", str(stats.urgent)),
        ("resolved", str(stats.resolved)),
        ("answered by the bot", str(stats.bot_answered)),
        ("median first response", _duration(median_fr)),
        ("median resolution", _duration(median_rs)),
        ("SLA breaches", str(stats.breaches)),
        ("satisfaction", f"{stats.satisfaction:.2f} / 5 ({sum(stats.scores.values())} answers)"
         if stats.satisfaction is not None else "-"),
    ]
    fr_bars = bucket(fr, FIRST_RESPONSE_BUCKETS)
    rs_bars = bucket(rs, RESOLUTION_BUCKETS)
    score_bars = [(f"{s} ★", stats.scores.get(s, 0)) for s in range(5, 0, -1)]
    topic_bars = stats.topics.most_common(10)
    language_bars = stats.languages.most_common(10)
    breach_bars = sorted(stats.sla_breaches.items(), key=lambda kv: (-kv[1], kv[0]))
    channel_totals = [(ch, sum(stats.volume[d].get(ch, 0) for d in days)) for ch in stats.channels]
    period = f"since {_iso(since_ms)}" if since_ms else "all time"
    if until_ms:
        period = (f"{_iso(since_ms)} to {_iso(until_ms)}" if since_ms else f"until {_iso(until_ms)}")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>Support report</title>',
        f"<style>{CSS}</style></head><body>",
        f"<h1>Support report</h1><p>{html.escape(period)}; generated {_iso(generated_ms)}</p>",
        '<div class="kpis">' + "".join(f'<div class="kpi" data-kpi="{html.escape(k)}">{html.escape(k)}'
                                      f"<b>{html.escape(v)}</b></div>" for k, v in kpis) + "</div>",
        "<h2>Volume by channel and day</h2><section>",
        stacked_columns("volume", "Conversations opened per day", days, stats.channels, stats.volume),
        _table("volume_by_channel", ["channel", "conversations"], channel_totals),
        "</section><h2>First response time</h2><section>",
        bar_chart("first_response", "Time to first response", fr_bars, color=PALETTE[0]),
        _table("first_response", ["time", "conversations"], fr_bars),
        "</section><h2>Resolution time</h2><section>",
        bar_chart("resolution", "Time to resolution", rs_bars, color=PALETTE[1]),
        _table("resolution", ["time", "conversations"], rs_bars),
        "</section><h2>SLA breaches</h2><section>",
        bar_chart("sla_breaches", "SLA breaches by target", breach_bars, color=PALETTE[6]),
        _table("sla_breaches", ["target", "breaches"], breach_bars),
        "</section><h2>Satisfaction</h2><section>",
        bar_chart("satisfaction", "Survey answers by score", score_bars, color=PALETTE[5]),
        _table("satisfaction", ["score", "answers"], score_bars),
        "</section><h2>Top topics and languages</h2><section>",
        bar_chart("topics", "Top topics", topic_bars, color=PALETTE[3]),
        bar_chart("languages", "Languages", language_bars, color=PALETTE[4]),
        _table("topics", ["topic", "conversations"], topic_bars),
        _table("languages", ["language", "conversations"], language_bars),
        "</section>",
        '<p>Exports: <a href="conversations.csv">conversations.csv</a>, '
        '<a href="transcripts.csv">transcripts.csv</a></p>',
        "</body></html>",
    ]
    return "\n".join(out)


# -- data ----------------------------------------------------------------------------


async def load_conversations(store: Store, since_ms: int | None = None, batch: int = 500) -> list[Conversation]:
    """Every conversation (any status) created at or after ``since_ms``, oldest first."""
    ids: list[str] = []
    for status in STATUSES:
        ids.extend(await store.ids_with_status(status))
    found: dict[str, Conversation] = {}
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), batch):
        for conversation in await store.get_many(unique[start:start + batch]):
            if conversation is not None and (since_ms is None or conversation.created_ms >= since_ms):
                found[conversation.id] = conversation
    return sorted(found.values(), key=lambda c: (c.created_ms, c.id))


CONVERSATION_COLUMNS = ["id", "channel", "address", "status", "language", "urgency", "urgency_reason", "topic",
                        "queue", "assignee", "tags", "created", "first_response_s", "resolution_s", "messages",
                        "sla_breaches", "satisfaction", "survey_comment", "dispute_step"]
TRANSCRIPT_COLUMNS = ["conversation_id", "time", "kind", "channel", "sender", "is_agent", "name", "text",
                      "attachments"]


def conversation_row(c: Conversation) -> list[Any]:
    survey = read_state(c, "survey", SurveyState)
    return [
        c.id, c.channel, c.address, c.status, c.language, c.urgency, c.urgency_reason, c.topic, c.queue,
        c.assignee, " ".join(c.tags), _iso(c.created_ms),
        round((c.first_response_ms - c.created_ms) / 1000) if c.first_response_ms else "",
        round((c.resolved_ms - c.created_ms) / 1000) if c.status == "resolved" and c.resolved_ms else "",
        c.messages, len(read_state(c, "sla", SlaState).breaches()),
        "" if survey.score is None else survey.score, survey.comment,
        read_state(c, "dispute", DisputeState).step,
    ]


def transcript_row(conversation_id: str, m: Message) -> list[Any]:
    sender = (m.sender.name or m.sender.id) if m.sender else ""
    return [conversation_id, _iso(m.created_ms), m.kind, m.channel, sender,
            bool(m.sender and m.sender.is_agent), m.name, m.text, " ".join(a.name or a.ref for a in m.attachments)]


class Source(Protocol):
    """Where a report reads conversations: Redis (the working set) or the SQL record."""

    async def conversations(self, since_ms: int | None, until_ms: int | None) -> list[Conversation]: ...

    async def transcript(self, conversation_id: str) -> list[Message]: ...


class RedisSource:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def conversations(self, since_ms: int | None, until_ms: int | None) -> list[Conversation]:
        found = await load_conversations(self.store, since_ms)
        return [c for c in found if not until_ms or c.created_ms < until_ms]

    async def transcript(self, conversation_id: str) -> list[Message]:
        return await self.store.transcript(conversation_id, limit=100_000)


class SqlSource:
    """The SQL record (bridge/history): every conversation, however old, queried by date."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    async def conversations(self, since_ms: int | None, until_ms: int | None) -> list[Conversation]:
        return await self.reader.created_between(since_ms or 0, until_ms or 0)

    async def transcript(self, conversation_id: str) -> list[Message]:
        return await self.reader.transcript(conversation_id)


async def write_report(source: Source, out_dir: Path, *, since_ms: int | None = None,
                       until_ms: int | None = None, now_ms: int | None = None) -> Path:
    """Write report.html, conversations.csv and transcripts.csv of the conversations created
    in [since_ms, until_ms); returns the HTML path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conversations = await source.conversations(since_ms, until_ms)
    with (out_dir / "conversations.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CONVERSATION_COLUMNS)
        writer.writerows(conversation_row(c) for c in conversations)
    with (out_dir / "transcripts.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(TRANSCRIPT_COLUMNS)
        for c in conversations:
            for message in await source.transcript(c.id):
                writer.writerow(transcript_row(c.id, message))
    generated = now_ms if now_ms is not None else int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    page = out_dir / "report.html"
    page.write_text(render_html(compute(conversations), generated_ms=generated, since_ms=since_ms,
                                until_ms=until_ms),
                    encoding="utf-8")
    return page
