"""Outbound MIME: replies threaded into the customer's mail program, and queue tickets.

Every header value that comes from outside (customer names, subjects, addresses) goes
through `clean_header`, which first decodes RFC 2047 encoded words (a name like
``=?utf-8?q?Ann=0D=0ABcc:_x@evil?=`` carries its line break encoded, and the email
package would decode it back into a real one: CVE-2024-6923, fixed only in Python
3.11.10 / 3.12.5), then removes CR, LF and other control characters. `build` checks
every header as it will be sent and refuses a message with a line break in a value,
on every Python. The library encodes non-ASCII values as RFC 2047 words again.
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u0085]+")
_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?")
_LINE_BREAK = re.compile(rb"\r?\n(?![ \t])|\r(?!\n)")
MAX_REFERENCES = 20
DECODE_ROUNDS = 3  # an encoded word may decode to another one


class UnsafeHeader(ValueError):
    """A header value would have become more than one header line."""


def _decoded(value: str) -> str:
    """RFC 2047 encoded words decoded, up to `DECODE_ROUNDS` times; what still looks like
    one afterwards is broken up, so nothing decodes it later."""
    for _ in range(DECODE_ROUNDS):
        if "=?" not in value:
            return value
        try:
            decoded = str(make_header(decode_header(value)))
        except Exception:  # an unknown charset, a broken word: left as text, broken up below
            break
        if decoded == value:
            break
        value = decoded
    return _ENCODED_WORD.sub(lambda m: "= ?" + m.group(0)[2:], value)


def clean_header(value: str, max_chars: int = 300) -> str:
    """One line of header text: encoded words decoded, then control characters (CR, LF, ...) as spaces."""
    value = _decoded(_CONTROL.sub(" ", value[:max_chars * 8]))  # decoding is not linear: cut first
    return re.sub(r"\s{2,}", " ", _CONTROL.sub(" ", value)).strip()[:max_chars]


def valid_address(address: str) -> bool:
    return bool(_ADDRESS.match(address)) and len(address) <= 254


def new_message_id(domain: str) -> str:
    """A Message-ID without angle brackets."""
    return f"{uuid.uuid4().hex}@{clean_header(domain) or 'bridge.invalid'}"


_ADDRESS_SPECIALS = re.compile(r'[<>@,;:\\"\[\]]')


def display_name(name: str) -> str:
    """A name for an address header: clean, and without the characters that make an address
    (``<>@,;:"``) and without unbalanced parentheses: the email package drops the quotes
    around a long name when it folds the line, and ``"Ann Bcc: v@evil.example ..."`` would
    then read as another recipient."""
    name = clean_header(_ADDRESS_SPECIALS.sub(" ", clean_header(name, 240)), 120)
    return name if _balanced(name) else clean_header(name.replace("(", " ").replace(")", " "))


def _balanced(text: str) -> bool:
    """Parentheses that open and close in order (an unclosed one would swallow the address)."""
    depth = 0
    for char in text:
        depth += 1 if char == "(" else -1 if char == ")" else 0
        if depth < 0:
            return False
    return depth == 0


def _address(name: str, addr: str) -> Address:
    if not valid_address(addr):
        raise ValueError(f"not a valid email address: {addr!r}")
    username, domain = addr.rsplit("@", 1)
    return Address(display_name=display_name(name), username=username, domain=domain)


def plus_address(address: str, token: str) -> str:
    """``support@x.com`` + token -> ``support+<token>@x.com``."""
    local, domain = address.rsplit("@", 1)
    return f"{local.split('+', 1)[0]}+{token}@{domain}"


def text_to_html(text: str) -> str:
    """Plain text as minimal, escaped HTML (paragraphs and line breaks kept)."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    body = "\n".join("<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>" for p in paragraphs)
    return ('<!DOCTYPE html><html><head><meta charset="utf-8"></head>'
            f'<body style="font-family:sans-serif;line-height:1.4">\n{body}\n</body></html>')


@dataclass
class Outgoing:
    """What to send; `build` turns it into a MIME message."""

    from_addr: str
    to_addr: str
    subject: str
    text: str
    from_name: str = ""
    to_name: str = ""
    reply_to: str = ""
    in_reply_to: str = ""
    references: list[str] = field(default_factory=list)
    auto_submitted: str = ""  # "auto-replied" on automatic answers, "auto-generated" on tickets
    html: str | None = None  # defaults to the text as HTML
    extra_headers: dict[str, str] = field(default_factory=dict)
    message_id: str = ""
    date_s: float | None = None


def build(out: Outgoing) -> EmailMessage:
    """A multipart/alternative (text + HTML) message with threading headers."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = _address(out.from_name, out.from_addr)
    msg["To"] = _address(out.to_name, out.to_addr)
    if out.reply_to:
        msg["Reply-To"] = _address(out.from_name, out.reply_to)
    msg["Subject"] = clean_header(out.subject, 400)
    msg["Date"] = formatdate(out.date_s, localtime=False, usegmt=True)
    message_id = out.message_id or new_message_id(out.from_addr.rsplit("@", 1)[1])
    msg["Message-ID"] = f"<{clean_header(message_id)}>"
    if out.in_reply_to:
        msg["In-Reply-To"] = f"<{clean_header(out.in_reply_to)}>"
    references = _ids(out.references)
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
    if out.auto_submitted:
        msg["Auto-Submitted"] = clean_header(out.auto_submitted)
        msg["X-Auto-Response-Suppress"] = "All"  # ask Exchange not to answer our automatic mail
    for name, value in out.extra_headers.items():
        if re.fullmatch(r"[A-Za-z0-9-]{1,60}", name):
            msg[name] = clean_header(value)
    msg.set_content(out.text.replace("\r\n", "\n"), subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(out.html if out.html is not None else text_to_html(out.text), subtype="html",
                        charset="utf-8", cte="quoted-printable")
    _check_folded(msg)
    return msg


def _check_folded(msg: EmailMessage) -> None:
    """Each header, folded as it will be sent, is one header (every line after its first is
    a continuation), and an address header names the same addresses as before folding.
    Raises `UnsafeHeader` otherwise."""
    for name, value in msg.items():
        folded = msg.policy.fold_binary(name, value).rstrip(b"\r\n")
        if _LINE_BREAK.search(folded):
            raise UnsafeHeader(f"refused to send: the {name} header would contain a line break")
        if name.lower() in ("from", "to", "cc", "reply-to"):
            sent = message_from_bytes(folded + b"\r\n\r\n", policy=SMTP)[name]
            if _specs(sent) != _specs(value):
                raise UnsafeHeader(f"refused to send: the {name} header would name other addresses once folded")


def _specs(header: object) -> list[str]:
    return [a.addr_spec for a in getattr(header, "addresses", ())]


def _ids(values: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for value in values:
        value = clean_header(value).strip("<>")
        if value and " " not in value and value not in seen:
            seen.append(value)
    # keep the first (thread root) and the newest ones, as RFC 5322 suggests
    return seen if len(seen) <= MAX_REFERENCES else [seen[0], *seen[-(MAX_REFERENCES - 1):]]

