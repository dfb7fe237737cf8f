"""Full-text search over conversations, for the console.

With the SQL history on, the record is searched first (every conversation ever kept, in
the five languages: bridge/history/reader.py). Then, and alone when history is off, a
linear scan, bounded: the newest ``MAX_CONVERSATIONS`` conversations and the last
``MAX_MESSAGES`` entries of each transcript, read from Redis (it also finds what the
projector has not written yet, and customers by name, address or conversation id). Every
word of the query must appear (case-insensitive) in one message, or in the customer's
name, address or the conversation id. This is the one place the console searches. While
the record does not answer, the scan's hits come alone, with a note saying so.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.adapter import ConversationReader
from bridge.errors import RecordUnavailable
from bridge.model import Conversation

if TYPE_CHECKING:  # SQLAlchemy is imported only when history is on
    from bridge.history.reader import Reader

MAX_CONVERSATIONS = 500
MAX_MESSAGES = 500
MAX_HITS = 50
MAX_QUERY_CHARS = 200
_BATCH = 25  # transcripts read at once
_SEARCHED_KINDS = ("customer", "agent", "reply", "command")  # words people wrote (notes are commands)
RECORD_AWAY = ("Older conversations could not be searched just now (the history database did not answer): "
               "these are the ones kept live.")

log = logging.getLogger("bridge.console")


@dataclass(frozen=True, slots=True)
class Hit:
    conversation: Conversation
    snippet: str  # the matching message's text, around the first word found ("" for a name match)


def words(query: str) -> list[str]:
    return query[:MAX_QUERY_CHARS].casefold().split()


def _snippet(text: str, word: str, width: int = 140) -> str:
    at = max(0, text.casefold().find(word) - width // 3)
    return ("…" if at else "") + text[at:at + width]


async def find(reader: ConversationReader, query: str, status: str | None = None,
               history: Reader | None = None) -> tuple[list[Hit], str]:
    """The conversations matching every word of ``query``: the record's first (newest
    first), then the Redis scan's; and a note for the agent ("" when the search was whole)."""
    terms = words(query)
    if not terms:
        return [], ""
    hits: list[Hit] = []
    note = ""
    if history is not None:
        try:
            hits = await _recorded(history, query, terms, status)
        except RecordUnavailable as exc:
            log.warning("console search without the record", extra={"error": str(exc)})
            note = RECORD_AWAY
    found = {h.conversation.id for h in hits}
    for hit in await _scan(reader, terms, status):
        if len(hits) >= MAX_HITS:
            break
        if hit.conversation.id not in found:
            hits.append(hit)
    return hits, note


async def _recorded(history: Reader, query: str, terms: list[str], status: str | None) -> list[Hit]:
    hits = []
    for found in await history.conversations(q=query[:MAX_QUERY_CHARS], limit=MAX_HITS):
        if status is not None and found.conversation.status != status:
            continue
        texts = [m.text for m in found.matches if all(t in m.text.casefold() for t in terms)]
        hits.append(Hit(found.conversation, _snippet(texts[0], terms[0]) if texts else ""))
    return hits


async def _scan(reader: ConversationReader, terms: list[str], status: str | None) -> list[Hit]:
    conversations = await reader.list(status, limit=MAX_CONVERSATIONS)
    hits: list[Hit] = []
    for start in range(0, len(conversations), _BATCH):
        batch = conversations[start:start + _BATCH]
        contacts = await asyncio.gather(*(reader.contact(c.contact_id) for c in batch if c.contact_id))
        names = {c.id: f"{c.name} {c.email}" for c in contacts if c is not None}
        transcripts = await asyncio.gather(*(reader.transcript(c.id, MAX_MESSAGES) for c in batch))
        for conversation, transcript in zip(batch, transcripts, strict=True):
            meta = f"{conversation.id} {conversation.address} {names.get(conversation.contact_id, '')}".casefold()
            if all(t in meta for t in terms):
                hits.append(Hit(conversation, ""))
            else:
                for message in reversed(transcript):
                    text = message.text.casefold()
                    if message.kind in _SEARCHED_KINDS and all(t in text for t in terms):
                        hits.append(Hit(conversation, _snippet(message.text, terms[0])))
                        break
            if len(hits) >= MAX_HITS:
                return hits
    return hits
