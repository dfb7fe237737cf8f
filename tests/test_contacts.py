"""The contact book on a real Redis: a person of several contacts, fields that follow the
person, unlinking the person's first contact, and links made at the same moment."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from bridge.contacts import ContactBook, ContactError
from bridge.contactwrites import ContactWrites
from bridge.model import Contact, encode_record
from bridge.store import Store


async def contacts(store: Store, *names: str) -> list[str]:
    writes = ContactWrites()
    for n, name in enumerate(names):
        contact = Contact(id=f"c{n}", name=name, addresses=[f"api:{name.lower()}"])
        writes.save(contact, encode_record(contact.record()), shared=False)
    await store.write_contacts(writes)
    return [f"c{n}" for n in range(len(names))]


async def test_a_person_of_three_contacts(redis: aioredis.Redis) -> None:
    store = Store(redis, partitions=8)
    book = ContactBook(store)
    ann, bob, cat = await contacts(store, "Ann", "Bob", "Cat")
    await book.set_fields(bob, {"tier": "vip", "company": "Bob's"}, agent="ana", via="test")
    await book.set_fields(ann, {"company": "Acme"}, agent="ana", via="test")
    await book.link(ann, bob, agent="ana", via="test", confirmed=True)
    # seen from Cat: Ann and Bob's person joins Cat's (the agent's contact is the first)
    view = await book.link(cat, bob, agent="ana", via="test", confirmed=True)
    assert {c.id for c in view.contacts} == {ann, bob, cat}
    for member in (ann, bob, cat):
        contact = await store.contact(member)
        assert contact is not None
        assert contact.person == ("" if member == cat else cat)
        assert contact.fields == {"company": "Acme", "tier": "vip"}  # taken where Cat had none
        assert contact.current_tier() == "vip"
        assert sorted([member, *contact.linked]) == [ann, bob, cat]

    await book.unlink(bob, ann, agent="bo", via="test")
    alone = await store.contact(ann)
    assert alone is not None and alone.linked == [] and alone.fields == {"company": "Acme"}  # her own
    bob_now = await store.contact(bob)
    assert bob_now is not None and bob_now.linked == [cat]

    # the person's first contact leaves: Bob is on his own, with his own fields again
    await book.unlink(bob, cat, agent="bo", via="test")
    bob_now = await store.contact(bob)
    assert bob_now is not None and bob_now.linked == [] and bob_now.person == ""
    assert bob_now.fields == {"tier": "vip", "company": "Bob's"}
    history = (await book.view(bob)).events
    assert [(e.action, e.agent) for e in history][:3] == [("unlink", "bo"), ("unlink", "bo"), ("link", "ana")]

    with pytest.raises(ContactError, match="not linked"):
        await book.unlink(ann, cat, agent="bo", via="test")  # Ann left above
    with pytest.raises(ContactError, match="confirmation"):
        await book.link(ann, cat, agent="bo", via="test", confirmed=False)
    with pytest.raises(ContactError, match="no contact"):
        await book.find("api:nobody")
    assert (await book.find("api:cat")).id == cat


async def test_links_made_at_the_same_moment_make_one_person(redis: aioredis.Redis) -> None:
    store = Store(redis, partitions=8)
    book = ContactBook(store)
    ids = await contacts(store, *(f"P{n}" for n in range(8)))
    results = await asyncio.gather(*(book.link(ids[n], ids[n + 1], agent="ana", via="test", confirmed=True)
                                     for n in range(len(ids) - 1)), return_exceptions=True)
    assert all(not isinstance(r, BaseException) for r in results), results
    people = {(c.person or c.id) for c in await store.contacts_many(ids) if c is not None}
    assert len(people) == 1
    first = next(iter(people))
    contact = await store.contact(first)
    assert contact is not None and sorted([first, *contact.linked]) == sorted(ids)
