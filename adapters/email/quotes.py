"""Strip quoted replies and signatures from a mail's text; pure.

What a customer wrote is what they typed above (or between) the quote of our earlier
mail. Mail programs mark the quote in different ways:

- ``>`` prefixed lines (most programs, and our HTML converter for ``<blockquote>``);
- an attribution line: "On Mon, 23 Nov 2026 at 09:10, Ann <a@x> wrote:" (Gmail,
  Apple, Thunderbird), "在 2026年11月23日 周一 09:10，张三 <a@x> 写道：", "23 нояб. 2026 г.,
  в 9:10, Иван <i@x> написал(а):", "пн, 23 нояб. 2026 г. в 09:10, Иван <i@x>:";
- a header block with nothing before it quoted: Outlook's "From: / Sent: / To: /
  Subject:" (also "发件人: / 发送时间:" and "От: / Отправлено:"), often after a line of
  underscores, and "-----Original Message-----" / "-----原始邮件-----" /
  "-----Исходное сообщение-----" separators.

Signatures are cut at the "-- " delimiter and at the mobile footers ("Sent from my
iPhone", "发自我的iPhone", "Отправлено с iPhone", "Get Outlook for iOS").
When stripping would leave nothing, the text is kept whole: a forward with no words of
its own is still a message.

Every line is looked at a bounded number of times (the next non-blank line is looked up,
not searched for), so the cost is linear in the text, which is cut at ``max_chars``.
A line of ``=`` signs is not a separator: mail programs and people draw lines with them.
"""

from __future__ import annotations

import re

MAX_CHARS = 100_000  # of text looked at; the rest is cut
MAX_ATTRIBUTION_CHARS = 400  # an attribution ("On <date>, <name> wrote:") is at most this long
_BLANK_RUN = re.compile(r"\n(?:[ \t\f\v]*\n){2,}")

# Attributions precise enough to cut at even when no ">" quote follows (the quote may be
# plain text, as Outlook and many Chinese and Russian programs send it) ...
_STRONG_ATTRIBUTION = [
    # English: "On <date>, <name> wrote:" (Gmail, Apple Mail, Thunderbird); may wrap to 2-3 lines
    re.compile(r"^\s*On\b.{0,300}\bwrote:\s*$", re.IGNORECASE | re.DOTALL),
    # Chinese: "在 2026年11月23日 09:10，张三 <a@x> 写道："
    re.compile(r"^\s*(在|於).{0,300}[写寫]道[：:]\s*$", re.DOTALL),
    # Russian: "23 нояб. 2026 г., в 9:10, Иван <i@x> написал(а):"
    re.compile(r"^\s*.{0,300}(написал|написала|написал\(а\)|пишет)\s*:\s*$", re.IGNORECASE | re.DOTALL),
    # Gmail in Russian: "пн, 23 нояб. 2026 г. в 09:10, Иван <i@x>:"
    re.compile(r"^\s*(пн|вт|ср|чт|пт|сб|вс),\s.{0,120}\d{4}\s*г\..{0,200}<[^>@\s]+@[^>\s]+>:\s*$",
               re.IGNORECASE | re.DOTALL),
]
# ... and looser ones, taken only when a ">" quote follows.
_WEAK_ATTRIBUTION = [
    re.compile(r"^\s*.{0,200}\bwrote:\s*$", re.IGNORECASE),
    re.compile(r"^\s*.{0,200}[写寫]道[：:]\s*$"),
    # other languages mail programs ship: de, fr, es, it, pt, nl, ms, tl
    re.compile(r"^\s*.{0,200}\b(schrieb|a écrit|escribió|ha scritto|escreveu|schreef|menulis|sumulat|isinulat)"
               r"( ni [^:]{0,80})?\s*:\s*$", re.IGNORECASE),
    # Gmail in other languages ends with "<addr>:" after a date
    re.compile(r"^\s*.{0,80}\d{4}.{0,120}<[^>@\s]+@[^>\s]+>\s*:\s*$", re.DOTALL),
]
_ATTRIBUTION = _STRONG_ATTRIBUTION + _WEAK_ATTRIBUTION

# how an attribution that wraps over several lines begins
_STARTS_ATTRIBUTION = re.compile(r"^\s*(On\s|在|於|\d|(пн|вт|ср|чт|пт|сб|вс|Mon|Tue|Wed|Thu|Fri|Sat|Sun)\w*,)",
                                 re.IGNORECASE)

_SEPARATORS = re.compile(
    r"^\s*(-{2,}\s*(Original Message|原始邮件|原始郵件|Исходное сообщение|Пересылаемое сообщение)\s*-{2,}"
    r"|-{5,}\s*原始邮件\s*-{5,}|_{10,}|From:\s.*\bSent:\s.*)\s*$",
    re.IGNORECASE,
)

# Outlook-style header block: a "From:" line followed within a few lines by "Sent:"/"Date:"/"To:"/"Subject:"
_FROM = re.compile(r"^\s*\*?(From|发件人|寄件者|От|Від)\s*\*?\s*[:：]", re.IGNORECASE)
_HEADER_FIELD = re.compile(
    r"^\s*\*?(Sent|Date|To|Cc|Subject|发送时间|发送日期|收件人|抄送|主题|日期|寄件日期|收件者|主旨|"
    r"Отправлено|Дата|Кому|Копия|Тема)\s*\*?\s*[:：]",
    re.IGNORECASE,
)

_FOOTER = re.compile(
    r"^\s*(Sent from my \w+.*|Sent from (Mail|Outlook) for .*|Get Outlook for \w+.*|Sent from Yahoo Mail.*"
    r"|发自我的\s*\w+.*|从我的\s*\w+\s*发送.*|Отправлено с (моего )?\w+.*|Отправлено из .*|Sent via .*)\s*$",
    re.IGNORECASE,
)


def _is_delimiter(line: str) -> bool:
    """The signature delimiter: "-- " (RFC 3676), or "--" as many programs trim it."""
    return line.strip() == "--"


def _is_signature(line: str) -> bool:
    return _is_delimiter(line) or bool(_FOOTER.match(line))


def _is_quote(line: str) -> bool:
    return line.lstrip().startswith(">")


class _Lines:
    """The text's lines and, for each, where the next non-blank line is (one pass)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.next_text = [len(lines)] * (len(lines) + 1)
        for i in range(len(lines) - 1, -1, -1):
            self.next_text[i] = i if lines[i].strip() else self.next_text[i + 1]
        # every attribution ends with a colon: only lines with one in the next three are tried
        colon = [line.rstrip().endswith((":", "：")) for line in lines] + [False, False]
        self.may_attribute = [colon[i] or colon[i + 1] or colon[i + 2] for i in range(len(lines))]

    def first_text(self, i: int) -> str | None:
        """The first non-blank line at or after i, or None."""
        found = self.next_text[min(i, len(self.lines))]
        return self.lines[found] if found < len(self.lines) else None


def _attribution_at(text: _Lines, i: int) -> int:
    """How many lines (1-3) form an attribution starting at line i; 0 when none."""
    lines = text.lines
    for span in (1, 2, 3):
        if i + span > len(lines):
            break
        if not lines[i + span - 1].rstrip().endswith((":", "：")):
            continue  # every attribution ends with a colon
        if span > 1 and not _STARTS_ATTRIBUTION.match(lines[i][:MAX_ATTRIBUTION_CHARS]):
            break
        if any(not line.strip() for line in lines[i:i + span]):
            break
        chunk = " ".join(line.strip() for line in lines[i:i + span])
        if len(chunk) > MAX_ATTRIBUTION_CHARS:
            break
        if any(p.match(chunk) for p in _ATTRIBUTION):
            # an attribution is followed by the quote (or nothing)
            after = text.first_text(i + span)
            if after is None or _is_quote(after) or span > 1 or _looks_like_header(text, i + span):
                return span
            if any(p.match(chunk) for p in _STRONG_ATTRIBUTION):
                return span
    return 0


def _looks_like_header(text: _Lines, i: int) -> bool:
    """An Outlook header block: From: then at least two of Sent/To/Subject within 6 lines."""
    i = text.next_text[min(i, len(text.lines))]
    if i >= len(text.lines) or not _FROM.match(text.lines[i]):
        return False
    fields = sum(1 for line in text.lines[i + 1:i + 7] if _HEADER_FIELD.match(line))
    return fields >= 2


def strip_quotes(text: str, max_chars: int = MAX_CHARS) -> str:
    """The new part of a reply: quotes and the signature removed (see module doc)."""
    text = text[:max_chars]
    # runs of blank lines as one blank line (the result has no more anyway): a flood of them costs one regex pass
    lines = _BLANK_RUN.sub("\n\n", text.replace("\r\n", "\n").replace("\r", "\n")).split("\n")
    indexed = _Lines(lines)
    cut = len(lines)
    for i, line in enumerate(lines):
        if not line or line.isspace():
            continue  # a blank line starts nothing: a header block or attribution is found at its first line
        if _SEPARATORS.match(line) and (not line.strip().startswith("_") or _looks_like_header(indexed, i + 1)):
            cut = i
            break
        if i > 0 and _FROM.match(line) and _looks_like_header(indexed, i):
            cut = i
            break
        span = _attribution_at(indexed, i) if indexed.may_attribute[i] else 0
        if span:
            tail = lines[i + span:]
            quoted = [x for x in tail if x.strip()]
            inline = any(not _is_quote(x) for x in quoted) and any(_is_quote(x) for x in quoted)
            if inline and _is_quote(quoted[0]) and _has_answer_between_quotes(quoted):
                # inline answers between quoted paragraphs: drop only the attribution and the quotes
                lines = lines[:i] + tail
                return _finish(text, [x for x in lines if not _is_quote(x)])
            cut = i
            break
    kept = [x for x in lines[:cut] if not _is_quote(x)]
    return _finish(text, kept)


def _has_answer_between_quotes(quoted: list[str]) -> bool:
    """True when unquoted text sits after a quote and before a later one (inline reply)."""
    seen_quote = False
    answer = False
    for line in quoted:
        if _is_quote(line):
            if answer:
                return True
            seen_quote = True
        elif seen_quote:
            answer = True
    return answer and not all(_is_signature(x) for x in quoted if not _is_quote(x))


def _finish(original: str, lines: list[str]) -> str:
    """Cut the signature: from the last "-- " delimiter, or from the last mobile footer when
    that comes first (a footer under the signature, or a footer alone)."""
    delimiter = next((i for i in range(len(lines) - 1, 0, -1) if _is_delimiter(lines[i])), len(lines))
    footer = next((i for i in range(len(lines) - 1, -1, -1) if _FOOTER.match(lines[i])), len(lines))
    lines = lines[:min(delimiter, footer)]
    result = "\n".join(lines).strip()
    result = re.sub(r"\n{3,}", "\n\n", result)
    return result if result else original.strip()
