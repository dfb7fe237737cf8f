"""Every Redis key, stream and group name the bridge uses, in one place."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable
from typing import TypeVar

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from bridge.model import address_hash, conversation_hash, partition_of

T = TypeVar("T")

PREFIX = "bridge:"

ENGINE_GROUP = "engine"
DISPATCH_GROUP = "dispatch"
PROJECTOR_GROUP = "projector"  # reads the outboxes into the SQL record
PROJECTOR_CONSUMER = "projector"  # one name: the lease holder reads a dead holder's pending entries as its own
PAYLOAD_FIELD = "m"  # the one field of a stream entry: the encoded Message
# or, on an inbound stream, the one field of an entry holding a publish batch: a msgpack
# array of encoded Messages (`bridge.bus`: one entry a batch and partition, not a message)
BATCH_FIELD = "b"
# messages in one such entry at most: a publish's are split there (the script unpacks their
# ids onto Lua's stack, which takes 8,000), a commit's outbound too (the indexes a
# dispatcher notes as sent while others of the entry wait stay a short string)
BATCH_MAX = 1000
REPLAY_FIELD = "r"  # set on entries an operator put back from the dead letters

META = PREFIX + "meta"  # hash: partitions, schema (bridge.schema)
WORKERS = PREFIX + "workers"  # zset: worker id -> heartbeat expiry (ms)
HEALTH = PREFIX + "health"  # hash: channel -> encoded health record
FANOUT = PREFIX + "fanout:"  # + topic: pub/sub channel
# pub/sub channel nobody listens to: an empty PUBLISH there is replicated, so a WAIT after it
# covers every write made before it on any connection (bus.read of entries read before)
REPLICATION_MARK = PREFIX + "replication-mark"


def replication_mark(beside: str) -> str:
    """A key in ``beside``'s slot a read writes so the WAIT after it covers what its
    primary holds (on a Redis Cluster, where a PUBLISH to `REPLICATION_MARK` is not
    replicated)."""
    return f"{REPLICATION_MARK}:{slot_tag(beside)}"


@functools.cache
def partition_tag(partition: int, partitions: int) -> str:
    """The hash tag every key of one partition carries, so a partition's keys share a Redis
    Cluster slot: ``{p.n}`` with the first ``n`` whose slot lies in partition ``p``'s even
    share of the 16384 slots. Partitions then spread evenly over a cluster's primaries when
    their count is a multiple of the primaries' (``{p}`` alone would not: on three
    primaries ``{0}``…``{7}`` fall 2/4/2)."""
    if not 0 <= partition < partitions <= REDIS_CLUSTER_HASH_SLOTS:
        raise ValueError(f"partition {partition} of {partitions}")
    n = 0
    while key_slot(f"{partition}.{n}".encode()) * partitions // REDIS_CLUSTER_HASH_SLOTS != partition:
        n += 1
    return f"{{{partition}.{n}}}"


def inbound(partition: int, partitions: int) -> str:
    return f"{PREFIX}in:{partition_tag(partition, partitions)}"


OUTBOUND = PREFIX + "out:"


def outbound(channel: str, partition: int, partitions: int) -> str:
    """Stream of one partition's outbound messages to ``channel`` (the engine of the
    partition writes it in its commit, in the partition's slot)."""
    return f"{OUTBOUND}{partition_tag(partition, partitions)}:{channel}"


def channel_stream(channel: str) -> str:
    """The channel's own outbound stream: what bridges before 2026-12 wrote (drained, then
    empty), release marks of dead letters written there; its lease is the channel's (its
    holder alone takes the partitions' streams, so one process paces the channel)."""
    return f"{OUTBOUND}{channel}"


def outbound_streams(channel: str, partitions: int) -> list[str]:
    """Every outbound stream of ``channel``, the channel's own first."""
    return [channel_stream(channel), *(outbound(channel, p, partitions) for p in range(partitions))]


def outbound_channel(stream: str) -> str:
    """The channel an outbound stream delivers to (a partition's stream is tagged, the
    channel's own is not)."""
    return tagged_id(stream) or stream.removeprefix(OUTBOUND)


QUEUE_MAX_LEN = 100_000  # routine cases kept per queue, over its partitions (roughly; older ones are trimmed)


def queue(name: str, partition: int, partitions: int) -> str:
    """Stream of the routine cases one partition filed in an email queue (the team's list,
    read across partitions; capped, and with history on, cases older than
    ``history.keep_in_redis_days`` go: SQL has them)."""
    return f"{PREFIX}queue:{partition_tag(partition, partitions)}:{name}"


def outbox(partition: int, partitions: int) -> str:
    """Stream of turn records for the SQL history (bridge/history), one per partition;
    trimmed only below what the projector acknowledged."""
    return f"{PREFIX}outbox:{partition_tag(partition, partitions)}"


OUTBOX_KEEP = 0  # acknowledged outbox entries are of no further use: each trim removes them all


def dead_letters(stream: str) -> str:
    """Stream of the entries of ``stream`` that could not be handled (in its slot: a
    replay puts them back and deletes them in one transaction)."""
    return f"{PREFIX}dlq:{stream}"


DEAD_LETTER_STREAMS = PREFIX + "dlq:*"  # matches every dead-letter stream (SCAN)


DEDUPE_TTL_S = 7 * 86400  # streams.dedupe_ttl_s's default
DEDUPE_SPANS = 3  # a dedupe set holds the keys of a third of the dedupe TTL (`dedupe_buckets`)
DEDUPE_SKEW_S = 300  # publishers' clocks may differ by this much: a set either side is looked in


def dedupe_set(stream: str, bucket: int) -> str:
    """The dedupe keys of the messages published to ``stream`` within one time bucket
    (a set in the stream's slot; `dedupe_buckets`)."""
    return f"{PREFIX}dedupe:{stream}:{bucket}"


DEDUPE_SETS = PREFIX + "dedupe:*"  # matches every dedupe set (SCAN)


def dedupe_buckets(now_s: float, ttl_s: int) -> tuple[int, list[int], int]:
    """Where a publish at ``now_s`` keeps its dedupe keys: (the bucket it adds to, every
    bucket that may hold a key added within ``ttl_s``, that bucket's expiry in Unix
    seconds). A bucket spans a third of the TTL, so a key is remembered for at least the
    TTL and at most a third longer, and a publish looks in four or five sets: one command
    each for the whole batch, instead of a key with its own expiry per message (which also
    filled Redis' keyspace with a key per message, slowing every lookup)."""
    span = -(-ttl_s // DEDUPE_SPANS)
    bucket = int(now_s // span)
    first, last = int((now_s - ttl_s - DEDUPE_SKEW_S) // span), int((now_s + DEDUPE_SKEW_S) // span)
    return bucket, list(range(last, first - 1, -1)), (bucket + 1) * span + ttl_s + DEDUPE_SKEW_S


def dedupe(stream: str, dedupe_key: str) -> str:
    """Schema 3's dedupe key, a string with its own expiry (schema 4 moves them into
    `dedupe_set`)."""
    return f"{PREFIX}seen:{stream}:{dedupe_key}"


def lease(stream: str) -> str:
    """Who owns a stream's consumer side right now (one engine per partition)."""
    return f"{PREFIX}lease:{stream}"


def sent_day(stream: str, day: int) -> str:
    """Hash: outbound message id -> platform message id, so a redelivery is not resent; one
    bucket per outbound stream and day (days since the epoch), expired after a few days.
    Written for the channel's own stream only (``sent:<channel>:<day>``, the name of old:
    not in the stream's slot); a partition's stream's ack is its record (`bridge.dispatcher`)."""
    return f"{PREFIX}sent:{stream.removeprefix(OUTBOUND)}:{day}"


def attempts(stream: str) -> str:
    """Hash: entry id -> failed attempts (transient send errors, step exceptions)."""
    return f"{PREFIX}attempts:{stream}"


def parts_done(stream: str) -> str:
    """Hash: id of an entry holding a publish batch -> its messages (indexes, comma-separated)
    a commit handled while others of the entry waited (a failed step): they are not handled
    again when the entry is read again. In the stream's slot; gone once the entry is acked."""
    return f"{PREFIX}parts:{stream}"


def retry_due(stream: str) -> str:
    """Zset: entry id -> when (ms) its next send attempt is due (after a transient failure)."""
    return f"{PREFIX}retry:{stream}"


def parked(stream: str) -> str:
    """Hash: lane (address) -> the dead-lettered entry of outbound ``stream`` later sends to
    it wait behind (in the stream's slot; the channel's own keeps ``parked:<channel>``)."""
    return f"{PREFIX}parked:{stream.removeprefix(OUTBOUND)}"


COMMIT_ONCE_TTL_S = 600


def commit_once(batch_id: str, beside: str = "") -> str:
    """Marks a committed batch for `COMMIT_ONCE_TTL_S`, so a retried commit is not applied
    twice, and a commit whose answer was lost can be asked about (`Bus.commit_applied`); in
    the hash slot of ``beside`` (a key the commit writes or is fenced by)."""
    return f"{PREFIX}once:{slot_tag(beside)}:{batch_id}" if beside else f"{PREFIX}once:{batch_id}"


def commit_gate(once: str) -> str:
    """What a commit's fence check writes to have Redis refuse its EXEC (in ``once``'s slot)."""
    return f"{once}:gate"


def by_slot(items: Iterable[T], key_of: Callable[[T], str]) -> dict[int, list[T]]:
    """``items`` grouped by the Redis Cluster hash slot of their key, in the order each
    slot first came (a script or a transaction keeps to one slot)."""
    groups: dict[int, list[T]] = {}
    for item in items:
        groups.setdefault(key_slot(key_of(item).encode()), []).append(item)
    return groups


def slot_tag(key: str) -> str:
    """A hash tag that puts a key in ``key``'s Redis Cluster slot: its own tag, or the
    whole name as one when it carries none."""
    start = key.find("{")
    end = key.find("}", start + 2) if start >= 0 else -1
    return key[start:end + 1] if end > 0 else f"{{{key}}}"


def timers(partition: int, partitions: int) -> str:
    """Zset of due-time-scored commands fired into the partition's stream."""
    return f"{PREFIX}timers:{partition_tag(partition, partitions)}"


@functools.lru_cache(maxsize=1 << 16)
def conversation_partition(conversation_id: str, partitions: int) -> int:
    """The partition of the address a conversation's id was made from: its keys sit in
    that partition's slot."""
    return partition_of(conversation_hash(conversation_id), partitions)


def conversation_tag(conversation_id: str, partitions: int) -> str:
    return partition_tag(conversation_partition(conversation_id, partitions), partitions)


def conversation(conversation_id: str, partitions: int) -> str:
    return f"{PREFIX}conv:{conversation_tag(conversation_id, partitions)}:{conversation_id}"


STATUSES = ("open", "pending", "resolved")


def by_status(status: str, partition: int, partitions: int) -> str:
    """Zset: a partition's conversations with ``status`` -> when last updated (ms); a list
    across partitions merges them."""
    return f"{PREFIX}convs:{partition_tag(partition, partitions)}:{status}"


# a status index's score is the conversation's updated_ms at most this far behind: within
# one such span (ms since the epoch, divided), a turn that keeps the status leaves it
INDEX_GRAIN_MS = 1_000


def status_index(conversation_id: str, status: str, partitions: int) -> str:
    """The `by_status` zset that holds this conversation while it has ``status``, scored
    by when it was updated (`INDEX_GRAIN_MS`)."""
    return by_status(status, conversation_partition(conversation_id, partitions), partitions)


CONVERSATIONS = PREFIX + "conv:*"  # matches every conversation's state key (SCAN)


def tagged_id(key: str) -> str:
    """What follows the tag in a tagged key: a conversation's id in its state key."""
    return key.partition("}:")[2]


def conversation_seq(address: str, partitions: int) -> str:
    """Counter of an address's conversations (``address``: its `address_hash`)."""
    return f"{PREFIX}convseq:{partition_tag(partition_of(address, partitions), partitions)}:{address}"


def current_conversation(channel: str, address: str, partitions: int) -> str:
    tag = partition_tag(partition_of(address_hash(channel, address), partitions), partitions)
    return f"{PREFIX}addr:{tag}:{channel}:{address}"


def transcript(conversation_id: str, partitions: int) -> str:
    return f"{PREFIX}transcript:{conversation_tag(conversation_id, partitions)}:{conversation_id}"


def ref(ref_name: str) -> str:
    """An external thread reference (Slack thread, email Message-ID) -> conversation id."""
    return f"{PREFIX}ref:{ref_name}"


def conversation_refs(conversation_id: str, partitions: int) -> str:
    """Set: the thread refs written for a conversation, so retention can drop them with it."""
    return f"{PREFIX}refs:{conversation_tag(conversation_id, partitions)}:{conversation_id}"


def conversation_keys(conversation_id: str, partitions: int) -> list[str]:
    """A conversation's state, transcript and ref set: what goes when it goes."""
    return [conversation(conversation_id, partitions), transcript(conversation_id, partitions),
            conversation_refs(conversation_id, partitions)]


REF_CACHE_S = 86_400  # a ref loaded back from the SQL record is a cache: it goes after a day


CONTACT_TAG = "{c}"  # every contact key's hash tag: one Redis Cluster slot for what spans partitions


def contact(contact_id: str) -> str:
    return f"{PREFIX}contact:{CONTACT_TAG}:{contact_id}"


def contact_by_address(channel: str, address: str) -> str:
    return f"{PREFIX}contact-addr:{CONTACT_TAG}:{channel}:{address}"


def contact_by_email(email: str) -> str:
    return f"{PREFIX}contact-email:{CONTACT_TAG}:{email.strip().lower()}"


ERASED_MARK_S = 3600  # how long an erasure keeps what the record still held from coming back


def erased(contact_id: str) -> str:
    """Set for a while by a contact's erasure: nothing of it is loaded back from SQL, and an
    engine's batch read before it does not write it again. Named by a digest: the keyspace
    keeps no name of the contact."""
    return f"{PREFIX}erased:{CONTACT_TAG}:{_digest(contact_id)}"


def erased_in(contact_id: str, partition: int, partitions: int) -> str:
    """The erasure's mark in a partition's slot: loading a conversation back into the
    partition checks it there."""
    return f"{PREFIX}erased:{partition_tag(partition, partitions)}:{_digest(contact_id)}"


def _digest(contact_id: str) -> str:
    return hashlib.blake2b(contact_id.encode(), digest_size=8).hexdigest()


def contact_written(cause: str) -> str:
    """Marks for a few minutes that the contact changes a message caused were written (an
    engine writes them before its partition's commit: a batch read again must not record
    their events twice)."""
    return f"{PREFIX}once:{CONTACT_TAG}:{cause}"


def adapter_state(channel: str, key: str) -> str:
    return f"{PREFIX}state:{channel}:{key}"


# -- what agents keep about a person (bridge/contacts.py), and the contacts' change counter --

# counter: bumped by every change to a contact others may hold
CONTACTS_REV = f"{PREFIX}contacts-rev:{CONTACT_TAG}"


def erasures_rev(partition: int, partitions: int) -> str:
    """Counter bumped by every erasure: the partition's engine drops what it cached, and a
    batch read before it is refused at its commit, which reads it (in the partition's slot)."""
    return f"{PREFIX}erasures-rev:{partition_tag(partition, partitions)}"


CONTACT_EVENTS_MAX = 200  # changes kept per contact (newest first)


def contact_fields(contact_id: str) -> str:
    """Hash: company, tier, notes as agents set them on this contact."""
    return f"{PREFIX}contact-fields:{CONTACT_TAG}:{contact_id}"


def contact_person(contact_id: str) -> str:
    """The contact this one was linked with as the same person (the person's first contact)."""
    return f"{PREFIX}contact-person:{CONTACT_TAG}:{contact_id}"


def contact_members(contact_id: str) -> str:
    """Set: the contacts linked with this one, when it is the person's first contact."""
    return f"{PREFIX}contact-members:{CONTACT_TAG}:{contact_id}"


def contact_events(contact_id: str) -> str:
    """List: who changed what on this contact, and when (newest first, capped)."""
    return f"{PREFIX}contact-events:{CONTACT_TAG}:{contact_id}"
