"""Which conversation a mail belongs to; neither merging nor splitting by accident.

Order of evidence: the Message-IDs it answers (In-Reply-To, then References newest
first, then the original ids inside a bounce), then a conversation token in the subject
(``[#3f9a0c1b2d4e-2]``), then one in the address it was sent to
(``support+3f9a0c1b2d4e-2@...``), else a new conversation. A candidate is taken only
if the sender belongs to it (the customer, an address of theirs seen on it, or an
agent); the reason of every decision is returned so it can be logged and kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from adapters.email.loops import base_address
from adapters.email.parse import ParsedMail

CONVERSATION_ID = r"[0-9a-f]{12}-\d{1,9}"
_SUBJECT_TOKEN = re.compile(rf"\[#({CONVERSATION_ID})\]")
_PLUS_TOKEN = re.compile(rf"^[^@+]+\+({CONVERSATION_ID})@")


def subject_token(subject: str) -> str:
    found = _SUBJECT_TOKEN.findall(subject)
    return found[-1] if found else ""


def address_token(mail: ParsedMail, own_addresses: Iterable[str]) -> str:
    """The token in a plus-address of ours the mail was sent to (our Reply-To)."""
    own = {base_address(a) for a in own_addresses}
    for address in [*mail.to, *mail.cc, *mail.delivered_to]:
        found = _PLUS_TOKEN.match(address)
        if found and base_address(address) in own:
            return found.group(1)
    return ""


def with_token(subject: str, conversation_id: str) -> str:
    """The subject with exactly one token for the conversation (others removed)."""
    bare = _SUBJECT_TOKEN.sub("", subject).strip()
    bare = re.sub(r"\s{2,}", " ", bare)
    return f"{bare} [#{conversation_id}]".strip()


_REPLY_PREFIX = re.compile(r"^\s*((re|aw|sv|fw|fwd|回复|答复|回覆|ответ)\s*(\[\d+\])?\s*[:：]\s*)+", re.IGNORECASE)


def reply_subject(subject: str, conversation_id: str) -> str:
    """"Re: <subject> [#id]" without piling up "Re: Re: AW:" prefixes."""
    bare = _REPLY_PREFIX.sub("", subject)
    return "Re: " + with_token(bare, conversation_id) if bare.strip() else f"Re: [#{conversation_id}]"


@dataclass
class ThreadMatch:
    conversation_id: str = ""
    reason: str = "new"  # in-reply-to | references | bounce-original | subject-token | address-token | new
    via: str = ""  # the Message-ID or token that matched
    rejected: str = ""  # a candidate refused, and why


class ThreadLookup(Protocol):
    async def conversation_for_message_id(self, message_id: str) -> str | None: ...
    async def exists(self, conversation_id: str) -> bool: ...
    async def belongs(self, conversation_id: str, sender: str) -> bool: ...


async def match(mail: ParsedMail, lookup: ThreadLookup, own_addresses: Iterable[str], *,
                sender_is_agent: bool) -> ThreadMatch:
    own = list(own_addresses)
    candidates: list[tuple[str, str, str]] = []  # (reason, via, conversation id or "" to look up)
    candidates += [("in-reply-to", mid, "") for mid in mail.in_reply_to]
    candidates += [("references", mid, "") for mid in reversed(mail.references) if mid not in mail.in_reply_to]
    candidates += [("bounce-original", mid, "") for mid in mail.original_ids]
    token = subject_token(mail.subject)
    if token:
        candidates.append(("subject-token", token, token))
    token = address_token(mail, own)
    if token:
        candidates.append(("address-token", token, token))
    rejected = ""
    tried: set[str] = set()
    for reason, via, conversation_id in candidates:
        conversation_id = conversation_id or (await lookup.conversation_for_message_id(via)) or ""
        if not conversation_id or conversation_id in tried:
            continue
        tried.add(conversation_id)
        if not await lookup.exists(conversation_id):
            rejected = rejected or f"{reason} {via}: no conversation {conversation_id}"
            continue
        if sender_is_agent or await lookup.belongs(conversation_id, mail.from_addr):
            return ThreadMatch(conversation_id, reason, via, rejected)
        rejected = rejected or f"{reason} {via}: sender {mail.from_addr} does not belong to {conversation_id}"
    return ThreadMatch(reason="new", rejected=rejected)
