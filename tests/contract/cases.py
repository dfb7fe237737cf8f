"""The strings every adapter must carry unchanged, and helpers the cases share."""

from __future__ import annotations

import pytest

from tests.contract.drivers import Driver

#: (id, text): markup of every platform, HTML, mrkdwn escapes, bidi and zero-width
#: controls, emoji sequences, NUL, and a message far over every platform's limit
HOSTILE: list[tuple[str, str]] = [
    ("telegram_markdown", r"*bold* _it_ __u__ ~s~ ||spoiler|| `code` ```pre``` [a](http://x.test) \. ! # + - = { }"),
    ("html", '<b>bold</b> <a href="http://x.test">x</a> <script>alert(1)</script> &amp; &lt;b&gt; &#39; & < >'),
    ("slack_mrkdwn", "<!channel> <!here> <@U0ALICE> <#C0AGENTS|support> *b* _i_ ~s~ `c` <http://x.test|click>"),
    ("stars", "*_~ ~_* **__~~ `*` \\*"),
    ("amp", "&amp; &amp;amp; &lt; &gt; &quot; &#x27; &nbsp;"),
    ("bidi_zero_width_emoji", "\u202eevil\u202c \u200b\u200c\u200d\ufeff 👩‍👩‍👧‍👦 🇺🇦 e\u0301 مرحبا שלום 中文 Привет"),
    ("nul", "before\x00after"),
    ("long", " ".join(f"w{i}🙂" for i in range(16_000))[:100_000]),
]


def skip_unless_receives(driver: Driver) -> None:
    if driver.no_inbound:
        pytest.skip(driver.no_inbound)


def pieces_of(text: str, parts: list[str]) -> str:
    """'' when ``parts`` are ``text`` cut in order (whitespace at a cut may be dropped);
    else what went wrong."""
    at = 0
    for index, part in enumerate(parts):
        while at < len(text) and text[at].isspace() and not text.startswith(part, at):
            at += 1
        if not text.startswith(part, at):
            return f"part {index} does not continue the text at {at}: {part[:60]!r}... vs {text[at:at + 60]!r}..."
        at += len(part)
    if text[at:].strip():
        return f"the text after {at} never arrived: {text[at:at + 60]!r}..."
    return ""
