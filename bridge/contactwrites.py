"""What an engine's batch changes in contacts, written before the partition's commit.

Contacts span partitions (a person writes from several addresses), so their keys carry
one hash tag of their own (`keys.CONTACT_TAG`) and cannot be in a partition's commit on a
Redis Cluster. A batch's contact changes go first, in one script in the contacts' slot:

- a contact an erasure marked (`keys.erased`) is not written again: the batch read it
  before the erasure, and its partition's commit will be refused (`StaleCache`) anyway;
- records and indexes are SET (the same values when the batch runs again);
- the events a message caused are pushed once (`keys.contact_written`: a batch read again
  after a lost lease or a refused commit does not record them twice);
- the change counter other engines watch goes up once.

Should the partition's commit then fail for good (its messages dead-lettered), the contact
changes stay: a correct contact nobody's conversation names yet, found again by its
address or email when the customer writes next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge import keys
from bridge.model import Contact

WRITTEN_MARK_S = 600  # as long as a commit's once-mark: a batch is read again within it

# KEYS: the change counter, then per contact: its erasure mark, its record, its indexes;
# then per message: its written mark, then per event: the contact's erasure mark and events.
# ARGV: bump (1/0), contact count, per contact: index count, record, id; then message count,
# per message: event count, then the events; then the marks' expiry (s).
SCRIPT = """
local k, a = 2, 3
local changed = ARGV[1] == '1'
for _ = 1, tonumber(ARGV[2]) do
  local indexes = tonumber(ARGV[a])
  if redis.call('EXISTS', KEYS[k]) == 0 then
    redis.call('SET', KEYS[k + 1], ARGV[a + 1])
    for i = 1, indexes do redis.call('SET', KEYS[k + 1 + i], ARGV[a + 2]) end
  end
  k, a = k + 2 + indexes, a + 3
end
local causes = tonumber(ARGV[a])
a = a + 1
local expiry = ARGV[#ARGV]
for _ = 1, causes do
  local events = tonumber(ARGV[a])
  local first = redis.call('SET', KEYS[k], '1', 'NX', 'EX', expiry)
  k = k + 1
  for i = 1, events do
    if first and redis.call('EXISTS', KEYS[k]) == 0 then
      redis.call('LPUSH', KEYS[k + 1], ARGV[a + i])
      redis.call('LTRIM', KEYS[k + 1], 0, tonumber(ARGV[#ARGV - 1]) - 1)
      changed = true
    end
    k = k + 2
  end
  a = a + 1 + events
end
if changed then redis.call('INCR', KEYS[1]) end
return 1
"""


@dataclass(slots=True)
class ContactWrites:
    """A batch's contact changes, in the order its turns made them."""

    records: dict[str, tuple[bytes, list[str]]] = field(default_factory=dict)  # id -> (record, index keys)
    events: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)  # cause -> (contact id, event)
    shared: bool = False  # a contact others may hold changed: their caches are told

    def __bool__(self) -> bool:
        return bool(self.records or self.events)

    def save(self, contact: Contact, record: bytes, *, shared: bool) -> None:
        """The contact as the turn left it (a later turn's save replaces an earlier one)."""
        indexes: list[str] = []
        for address in contact.addresses:
            channel, _, addr = address.partition(":")
            indexes.append(keys.contact_by_address(channel, addr))
        if contact.email:
            indexes.append(keys.contact_by_email(contact.email))
        self.records[contact.id] = (record, indexes)
        self.shared = self.shared or shared

    def record(self, cause: str, events: list[tuple[str, bytes]]) -> None:
        """Events (contact id, event) one message (``cause``: its id) caused."""
        self.events.setdefault(cause, []).extend(events)

    def script_args(self) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the one script call that writes them all."""
        names: list[str] = [keys.CONTACTS_REV]
        args: list[Any] = [1 if self.shared else 0, len(self.records)]
        for contact_id, (record, indexes) in self.records.items():
            names += [keys.erased(contact_id), keys.contact(contact_id), *indexes]
            args += [len(indexes), record, contact_id]
        args.append(len(self.events))
        for cause, events in self.events.items():
            names.append(keys.contact_written(cause))
            args.append(len(events))
            for contact_id, event in events:
                names += [keys.erased(contact_id), keys.contact_events(contact_id)]
                args.append(event)
        return names, [*args, keys.CONTACT_EVENTS_MAX, WRITTEN_MARK_S]
