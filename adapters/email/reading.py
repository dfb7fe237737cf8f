"""Reading a fetched mail off the event loop: MIME parsing, HTML to text and quote
stripping are CPU work on what a stranger sent, so they run in a worker thread, a
bounded number at once, while every other channel goes on. Each step is also linear
in its input and capped (`parse.MAX_PARTS`, `html_text.MAX_HTML_CHARS`, ``max_text_chars``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from adapters.email.parse import ParsedMail, attachment_bytes, parse
from adapters.email.quotes import strip_quotes

READERS = 2  # mails read at once (the IMAP watcher reads one; the rest is headroom)


@dataclass
class ReadMail:
    mail: ParsedMail
    text: str  # what the writer wrote: quotes and signature removed


def read(raw: bytes, *, max_attachment_bytes: int, max_text_chars: int) -> ReadMail:
    """Parse and strip one mail; pure and blocking (run it through `Reader`)."""
    mail = parse(raw, max_attachment_bytes=max_attachment_bytes, max_text_chars=max_text_chars)
    return ReadMail(mail, strip_quotes(mail.text, max_text_chars))


class Reader:
    """Runs `read`, `strip_quotes` and `attachment_bytes` in worker threads, at most `READERS` at once."""

    def __init__(self, readers: int = READERS) -> None:
        self._slots = asyncio.Semaphore(readers)

    async def read(self, raw: bytes, *, max_attachment_bytes: int, max_text_chars: int) -> ReadMail:
        async with self._slots:
            return await asyncio.to_thread(read, raw, max_attachment_bytes=max_attachment_bytes,
                                           max_text_chars=max_text_chars)

    async def attachment(self, raw: bytes, part: str) -> bytes | None:
        """`parse.attachment_bytes`: the mail is parsed again to find the part."""
        async with self._slots:
            return await asyncio.to_thread(attachment_bytes, raw, part)

    async def strip_quotes(self, text: str, max_chars: int) -> str:
        async with self._slots:
            return await asyncio.to_thread(strip_quotes, text, max_chars)
