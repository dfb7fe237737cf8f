"""Raw RFC 5322 bytes -> `ParsedMail`. Pure, and never raises on bad input.

Mail in the wild is broken in every way: unknown or misspelled charsets, raw 8-bit
headers, HTML-only bodies, parts nested five deep, attachments without names or with
names like ``../../etc/passwd``. Each of these degrades to something readable
(replacement characters, a generated name) instead of an exception.
"""

from __future__ import annotations

import codecs
import email
import email.utils
import hashlib
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message as MimeMessage
from email.policy import compat32
from html.parser import HTMLParser
from pathlib import PurePosixPath, PureWindowsPath
from typing import ClassVar

MAX_TEXT_CHARS = 100_000
MAX_PARTS = 200

# names mail programs use for charsets Python knows under another name (or a superset)
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "x-mac-cyrillic": "mac-cyrillic",
    "unicode-1-1-utf-7": "utf-7",
    "windows-874": "cp874",
    "utf8": "utf-8",
    "x-unknown": "utf-8",
    "unknown-8bit": "utf-8",
    "ascii": "utf-8",  # many "ascii" bodies carry utf-8 anyway
    "us-ascii": "utf-8",
}


@dataclass
class ParsedAttachment:
    name: str  # safe: no directories, no control characters, never empty
    mime: str
    size: int
    part: str  # the part's path in the tree ("2.1"), to fetch it again later
    too_large: bool = False
    inline: bool = False


@dataclass
class DeliveryFailure:
    """One failed recipient of a bounce (RFC 3464 delivery-status, or X-Failed-Recipients)."""

    recipient: str
    status: str = ""  # "5.1.1"; "" when the bounce did not say
    diagnostic: str = ""

    @property
    def permanent(self) -> bool:
        return not self.status.startswith("4")


@dataclass
class ParsedMail:
    message_id: str  # without angle brackets; synthesized from the bytes when missing
    subject: str = ""
    from_addr: str = ""  # lower case
    from_name: str = ""
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    reply_to: list[str] = field(default_factory=list)
    delivered_to: list[str] = field(default_factory=list)
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    date_ms: int = 0
    text: str = ""
    from_html: bool = False
    attachments: list[ParsedAttachment] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case name -> first value, decoded
    content_type: str = "text/plain"
    report_type: str = ""  # multipart/report's report-type (delivery-status, disposition-notification)
    original_ids: list[str] = field(default_factory=list)  # Message-IDs inside a bounce
    failures: list[DeliveryFailure] = field(default_factory=list)  # what a bounce says failed
    defects: list[str] = field(default_factory=list)

    @property
    def language(self) -> str:
        """The writer's language as their mail program declares it ("zh-CN" -> "zh"), or ""."""
        for name in ("content-language", "accept-language"):
            found = re.match(r"\s*([A-Za-z]{2,3})\b", self.headers.get(name, ""))
            if found:
                return found.group(1).lower()
        return ""


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode with the named charset; unknown charsets and bad bytes become U+FFFD."""
    name = (charset or "utf-8").strip().strip('"').lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        codecs.lookup(name)
    except LookupError:
        name = "utf-8"
    try:
        return data.decode(name, errors="replace")
    except Exception:  # a codec that fails in other ways (utf-7 on junk, ...)
        return data.decode("utf-8", errors="replace")


def _unescape_8bit(value: str) -> str:
    """compat32 reads raw 8-bit header bytes as surrogate escapes; make them text."""
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        raw = value.encode("ascii", errors="surrogateescape")
        return decode_bytes(raw, "utf-8")
    return value


def header_text(value: object) -> str:
    """Decode RFC 2047 encoded words of any charset; never raises."""
    if value is None:
        return ""
    text = _unescape_8bit(str(value))
    try:
        chunks = decode_header(text)
    except Exception:
        return _clean_header(text)
    try:
        return _clean_header(str(make_header(chunks)))
    except Exception:  # an unknown charset in an encoded word: decode each chunk leniently
        out = [decode_bytes(c, e) if isinstance(c, bytes) else c for c, e in chunks]
        return _clean_header("".join(out))


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _clean_header(value: str) -> str:
    value = value.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return re.sub(r"\s{2,}", " ", _CONTROL.sub("", value)).strip()


def _message_ids(value: str) -> list[str]:
    """Message-IDs in a References / In-Reply-To value; tolerant of missing brackets."""
    found = re.findall(r"<([^<>\s]+)>", value)
    if not found:
        found = [w for w in value.split() if "@" in w]
    return [_normalize_id(i) for i in found if _normalize_id(i)]


def _normalize_id(value: str) -> str:
    return _CONTROL.sub("", value.strip().strip("<>").strip())[:250]


def _raw(msg: MimeMessage, name: str) -> list[str]:
    """Header values as stored. (compat32's ``get`` turns raw 8-bit values into a `Header`
    whose ``str`` is replacement characters; the stored value keeps the bytes.)"""
    lower = name.lower()
    return [_unescape_8bit(v) if isinstance(v, str) else str(v) for k, v in msg.raw_items() if k.lower() == lower]


def _first(msg: MimeMessage, name: str) -> str:
    values = _raw(msg, name)
    return values[0] if values else ""


_LOOSE_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")


def _addresses(msg: MimeMessage, name: str) -> list[tuple[str, str]]:
    values = _raw(msg, name)
    try:
        pairs = email.utils.getaddresses(values)
    except Exception:
        pairs = []
    out = []
    for display, addr in pairs:
        addr = _clean_header(addr).lower()
        if "@" in addr and " " not in addr:
            out.append((header_text(display), addr))
    if not out and values:  # unparseable (an unclosed quote, ...): take what looks like an address
        for value in values:
            out += [("", found.lower()) for found in _LOOSE_ADDRESS.findall(value)]
    return out


class _HtmlToText(HTMLParser):
    """HTML -> readable text: blocks become lines, lists get dashes, quotes get '> '."""

    _BLOCK: ClassVar[set[str]] = {
        "p", "div", "br", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "pre", "hr", "section",
        "article", "header", "footer", "blockquote", "li", "dl", "dt", "dd"}
    _SKIP: ClassVar[set[str]] = {"script", "style", "head", "title", "template", "noscript"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skip = 0
        self.quote = 0
        self.pre = 0
        self.href: list[str | None] = []

    _PARAGRAPH: ClassVar[set[str]] = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "pre",
                                      "blockquote", "hr"}

    def _flush(self, *, blank: bool = False) -> None:
        """End the current line (if any); ``blank`` adds a paragraph break after it."""
        line = "".join(self.current)
        if not self.pre:
            line = re.sub(r"[ \t\r\n\f\u00a0]+", " ", line).strip()
        prefix = "> " * self.quote
        if line:
            self.lines.append(prefix + line)
        if blank:
            self.lines.append(prefix.rstrip())
        self.current = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skip += 1
            return
        if tag == "br":
            if not "".join(self.current).strip():
                self.lines.append(("> " * self.quote).rstrip())
            self._flush()
            return
        if tag in self._BLOCK:
            self._flush(blank=tag in self._PARAGRAPH)
        if tag == "blockquote":
            self.quote += 1
        elif tag == "pre":
            self.pre += 1
        elif tag == "li":
            self.current.append("- ")
        elif tag == "a":
            self.href.append(dict(attrs).get("href"))
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.current.append(f"[{alt}]")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in ("br", "img", "hr"):
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if tag == "a" and self.href:
            href = self.href.pop()
            text = "".join(self.current)
            if href and href.startswith(("http://", "https://")) and href not in text:
                self.current.append(f" ({href})")
        if tag == "blockquote":  # the blank line after a quote is outside it
            self._flush()
            self.quote = max(0, self.quote - 1)
            self._flush(blank=True)
            return
        if tag in self._BLOCK:
            self._flush(blank=tag in self._PARAGRAPH)
        if tag == "pre":
            self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.current.append(data)

    def text(self) -> str:
        self._flush()
        out: list[str] = []
        for line in self.lines:
            if line.strip("> ") or (out and out[-1].strip("> ")):  # at most one blank line in a row
                out.append(line)
        return "\n".join(out).strip()


def html_to_text(html: str) -> str:
    parser = _HtmlToText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # HTMLParser is lenient; be sure anyway
        return re.sub(r"<[^>]*>", " ", html)
    return parser.text()


_UNSAFE_NAME = re.compile(r"[^\w.\- ()\[\]+,@]", re.UNICODE)


def safe_filename(name: str, mime: str, index: str) -> str:
    """A name safe to show and to store: no path, no control characters, no leading dots."""
    name = header_text(name)
    name = PureWindowsPath(PurePosixPath(name.replace("\\", "/")).name).name
    name = _UNSAFE_NAME.sub("_", name).strip(" .")[:120]
    if not name:
        ext = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "application/pdf": ".pdf",
               "text/plain": ".txt", "text/html": ".html", "message/rfc822": ".eml"}.get(mime, ".bin")
        name = f"attachment-{index}{ext}"
    return name


def _payload_bytes(part: MimeMessage) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", errors="surrogateescape")
    return b""


def _content_type(part: MimeMessage) -> str:
    try:
        value = part.get_content_type()
    except Exception:
        return "text/plain"
    return value if re.fullmatch(r"[a-z0-9.+\-]+/[a-z0-9.+\-]+", value) else "application/octet-stream"


def _is_attachment(part: MimeMessage, ctype: str) -> bool:
    disposition = str(part.get("Content-Disposition", "")).split(";")[0].strip().lower()
    if disposition == "attachment":
        return True
    if part.get_filename() or part.get_param("name"):
        return True  # a named part is a file, whatever its type (a .txt log, an .html export)
    return not ctype.startswith(("text/", "multipart/", "message/"))


def parse(raw: bytes, *, max_attachment_bytes: int = 25 * 1024 * 1024,
          max_text_chars: int = MAX_TEXT_CHARS) -> ParsedMail:
    """Parse one message. Never raises: broken input yields what could be read, with ``defects``."""
    try:
        msg = email.message_from_bytes(raw, policy=compat32)
    except Exception as exc:  # pragma: no cover - compat32 parses anything
        return ParsedMail(message_id=_synthetic_id(raw), text=decode_bytes(raw, "utf-8")[:max_text_chars],
                          defects=[f"unparseable: {exc}"])
    mail = ParsedMail(message_id="")
    for name in ("subject", "auto-submitted", "precedence", "list-id", "list-unsubscribe", "x-auto-response-suppress",
                 "return-path", "x-autoreply", "x-autorespond", "x-auto-reply", "x-failed-recipients", "sender",
                 "x-loop", "delivered-to", "content-language", "accept-language"):
        if _raw(msg, name):
            mail.headers[name] = header_text(_first(msg, name))
    mail.subject = mail.headers.get("subject", "")[:500]
    mid = _message_ids(_first(msg, "Message-ID"))
    mail.message_id = mid[0] if mid else _synthetic_id(raw)
    senders = _addresses(msg, "From") or _addresses(msg, "Sender")
    if senders:
        mail.from_name, mail.from_addr = senders[0]
    elif _raw(msg, "From"):
        mail.defects.append("unreadable From")
    mail.to = [a for _, a in _addresses(msg, "To")]
    mail.cc = [a for _, a in _addresses(msg, "Cc")]
    mail.reply_to = [a for _, a in _addresses(msg, "Reply-To")]
    mail.delivered_to = [a for name in ("Delivered-To", "X-Original-To") for _, a in _addresses(msg, name)]
    mail.in_reply_to = _message_ids(_first(msg, "In-Reply-To"))
    mail.references = _message_ids(" ".join(_raw(msg, "References")))
    try:
        parsed_date = email.utils.parsedate_to_datetime(_first(msg, "Date"))
        mail.date_ms = int(parsed_date.timestamp() * 1000)
    except Exception:
        mail.date_ms = 0
    mail.content_type = _content_type(msg)
    if mail.content_type == "multipart/report":
        mail.report_type = str(msg.get_param("report-type") or "").lower()
    _walk_body(msg, mail, max_attachment_bytes)
    if not mail.failures:  # a bounce without a delivery-status part (exim, qmail)
        for _, failed in _addresses(msg, "X-Failed-Recipients"):
            mail.failures.append(DeliveryFailure(failed))
    mail.text = mail.text[:max_text_chars]
    mail.defects.extend(type(d).__name__ for d in getattr(msg, "defects", []))
    return mail


def _synthetic_id(raw: bytes) -> str:
    """A stable id for mail without a Message-ID, so a refetch deduplicates."""
    return f"{hashlib.sha256(raw).hexdigest()[:32]}@no-message-id.invalid"


def _walk_body(msg: MimeMessage, mail: ParsedMail, max_attachment_bytes: int) -> None:
    plain: list[str] = []
    html: list[str] = []
    seen = 0

    def visit(part: MimeMessage, path: str, in_alternative: bool) -> None:
        nonlocal seen
        seen += 1
        if seen > MAX_PARTS:
            return
        ctype = _content_type(part)
        if ctype == "message/rfc822" or ctype == "text/rfc822-headers" or ctype == "message/delivery-status":
            body = _payload_bytes(part) if not part.is_multipart() else b""
            inner = part.get_payload()
            if isinstance(inner, list):
                for sub in inner:
                    mid = sub.get("Message-ID") if isinstance(sub, MimeMessage) else None
                    if mid:
                        mail.original_ids.extend(_message_ids(str(mid)))
                    if ctype == "message/delivery-status" and isinstance(sub, MimeMessage):
                        _add_failure(sub, mail)
            if ctype == "text/rfc822-headers" and body:
                found = re.search(rb"(?im)^message-id:\s*(.+)$", body)
                if found:
                    mail.original_ids.extend(_message_ids(found.group(1).decode("ascii", "replace")))
            if ctype == "message/rfc822":
                _add_attachment(part, ctype, path, mail, max_attachment_bytes)
            return
        if part.is_multipart():
            payload = part.get_payload()
            children = [c for c in payload if isinstance(c, MimeMessage)] if isinstance(payload, list) else []
            if ctype == "multipart/alternative":
                # prefer the plain part of an alternative, fall back to its HTML part
                texts = [c for c in children
                         if _content_type(c) == "text/plain" and not _is_attachment(c, "text/plain")]
                if texts:
                    plain.append(_text_of(texts[0]))
                    for i, child in enumerate(children, 1):
                        if _content_type(child).startswith("multipart/"):
                            continue
                        if child is not texts[0] and _is_attachment(child, _content_type(child)):
                            visit(child, f"{path}.{i}" if path else str(i), True)
                    return
            for i, child in enumerate(children, 1):
                visit(child, f"{path}.{i}" if path else str(i), ctype == "multipart/alternative")
            return
        if _is_attachment(part, ctype):
            _add_attachment(part, ctype, path, mail, max_attachment_bytes)
            return
        if ctype == "text/html":
            html.append(_text_of(part))
        elif ctype.startswith("text/"):
            plain.append(_text_of(part))

    visit(msg, "", False)
    if plain and any(p.strip() for p in plain):
        mail.text = "\n\n".join(p.strip("\n") for p in plain if p.strip())
    elif html:
        mail.text = "\n\n".join(html_to_text(h) for h in html)
        mail.from_html = True
    mail.text = mail.text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _add_failure(block: MimeMessage, mail: ParsedMail) -> None:
    """A per-recipient block of a delivery-status report, when its action is "failed"."""
    if header_text(block.get("Action", "")).lower() != "failed":
        return
    recipient = header_text(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
    recipient = recipient.split(";", 1)[-1].strip().strip("<>").lower()
    if "@" in recipient:
        mail.failures.append(DeliveryFailure(recipient, header_text(block.get("Status", ""))[:20],
                                             header_text(block.get("Diagnostic-Code", ""))[:300]))


def _text_of(part: MimeMessage) -> str:
    charset = part.get_content_charset() or part.get_param("charset")
    return decode_bytes(_payload_bytes(part), str(charset) if charset else "utf-8")


def _add_attachment(part: MimeMessage, ctype: str, path: str, mail: ParsedMail, max_bytes: int) -> None:
    index = path or "1"
    raw_name = part.get_filename() or part.get_param("name") or ""
    if isinstance(raw_name, tuple):  # RFC 2231 value the parser could not collapse
        raw_name = email.utils.collapse_rfc2231_value(raw_name)
    if ctype == "message/rfc822":
        size = len(part.as_bytes()) if _safe_as_bytes(part) else 0
    else:
        size = len(_payload_bytes(part))
    disposition = str(part.get("Content-Disposition", "")).split(";")[0].strip().lower()
    mail.attachments.append(ParsedAttachment(name=safe_filename(str(raw_name), ctype, index.replace(".", "-")),
                                             mime=ctype, size=size, part=index, too_large=size > max_bytes,
                                             inline=disposition == "inline"))


def attachment_bytes(raw: bytes, path: str) -> bytes | None:
    """The decoded content of the attachment at ``path`` (`ParsedAttachment.part`) of a
    mail, found the way `parse` numbered it; None when the mail has no such part."""
    node = email.message_from_bytes(raw, policy=compat32)
    steps = path.split(".")
    if not node.is_multipart() and steps == ["1"]:
        steps = []  # a mail that is one file
    for step in steps:
        payload = node.get_payload() if node.is_multipart() else None
        children = [c for c in payload if isinstance(c, MimeMessage)] if isinstance(payload, list) else []
        index = int(step) - 1 if step.isdigit() else -1
        if not 0 <= index < len(children):
            return None
        node = children[index]
    if _content_type(node) == "message/rfc822":
        inner = node.get_payload()
        mail = inner[0] if isinstance(inner, list) and inner else None
        return mail.as_bytes() if isinstance(mail, MimeMessage) and _safe_as_bytes(mail) else None
    return _payload_bytes(node)


def _safe_as_bytes(part: MimeMessage) -> bool:
    try:
        part.as_bytes()
    except Exception:
        return False
    return True
