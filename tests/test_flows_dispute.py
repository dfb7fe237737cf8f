"""Disputes: the steps, visible to agents, the written confirmation by email, the follow-up."""

from __future__ import annotations

from bridge.flowstate import DisputeState, read_state
from bridge.model import Contact
from flows import dispute, language, topics
from tests.test_flows_helpers import Chat, Clock, events, make_config, replies


def chat(clock: Clock, channels: tuple[str, ...] = ("telegram", "email", "slack"), **kwargs: object) -> Chat:
    # the dispute topic tags the conversation: its steps start at once (the default only proposes them)
    config = make_config({"dispute": {"follow_up_days": 3}, "topics": {"tags": {"dispute": "dispute"}}},
                         clock=clock, channels=channels)
    return Chat(config, [language.build(config), topics.build(config), dispute.build(config)],
                channel="telegram", **kwargs)  # type: ignore[arg-type]


async def test_dispute_walks_through_its_steps_visible_to_agents() -> None:
    clock = Clock()
    c = chat(clock, contact=Contact(id="c1", name="Ana", email="ana@example.com"))
    turn = await c.say("I want to file a complaint: the compensation you offered is unacceptable")
    conv = c.conversation
    assert conv is not None and "dispute" in conv.tags
    (opened,) = events(turn, "dispute_step")
    assert opened.text == "Dispute step 1/5: identify the claim - dispute"
    assert opened.data["dispute"]["step"] == "identify_claim"

    turn = await c.command("dispute", step="next", claim="late delivery penalty of 5% of order 48213")
    assert events(turn, "dispute_step")[0].text == "Dispute step 2/5: gather evidence"
    turn = await c.say("here are the photos", attachments=["box.jpg", "label.jpg"])
    assert events(turn, "dispute_step")[0].text == "Dispute step 2/5: gather evidence - customer sent 2 file(s)"
    assert read_state(conv, "dispute", DisputeState).evidence == ["customer file: box.jpg", "customer file: label.jpg"]

    turn = await c.command("dispute", step="confirm_in_writing")
    assert "record the agreed resolution first" in events(turn, "dispute_step")[0].text
    assert read_state(conv, "dispute", DisputeState).step == "gather_evidence"

    await c.command("dispute", step="propose_resolution", resolution="5% credit note on the next order")
    turn = await c.command("dispute", step="next")
    (email,) = [m for m in turn.outbound if m.kind == "reply"]
    assert (email.channel, email.address) == ("email", "ana@example.com")
    assert email.text == ("Written confirmation for case abc123-1. We agreed on the following resolution: "
                          "5% credit note on the next order. Please reply if anything is not as agreed.")
    assert email.data["subject"] == "Confirmation of the agreed resolution, case abc123-1"
    assert events(turn, "dispute_step")[0].text == (
        "Dispute step 4/5: confirm it in writing - written confirmation sent by email to ana@example.com")

    turn = await c.command("dispute", step="next")
    assert events(turn, "dispute_step")[0].text == "Dispute step 5/5: follow up - customer will be asked in 3 days"
    clock.advance(days=2)
    assert await c.fire_due() == []
    clock.advance(days=1)
    fired = await c.fire_due()
    assert replies(fired)[0].text.startswith("We are following up on case abc123-1: has the agreed resolution")
    assert replies(fired)[0].channel == "telegram"
    turn = await c.command("dispute", step="closed", note="customer confirmed the credit note")
    assert events(turn, "dispute_step")[0].text == "Dispute closed"
    history = [h.step for h in read_state(conv, "dispute", DisputeState).history]
    assert history == ["identify_claim", "gather_evidence", "propose_resolution", "confirm_in_writing",
                       "follow_up", "closed"]


async def test_without_an_email_address_the_confirmation_goes_to_the_customers_channel() -> None:
    clock = Clock()
    c = chat(clock)
    await c.say("hello")
    await c.command("dispute", step="start")
    await c.command("dispute", resolution="full refund")
    turn = await c.command("dispute", step="confirm_in_writing")
    (reply,) = replies(turn)
    assert reply.channel == "telegram" and reply.text.startswith("Written confirmation for case abc123-1")
    assert "no email address on file" in events(turn, "dispute_step")[0].text


async def test_unknown_step_is_reported_to_the_agent() -> None:
    c = chat(Clock())
    await c.say("hello")
    turn = await c.command("dispute", step="negotiate")
    assert "unknown dispute step 'negotiate'" in events(turn, "dispute_step")[0].text
