"""The flows' typed state survives the store, and older records (plain maps) still read."""

from __future__ import annotations

import redis.asyncio as aioredis

from bridge.flowstate import SlaEvent, SlaState, SurveyState, flow_state, read_state
from bridge.model import Conversation
from bridge.store import Store
from tests.harness import commit


async def test_typed_state_is_stored_as_a_map_and_read_back(redis: aioredis.Redis) -> None:
    conversation = Conversation(id="abc-1", channel="api", address="c1")
    sla = flow_state(conversation, "sla", SlaState)
    sla.epoch = 2
    sla.events.append(SlaEvent(kind="first_response", level="breach", urgency="urgent", due_ms=5, at_ms=9))
    store = Store(redis, partitions=8)
    await commit(redis, store.save_ops(conversation, None))
    loaded = await store.get("abc-1")
    assert loaded is not None and isinstance(loaded.data["sla"], dict)  # plain data in Redis
    again = read_state(loaded, "sla", SlaState)
    assert again.epoch == 2 and again.breaches() == [sla.events[0]]


def test_an_older_record_reads_into_the_typed_state() -> None:
    older = Conversation(id="abc-2", channel="api", address="c2",
                         data={"survey": {"state": "scored", "score": "4", "retired_field": True},
                               "sla": {"epoch": "not a number"}})
    survey = read_state(older, "survey", SurveyState)
    assert survey.state == "scored" and survey.score == 4  # lax numbers, unknown keys ignored
    assert read_state(older, "sla", SlaState) == SlaState()  # unreadable: starts afresh
