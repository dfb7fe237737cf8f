"""`bridge db backfill`: project what Redis holds (conversations with their transcripts,
contacts, thread refs) into the SQL record, for a bridge that ran before history existed
(or before the record kept thread refs: those refs then join their conversation's ref set,
so retention drops them with it, or leave Redis at once if it dropped the conversation).

Each conversation becomes one record named by its id and last update, so running the
backfill again, or alongside the projector, adds nothing twice (messages are keyed by
their ids, notices by theirs).
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.history.record import RECORD_VERSION, TurnRecord, raw
from bridge.history.writer import Writer
from bridge.model import Contact, encode, encode_record
from bridge.store import Store

BATCH = 100


async def backfill(store: Store, writer: Writer,
                   progress: Callable[[int, int], None] | None = None) -> tuple[int, int, int]:
    """Project every conversation, contact and thread ref in Redis; returns (conversations,
    contacts, refs)."""
    conversations = contacts = 0
    batch: list[str] = []

    async def flush() -> None:
        nonlocal conversations
        records = []
        for conversation in await store.get_many(batch):
            if conversation is None:
                continue
            transcript = await store.transcript(conversation.id, limit=10_000_000)
            records.append(TurnRecord(v=RECORD_VERSION, id=f"backfill:{conversation.id}:{conversation.updated_ms}",
                                      at_ms=conversation.updated_ms, conversation=raw(encode_record(conversation)),
                                      kept=[raw(encode(m)) for m in transcript], contacts=[],
                                      previous_status=None, cause="backfill:"))
        await writer.apply(records)
        conversations += len(records)
        batch.clear()
        if progress is not None:
            progress(conversations, contacts)

    async for conversation_id in store.scan_ids("conversation"):
        batch.append(conversation_id)
        if len(batch) >= BATCH:
            await flush()
    await flush()
    found: list[Contact] = []
    async for contact_id in store.scan_ids("contact"):
        contact = await store.contact(contact_id)
        if contact is not None:
            found.append(contact)
    async with writer.engine.begin() as conn:
        await writer.save_contacts(conn, found)
    contacts = len(found)
    return conversations, contacts, await _refs(store, writer)


async def _refs(store: Store, writer: Writer) -> int:
    """Thread refs into SQL first, then into their conversations' ref sets."""
    count = 0
    async for refs in store.ref_batches():
        await writer.save_refs(refs)
        await store.adopt_refs(refs)
        count += len(refs)
    return count
