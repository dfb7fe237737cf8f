"""Benchmark: what reading one hostile mail costs (MIME parse, HTML to text, quote stripping).

    python -m bench.email_parse [--sizes 25000,50000,100000,200000] [--repeat 3]

For each hostile input family, the best-of-``repeat`` CPU time of `adapters.email.reading.read`
on a whole mail at each size, and the largest growth when the size doubles (linear: ~2x;
the target is at most ~2.5x). Then the issue's three acceptance inputs (30 KB hostile
HTML, 40 KB of blank lines, 100 KB of unclosed tags; target: each well under 50 ms), and
the longest event-loop stall while each is read through `Reader` (the off-loop path the
adapter uses; target: at most 50 ms). `loop_stall_ms` can be called from other benches.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Callable

from adapters.email.reading import Reader, read

LIMITS = {"max_attachment_bytes": 25 * 1024 * 1024, "max_text_chars": 100_000}


def html_mail(html: str) -> bytes:
    return (b"From: Ann <ann@customer.example>\r\nTo: support@example.com\r\nSubject: hostile\r\n"
            b"Message-ID: <h@customer.example>\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html.encode())


def text_mail(text: str) -> bytes:
    return (b"From: Ann <ann@customer.example>\r\nTo: support@example.com\r\nSubject: hostile\r\n"
            b"Message-ID: <t@customer.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text.encode())


def header_mail(header: bytes) -> bytes:
    return b"From: Ann <ann@customer.example>\r\n" + header + b"\r\nSubject: hostile\r\n\r\nbody\r\n"


# family -> mail of about n bytes
FAMILIES: dict[str, Callable[[int], bytes]] = {
    "html: <p><b id=1>x (unclosed)": lambda n: html_mail("<p><b id=1>x" * (n // 12)),
    "html: <div> (unclosed, deep)": lambda n: html_mail("<div>" * (n // 5)),
    "html: <font color=i><p> (HTML5 worst)":
        lambda n: html_mail("".join(f"<font color={i}><p>" for i in range(n // 24))),
    "html: <a href=x>y (links)": lambda n: html_mail('<a href="https://x.example/">y</a>' * (n // 33)),
    "html: <br> (blank lines)": lambda n: html_mail("<br>" * (n // 4)),
    "html: '<' and '</' soup": lambda n: html_mail("<a</" * (n // 4)),
    "html: '</' soup": lambda n: html_mail("</" * (n // 2)),
    "html: <blockquote> (unclosed)": lambda n: html_mail("<blockquote>x" * (n // 13)),
    "text: blank lines between two words": lambda n: text_mail("a\n" + "\n" * n + "b"),
    "text: whitespace-only lines": lambda n: text_mail("a\n" + " \n" * (n // 2) + "b"),
    "text: 'X wrote:' lines, no quote": lambda n: text_mail("Ann wrote:\n" * (n // 11)),
    "text: '> ' quotes and answers": lambda n: text_mail("> q\nanswer\n" * (n // 11)),
    "text: one long line": lambda n: text_mail("From: " + "x" * n),
    "header: To of '<'": lambda n: header_mail(b"To: " + b"<" * n),
    "header: Subject of encoded words": lambda n: header_mail(b"Subject: " + b"=?utf-8?q?a?= " * (n // 14)),
    "header: many header lines": lambda n: header_mail(b"X-A: b\r\n" * (n // 8)),
}
ACCEPTANCE: dict[str, bytes] = {
    "30 KB hostile HTML (<p><b>)": FAMILIES["html: <p><b id=1>x (unclosed)"](30_000),
    "30 KB hostile HTML (<font><p>)": FAMILIES["html: <font color=i><p> (HTML5 worst)"](30_000),
    "40 KB of blank lines (text)": FAMILIES["text: blank lines between two words"](40_000),
    "40 KB of blank lines (<br>)": FAMILIES["html: <br> (blank lines)"](40_000),
    "100 KB of unclosed tags (<div>)": FAMILIES["html: <div> (unclosed, deep)"](100_000),
    "100 KB of unclosed tags (<p><b>)": FAMILIES["html: <p><b id=1>x (unclosed)"](100_000),
    "100 KB of unclosed tags (<blockquote>)": FAMILIES["html: <blockquote> (unclosed)"](100_000),
}


def best_ms(raw: bytes, repeat: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Best of ``repeat``: wall time, or CPU time with ``clock=time.thread_time`` (steadier on a busy machine)."""
    best = float("inf")
    for _ in range(repeat):
        start = clock()
        read(raw, **LIMITS)
        best = min(best, clock() - start)
    return best * 1000


async def loop_stall_ms(raw: bytes, tick_s: float = 0.001) -> float:
    """The longest the event loop went without running while ``raw`` was read off the loop."""
    reader = Reader()
    done = asyncio.Event()
    longest = 0.0

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(tick_s)
            now = time.perf_counter()
            longest = max(longest, now - last - tick_s)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(tick_s * 2)
    await reader.read(raw, **LIMITS)
    done.set()
    await task
    return longest * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="25000,50000,100000,200000")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'input family (CPU ms per mail size)':40} " + " ".join(f"{s // 1000:>7}K" for s in sizes)
          + "   max x per doubling")
    worst = 0.0
    for name, make in FAMILIES.items():
        times = [best_ms(make(size), args.repeat, time.thread_time) for size in sizes]
        growth = max((b / a for a, b in itertools.pairwise(times) if a > 0.5), default=0.0)
        worst = max(worst, growth)
        print(f"{name:40} " + " ".join(f"{t:8.1f}" for t in times) + f"   {growth:.2f}")
    print(f"largest growth per doubling: {worst:.2f}x (target <= 2.5x; under 0.5 ms not counted)")
    print()
    print(f"{'acceptance input':40} {'CPU ms':>8} {'wall ms':>8} {'loop stall ms':>14}")
    for name, raw in ACCEPTANCE.items():
        stall = asyncio.run(loop_stall_ms(raw))
        print(f"{name:40} {best_ms(raw, args.repeat, time.thread_time):8.1f} {best_ms(raw, args.repeat):8.1f} "
              f"{stall:14.1f}")
    print("targets: read well under 50 ms; loop stall at most 50 ms")


if __name__ == "__main__":
    main()
