"""Mail we must never answer: auto-replies, bounces, mailing lists, our own mail (RFC 3834).

Answering any of these starts a mail loop (two auto-responders answering each other)
or spams a list. Such mail is still recorded; it only never gets an automatic answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from adapters.email.parse import ParsedMail

_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?\s*(reply|response)|out of (the )?office|autoreply|auto:|自动回复|自動回覆|"
    r"автоответ|автоматический ответ|undeliverable|undelivered mail|delivery status notification|"
    r"mail delivery (failed|failure|system)|returned mail)",
    re.IGNORECASE,
)
_BOUNCE_SENDERS = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon)@", re.IGNORECASE)


def base_address(address: str) -> str:
    """``support+tag@x.com`` -> ``support@x.com`` (plus-addressing ignored), lower case."""
    local, _, domain = address.strip().lower().partition("@")
    return f"{local.split('+', 1)[0]}@{domain}" if domain else local


def is_bounce(mail: ParsedMail) -> bool:
    """A delivery report about a mail of ours (it may name that mail's Message-ID)."""
    return bool(mail.content_type == "multipart/report" or mail.report_type or "x-failed-recipients" in mail.headers
                or (mail.from_addr and _BOUNCE_SENDERS.match(mail.from_addr)))


def loop_reason(mail: ParsedMail, own_addresses: Iterable[str] = ()) -> str:
    """Why this mail must not be answered ("" when it may be). The reason is logged and kept."""
    own = {base_address(a) for a in own_addresses if a}
    if mail.from_addr and base_address(mail.from_addr) in own:
        return "own-address"
    h = mail.headers
    auto = h.get("auto-submitted", "").split(";")[0].strip().lower()
    if auto and auto != "no":
        return f"auto-submitted: {auto}"
    precedence = h.get("precedence", "").strip().lower()
    if precedence in ("bulk", "junk", "list", "auto_reply", "auto-reply"):
        return f"precedence: {precedence}"
    if h.get("list-id"):
        return "mailing list (List-Id)"
    if "x-auto-response-suppress" in h:
        return f"x-auto-response-suppress: {h['x-auto-response-suppress'] or 'set'}"
    if mail.content_type == "multipart/report" or mail.report_type:
        return f"report ({mail.report_type or 'multipart/report'})"
    if not mail.from_addr or _BOUNCE_SENDERS.match(mail.from_addr):
        return "bounce (mailer-daemon)" if mail.from_addr else "no sender address"
    if h.get("return-path", "").strip() in ("<>", "") and "return-path" in h:
        return "bounce (empty Return-Path)"
    if "x-failed-recipients" in h:
        return "bounce (X-Failed-Recipients)"
    for name in ("x-autoreply", "x-autorespond", "x-auto-reply"):
        if name in h:
            return f"auto-reply ({name})"
    if _AUTO_SUBJECT.match(mail.subject):
        return "auto-reply (subject)"
    return ""
