"""What agents know and decide about a customer as a person, the same for every agent side
(console, Slack, HTTP API): the contact, its conversations on every channel, fields
(company, tier, notes), and links between contacts that are the same person.

A link is only ever made by an agent who saw both contacts (``confirmed``), never on what
a customer says about themselves. Every change is recorded (who, when, what) on the
contacts it touched. Changes are written at once (they are not messages of a
conversation) and bump a counter the flow engine checks, so its next turn sees them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

from bridge.model import Contact, Conversation, now_ms
from bridge.store import Store

FIELDS = ("company", "tier", "notes")
FIELD_MAX_CHARS = {"company": 200, "tier": 40, "notes": 4000}
_AGENT_MAX_CHARS = 80
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class ContactError(Exception):
    """A change that cannot be made; the text is shown to the agent as is."""

    def __init__(self, text: str, *, status: int = 400) -> None:
        super().__init__(text)
        self.status = status


class ContactEvent(msgspec.Struct, kw_only=True):
    """One recorded change: ``action`` is set, link or unlink."""

    at_ms: int
    agent: str
    action: str
    via: str = ""  # the agent side it came from: console, slack, api
    field: str = ""
    value: str = ""
    contact: str = ""  # the contact the change was about
    other: str = ""  # link / unlink: the other contact


@dataclass(frozen=True)
class PersonView:
    """A contact as an agent sees it: the person's contacts, fields, conversations, history."""

    contact: Contact
    contacts: list[Contact]  # every contact of the person, this one first
    conversations: list[Conversation]  # of every contact of the person, latest activity first
    events: list[ContactEvent]  # newest first

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.contact.id,
            "person": self.contact.person or self.contact.id,
            "fields": {name: self.contact.fields.get(name, "") for name in FIELDS},
            "contacts": [contact_json(c) for c in self.contacts],
            "conversations": [{
                "id": c.id, "channel": c.channel, "address": c.address, "contact_id": c.contact_id,
                "status": c.status, "urgency": c.urgency, "topic": c.topic, "messages": c.messages,
                "created_ms": c.created_ms, "updated_ms": c.updated_ms} for c in self.conversations],
            "events": [msgspec.to_builtins(e) for e in self.events],
        }


def contact_json(contact: Contact) -> dict[str, Any]:
    return {"id": contact.id, "name": contact.name, "email": contact.email, "language": contact.language,
            "tier": contact.current_tier(), "addresses": list(contact.addresses), "created_ms": contact.created_ms}


_event_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(ContactEvent)


def event_record(event: ContactEvent) -> bytes:
    """An event as kept in a contact's history (for changes the engine commits itself)."""
    return _event_encoder.encode(event)


class ContactBook:
    """The one place agent sides read and change contacts."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, contact_id: str) -> Contact:
        contact = await self.store.contact(contact_id) if contact_id else None
        if contact is None:
            raise ContactError(f"no contact {contact_id!r}", status=404)
        return contact

    async def find(self, query: str) -> Contact:
        """A contact by id, email, or ``<channel>:<address>``."""
        query = query.strip()
        contact_id: str | None = None
        if _EMAIL.match(query):
            contact_id = await self.store.contact_id_by_email(query, archive=True)
        elif ":" in query:
            channel, _, address = query.partition(":")
            (contact_id,) = await self.store.contact_ids_for([(channel.strip().lower(), address.strip())],
                                                             archive=True)
        found = await self.store.contact(contact_id or query) if (contact_id or query) else None
        if found is None:
            raise ContactError(f"no contact is {query!r} (give a contact id, an email or channel:address)",
                               status=404)
        return found

    async def for_conversation(self, conversation_id: str) -> Contact:
        conversation = await self.store.get(conversation_id)
        if conversation is None:
            raise ContactError(f"no conversation {conversation_id!r}", status=404)
        return await self.get(conversation.contact_id)

    async def view(self, contact_id: str) -> PersonView:
        contact = await self.get(contact_id)
        others = [c for c in await self.store.contacts_many(contact.linked) if c is not None]
        everyone = [contact, *others]
        conversations = await self.store.conversations_of([a for c in everyone for a in c.addresses])
        conversations.sort(key=lambda c: c.updated_ms, reverse=True)
        raw = await self.store.contact_events([c.id for c in everyone])
        events = sorted((_event_decoder.decode(r) for r in raw), key=lambda e: e.at_ms, reverse=True)
        unique = list({(e.at_ms, e.action, e.field, e.contact, e.other): e for e in events}.values())[:50]
        return PersonView(contact=contact, contacts=everyone, conversations=conversations, events=unique)

    async def set_fields(self, contact_id: str, changes: dict[str, Any], *, agent: str, via: str) -> PersonView:
        """Set the person's fields ("" clears one). They are kept on the person's first
        contact; what the linked contacts had fills its gaps until it is set there."""
        clean: dict[str, str] = {}
        for name, value in changes.items():
            if name not in FIELDS:
                raise ContactError(f"unknown field {name!r}; fields are {', '.join(FIELDS)}")
            if not isinstance(value, str) or len(value) > FIELD_MAX_CHARS[name]:
                raise ContactError(f"{name}: text of at most {FIELD_MAX_CHARS[name]} characters")
            clean[name] = value.strip()
        if not clean:
            raise ContactError(f"nothing to change; fields are {', '.join(FIELDS)}")
        contact = await self.get(contact_id)
        who = _agent(agent)
        changed = {name: value for name, value in clean.items() if contact.fields.get(name, "") != value}
        if changed:
            at = now_ms()
            events = [(contact.id, _event_encoder.encode(ContactEvent(
                at_ms=at, agent=who, action="set", via=via, field=name, value=value, contact=contact.id)))
                for name, value in changed.items()]
            await self.store.set_contact_fields(contact.person or contact.id, changed, events)
        return await self.view(contact.id)

    async def link(self, contact_id: str, other_id: str, *, agent: str, via: str, confirmed: bool) -> PersonView:
        """Link two contacts as the same person, once an agent saw both and confirmed it."""
        if not confirmed:
            raise ContactError("a link needs an agent's confirmation: look at both contacts, then confirm")
        contact = await self.get(contact_id)
        other = await self.get(other_id)
        if contact.id == other.id:
            raise ContactError("a contact cannot be linked with itself")
        who = _agent(agent)
        event = _event_encoder.encode(ContactEvent(at_ms=now_ms(), agent=who, action="link", via=via,
                                                   contact=contact.id, other=other.id))
        if not await self.store.link_contacts(contact.id, other.id, [(contact.id, event), (other.id, event)]):
            raise ContactError(f"{other.id} is already linked with {contact.id}", status=409)
        return await self.view(contact.id)

    async def unlink(self, contact_id: str, other_id: str, *, agent: str, via: str) -> PersonView:
        """Take ``other_id`` out of ``contact_id``'s person (either may be named first)."""
        contact = await self.get(contact_id)
        other = await self.get(other_id)
        if other.id not in contact.linked:
            raise ContactError(f"{other.id} is not linked with {contact.id}", status=409)
        who = _agent(agent)
        event = _event_encoder.encode(ContactEvent(at_ms=now_ms(), agent=who, action="unlink", via=via,
                                                   contact=contact.id, other=other.id))
        await self.store.unlink_contact(other.id, [(contact.id, event), (other.id, event)])
        return await self.view(contact.id)


def _agent(agent: str) -> str:
    who = " ".join(agent.split())[:_AGENT_MAX_CHARS]
    if not who:
        raise ContactError("agent: say who makes the change (it is recorded)")
    return who
