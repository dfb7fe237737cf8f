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
from pathlib import PurePosixPath, PureWindowsPath

from adapters.email.html_text import MAX_HTML_CHARS, html_to_text

MAX_TEXT_CHARS = 100_000
MAX_PARTS = 500  # leaf parts (text, files) listed; the rest is counted in `ParsedMail.parts_not_read`
MAX_DEPTH = 30  # levels of multipart nesting read
MAX_HEADER_BYTES = 256 * 1024  # of the header block repaired when broken (see `_repair_header`)
MAX_HEADER_CHARS = 8_000  # of one header's value read (over 100 addresses): address and word decoding are slow

# names mail programs use for charsets Python knows under another name (or a superset)
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "shift_jis": "cp932",  # Windows writes its vendor characters (①, ㈱) under this label
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
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
    parts_not_read: int = 0  # over MAX_PARTS or MAX_DEPTH

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
        name = codecs.lookup(name).name
    except LookupError:
        name = "utf-8"
    try:
        return data.decode(name)
    except UnicodeDecodeError:
        pass
    except Exception:  # a codec that fails in other ways (utf-7 on junk, ...)
        return data.decode("utf-8", errors="replace")
    if name.startswith("iso2022_jp"):
        return _iso2022jp_as_cp932(data)
    return data.decode(name, errors="replace")


_ISO2022JP_ESCAPE = re.compile(rb"\x1b(\$[@B]|\$\(D|\$\(Q|\$\(O|\([BJI])")


def _iso2022jp_as_cp932(data: bytes) -> str:
    """ISO-2022-JP as Microsoft's and other vendors' mail programs write it (CP50220/50221):
    CP932's NEC and IBM characters (①, Ⅲ, ㈱, 髙, ...) inside JIS X 0208 runs, which Python's
    iso2022_jp codecs refuse. Each run is turned into Shift_JIS and read as CP932."""
    out = bytearray()
    mode = b"(B"
    position = 0
    for found in [*_ISO2022JP_ESCAPE.finditer(data), None]:
        chunk = data[position:found.start() if found else len(data)]
        if mode.startswith(b"$"):
            for i in range(0, len(chunk) - 1, 2):
                high, low = chunk[i], chunk[i + 1]
                if not (0x21 <= high <= 0x7E and 0x21 <= low <= 0x7E):
                    out += b"?"
                    continue
                first = ((high - 0x21) >> 1) + 0x81
                first += 0x40 if first > 0x9F else 0
                second = low + 0x1F + (1 if low + 0x1F >= 0x7F else 0) if high % 2 else low + 0x7E
                out += bytes((first, second))
        elif mode == b"(I":  # half-width katakana
            out += bytes(b + 0x80 for b in chunk if 0x21 <= b <= 0x5F)
        else:
            out += chunk
        if found is not None:
            mode, position = found.group(1), found.end()
    return out.decode("cp932", errors="replace")


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
    text = _unescape_8bit(str(value)[:MAX_HEADER_CHARS])
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


def message_id_in_header(header: bytes) -> str:
    """The Message-ID in a fetched ``Message-ID:`` header field, read as `parse` reads it; "" when none."""
    _, _, value = _FOLD.sub(b" ", header).partition(b":")
    found = _message_ids(value.decode("utf-8", "replace"))
    return found[0] if found else ""


def _normalize_id(value: str) -> str:
    return _CONTROL.sub("", value.strip().strip("<>").strip())[:250]


def _header_index(msg: MimeMessage) -> dict[str, list[str]]:
    """Header values by lower-case name, as stored, each cut at `MAX_HEADER_CHARS`. (compat32's
    ``get`` turns raw 8-bit values into a `Header` whose ``str`` is replacement characters;
    the stored value keeps the bytes.)"""
    index: dict[str, list[str]] = {}
    for name, value in msg.raw_items():
        text = _unescape_8bit(value) if isinstance(value, str) else str(value)
        index.setdefault(name.lower(), []).append(text[:MAX_HEADER_CHARS])
    return index


def _raw(headers: dict[str, list[str]], name: str) -> list[str]:
    return headers.get(name.lower(), [])


def _first(headers: dict[str, list[str]], name: str) -> str:
    values = _raw(headers, name)
    return values[0] if values else ""


_LOOSE_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")


def _addresses(headers: dict[str, list[str]], name: str) -> list[tuple[str, str]]:
    values = _raw(headers, name)
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
    repaired = _repair_header(raw)
    try:
        msg = email.message_from_bytes(repaired, policy=compat32)
    except Exception as exc:  # compat32 parses anything, but nests without limit (RecursionError)
        return ParsedMail(message_id=synthetic_id(raw), text=decode_bytes(raw[:max_text_chars], "utf-8"),
                          defects=[f"unparseable: {type(exc).__name__}"])
    mail = ParsedMail(message_id="")
    headers = _header_index(msg)
    if repaired is not raw:
        mail.defects.append("header repaired (a stray line in the header)")
    for name in ("subject", "auto-submitted", "precedence", "list-id", "list-unsubscribe", "x-auto-response-suppress",
                 "return-path", "x-autoreply", "x-autorespond", "x-auto-reply", "x-failed-recipients", "sender",
                 "x-loop", "delivered-to", "content-language", "accept-language"):
        if _raw(headers, name):
            mail.headers[name] = header_text(_first(headers, name))
    mail.subject = mail.headers.get("subject", "")[:500]
    mid = _message_ids(_first(headers, "Message-ID"))
    mail.message_id = mid[0] if mid else synthetic_id(raw)
    senders = _addresses(headers, "From") or _addresses(headers, "Sender") or _system_sender(headers, mail.message_id)
    if senders:
        mail.from_name, mail.from_addr = senders[0]
    elif _raw(headers, "From"):
        mail.defects.append("unreadable From")
    mail.to = [a for _, a in _addresses(headers, "To")]
    mail.cc = [a for _, a in _addresses(headers, "Cc")]
    mail.reply_to = [a for _, a in _addresses(headers, "Reply-To")]
    mail.delivered_to = [a for name in ("Delivered-To", "X-Original-To") for _, a in _addresses(headers, name)]
    mail.in_reply_to = _message_ids(_first(headers, "In-Reply-To"))
    mail.references = _message_ids(" ".join(_raw(headers, "References")))
    try:
        parsed_date = email.utils.parsedate_to_datetime(_first(headers, "Date"))
        mail.date_ms = int(parsed_date.timestamp() * 1000)
    except Exception:
        mail.date_ms = 0
    mail.content_type = _content_type(msg)
    if mail.content_type == "multipart/report":
        mail.report_type = str(msg.get_param("report-type") or "").lower()
    _walk_body(msg, mail, max_attachment_bytes, max_text_chars)
    if not mail.failures:  # a bounce without a delivery-status part (exim, qmail)
        for _, failed in _addresses(headers, "X-Failed-Recipients"):
            mail.failures.append(DeliveryFailure(failed))
    mail.text = mail.text[:max_text_chars]
    mail.defects.extend(type(d).__name__ for d in getattr(msg, "defects", []))
    return mail


_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(rb"\r?\n[ \t]+")
_STABLE_FIELDS = frozenset({b"from", b"to", b"cc", b"subject", b"date", b"in-reply-to", b"references"})


def synthetic_id(raw: bytes) -> str:
    """A stable id for mail without a Message-ID, so a refetch deduplicates: a hash of the
    headers the writer set (not the trace headers servers add on the way) and the body."""
    found = _BLANK_LINE.search(raw)
    head, body = (raw[:found.start()], raw[found.end():]) if found else (raw, b"")
    fields = sorted(line.strip() for line in _FOLD.sub(b" ", head).split(b"\n")
                    if line.split(b":", 1)[0].strip().lower() in _STABLE_FIELDS)
    digest = hashlib.sha256(b"\n".join(fields) + b"\n\n" + body.replace(b"\r\n", b"\n").rstrip())
    return f"{digest.hexdigest()[:32]}@no-message-id.invalid"


_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]+:|[ \t]")  # a field, a continuation, an mbox line
_FROM_LINE = re.compile(rb"(?i)from:")


def _repair_header(raw: bytes) -> bytes:
    """Mail whose header has a stray line before its From: (a fold that lost its indent, a
    "---- Original email message ----" line on top) would be read as all body and no
    sender. A stray line with header lines after it is joined to the header above it
    (or dropped when it is the first line). ``raw`` itself when nothing needs repair."""
    found = _BLANK_LINE.search(raw, 0, MAX_HEADER_BYTES)
    end = found.start() if found else min(len(raw), MAX_HEADER_BYTES)
    lines = raw[:end].split(b"\n")
    stray = [i for i, line in enumerate(lines) if not _HEADER_LINE.match(line)]
    if not stray:
        return raw
    if not any(_FROM_LINE.match(line) for line in lines):
        return raw  # no header to rescue: a text without one
    last = max(i for i, line in enumerate(lines) if _HEADER_LINE.match(line) and line[:1] not in b" \t")
    if last < stray[0]:
        return raw  # the header ends at the first stray line; the rest is body
    fixed = lines[:stray[0]]
    for i in range(stray[0], len(lines)):
        line = lines[i]
        if i < last and not _HEADER_LINE.match(line):
            if fixed:
                fixed.append(b" " + line.lstrip())
            continue
        fixed.append(line)
    return b"\n".join(fixed) + raw[end:]


_SYSTEM_SENDER = re.compile(r"\s*(mailer-daemon|postmaster|mail-daemon)\b", re.IGNORECASE)


def _system_sender(headers: dict[str, list[str]], message_id: str) -> list[tuple[str, str]]:
    """A bounce From a bare "MAILER-DAEMON (Mail Delivery System)", with no domain: named at the
    domain of its Message-ID, so it is filed (as a bounce) like any other."""
    found = _SYSTEM_SENDER.match(_first(headers, "From"))
    if found is None:
        return []
    domain = message_id.rsplit("@", 1)[-1] if "@" in message_id else "localhost"
    return [("", f"{found.group(1).lower()}@{domain}")]


def _walk_body(msg: MimeMessage, mail: ParsedMail, max_attachment_bytes: int, max_text_chars: int) -> None:
    plain: list[str] = []
    html: list[str] = []
    leaves = 0

    def visit(part: MimeMessage, path: str, depth: int) -> None:
        nonlocal leaves
        ctype = _content_type(part)
        container = ctype.startswith("multipart/") and part.is_multipart()
        if container and depth >= MAX_DEPTH:
            mail.parts_not_read += 1
            return
        if not container:
            leaves += 1
            if leaves > MAX_PARTS:
                mail.parts_not_read += 1
                return
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
                    plain.append(_text_of(texts[0], max_text_chars))
                    for i, child in enumerate(children, 1):
                        if _content_type(child).startswith("multipart/"):
                            continue
                        if child is not texts[0] and _is_attachment(child, _content_type(child)):
                            visit(child, f"{path}.{i}" if path else str(i), depth + 1)
                    return
            for i, child in enumerate(children, 1):
                visit(child, f"{path}.{i}" if path else str(i), depth + 1)
            return
        if _is_attachment(part, ctype):
            _add_attachment(part, ctype, path, mail, max_attachment_bytes)
            return
        if ctype.startswith("multipart/"):  # without a boundary: one text
            plain.append(_text_of(part, max_text_chars))
        elif ctype == "text/html":
            html.append(_text_of(part, MAX_HTML_CHARS))
        elif ctype.startswith("text/"):
            plain.append(_text_of(part, max_text_chars))

    visit(msg, "", 0)
    if mail.parts_not_read:
        mail.defects.append(f"{mail.parts_not_read} parts not read: over {MAX_PARTS} parts or {MAX_DEPTH} levels")
    if plain and any(p.strip() for p in plain):
        mail.text = "\n\n".join(p.strip("\n") for p in plain if p.strip())
    elif html:
        mail.text = "\n\n".join(html_to_text(h, max_text_chars) for h in html)
        mail.from_html = True
    mail.text = mail.text[:max_text_chars].replace("\r\n", "\n").replace("\r", "\n").strip()


def _add_failure(block: MimeMessage, mail: ParsedMail) -> None:
    """A per-recipient block of a delivery-status report, when its action is "failed"."""
    if header_text(block.get("Action", "")).lower() != "failed":
        return
    recipient = header_text(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
    recipient = recipient.split(";", 1)[-1].strip().strip("<>").lower()
    if "@" in recipient:
        mail.failures.append(DeliveryFailure(recipient, header_text(block.get("Status", ""))[:20],
                                             header_text(block.get("Diagnostic-Code", ""))[:300]))


def _text_of(part: MimeMessage, max_chars: int) -> str:
    """The part's text, at most ``max_chars`` (a character takes at most 4 bytes in any charset we read)."""
    charset = part.get_content_charset() or part.get_param("charset")
    return decode_bytes(_payload_bytes(part)[:max_chars * 4], str(charset) if charset else "utf-8")[:max_chars]


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
    node = email.message_from_bytes(_repair_header(raw), policy=compat32)
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
