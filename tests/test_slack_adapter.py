"""The Slack adapter's sending side, with the real slack-sdk against the fake Web API."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.slack.adapter import SlackAdapter
from adapters.slack.config import SlackConfig
from bridge.adapter import DeskSettings
from bridge.errors import IntegrationBroken, PermanentError, TransientError
from bridge.model import Message, Sender
from tests.fakes.slack_api import FakeSlack, MemoryContext

CHANNELS = {"C0AGENTS": "support", "C0URGENT": "support-urgent", "C0BILLING": "billing"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(channels=CHANNELS) as server:
        yield server


def make(fake: FakeSlack, settings: DeskSettings | None = None,
         **overrides: Any) -> tuple[SlackAdapter, MemoryContext]:
    values: dict[str, Any] = {"bot_token": fake.bot_token, "signing_secret": "secret", "base_url": fake.base_url,
                              "agents_channel": "C0AGENTS", "urgent_channel": "C0URGENT",
                              "urgent_mention": "<!here>", "rate_per_address_per_s": 1000.0, "timeout_s": 1.0}
    values.update(overrides)
    context = MemoryContext(settings)
    return SlackAdapter(SlackConfig(**values), context.ctx), context


def event(name: str, text: str = "", conversation_id: str = "abc123abc123-1", **data: Any) -> Message:
    summary = {"id": conversation_id, "channel": "telegram", "address": "42", "language": "en",
               "urgency": "urgent" if name == "escalation" else "routine", "urgency_reason": "", "queue": "default",
               "customer": "Maria", **data.pop("conversation", {})}
    return Message(kind="event", channel="slack", name=name, conversation_id=conversation_id, text=text,
                   sender=Sender(id="42", name="Maria"), data={"conversation": summary, **data})


def texts(posts: list[Any]) -> list[str]:
    return [p.text for p in posts]


async def test_escalation_opens_a_thread_in_the_urgent_channel_and_later_events_follow(fake: FakeSlack) -> None:
    adapter, _ = make(fake)
    delivered = await adapter.send(event("escalation", "URGENT: production line stopped"))
    (root,) = fake.top_level("C0URGENT")
    assert delivered.platform_id == root.ts
    assert delivered.ref == f"slack:C0URGENT:{root.ts}"
    assert root.text.startswith("<!here> ") and "production line stopped" in root.text
    assert [e["text"]["text"] for e in root.blocks[-1]["elements"]] == ["Claim", "Resolve"]

    await adapter.send(event("customer_message", "any news?"))
    await adapter.send(event("delivery", status="delivered"))
    await adapter.send(event("delivery", "bot was blocked by the user", status="failed",
                             reason="bot was blocked by the user"))
    await adapter.send(event("state", "assigned to Alice", change="claim"))
    thread = fake.thread("C0URGENT", root.ts)
    assert texts(thread[1:]) == ["Maria: any news?", ":white_check_mark: sent to customer",
                                 ":warning: not delivered: bot was blocked by the user",
                                 ":arrows_counterclockwise: assigned to Alice"]
    assert fake.top_level("C0AGENTS") == []


async def test_routine_conversations_open_in_the_agents_channel_without_mention(fake: FakeSlack) -> None:
    adapter, _ = make(fake)
    delivered = await adapter.send(event("new_conversation", "Could you send the invoice?"))
    (root,) = fake.top_level("C0AGENTS")
    assert delivered.ref == f"slack:C0AGENTS:{root.ts}"
    assert "<!here>" not in root.text and root.text.startswith("New conversation from Maria")


async def test_queues_and_urgency_name_their_channels(fake: FakeSlack) -> None:
    adapter, _ = make(fake, queue_channels={"billing": "C0BILLING"})
    await adapter.send(event("new_conversation", "refund?", "c-1", conversation={"queue": "billing"}))
    assert len(fake.top_level("C0BILLING")) == 1
    adapter, _ = make(fake, settings=DeskSettings(queue_slack_channels={"billing": "C0BILLING"}),
                      urgency_channels={"urgent": "C0AGENTS"})
    await adapter.send(event("new_conversation", "invoice?", "c-2", conversation={"queue": "billing"}))
    await adapter.send(event("escalation", "fire!", "c-3"))
    assert len(fake.top_level("C0BILLING")) == 2
    assert texts(fake.top_level("C0AGENTS"))[0].startswith("<!here> ")


async def test_the_mention_comes_from_the_bridge_settings_when_not_configured(fake: FakeSlack) -> None:
    adapter, _ = make(fake, settings=DeskSettings(urgent_mention="<!subteam^S0ONCALL>"), urgent_mention=None)
    await adapter.send(event("escalation", "line stopped"))
    (root,) = fake.top_level("C0URGENT")
    assert root.text.startswith("<!subteam^S0ONCALL> ")


async def test_an_event_without_a_thread_opens_one(fake: FakeSlack) -> None:
    adapter, _ = make(fake)
    delivered = await adapter.send(event("customer_message", "hello again", conversation={"urgency": "routine"}))
    (root,) = fake.top_level("C0AGENTS")
    assert delivered.ref == f"slack:C0AGENTS:{root.ts}"
    await adapter.send(event("customer_message", "still there?"))
    assert texts(fake.thread("C0AGENTS", root.ts)[1:]) == ["Maria: still there?"]


async def test_a_routine_thread_that_turns_urgent_moves_to_the_urgent_channel(fake: FakeSlack) -> None:
    adapter, _ = make(fake)
    await adapter.send(event("new_conversation", "question about my order"))
    (old,) = fake.top_level("C0AGENTS")
    delivered = await adapter.send(event("escalation", "now the line stopped!", new=False))
    (new,) = fake.top_level("C0URGENT")
    assert delivered.ref == f"slack:C0URGENT:{new.ts}" and new.text.startswith("<!here> ")
    assert "continues in a new thread" in fake.thread("C0AGENTS", old.ts)[-1].text
    await adapter.send(event("customer_message", "hurry"))
    assert texts(fake.thread("C0URGENT", new.ts)[1:]) == ["Maria: hurry"]


async def test_an_escalation_in_the_same_channel_stays_in_its_thread(fake: FakeSlack) -> None:
    adapter, _ = make(fake, urgent_channel=None)
    await adapter.send(event("new_conversation", "question"))
    delivered = await adapter.send(event("escalation", "line stopped", new=False))
    (root,) = fake.top_level("C0AGENTS")
    assert delivered.ref == ""
    (update,) = fake.thread("C0AGENTS", root.ts)[1:]
    assert update.text.startswith("<!here> :rotating_light: *now urgent*")


@pytest.mark.parametrize("failure", [{"status": 500}, {"status": 503}, {"error": "internal_error"},
                                     {"error": "ratelimited"}, {"delay_s": 1.5}])
async def test_server_errors_and_timeouts_are_transient(fake: FakeSlack, failure: dict[str, Any]) -> None:
    adapter, context = make(fake)
    fake.fail("chat.postMessage", **failure)
    with pytest.raises(TransientError):
        await adapter.send(event("escalation", "x"))
    assert all(state != "broken" for state, _ in context.health)


@pytest.mark.parametrize("error", ["account_inactive", "invalid_auth", "channel_not_found", "not_in_channel",
                                   "token_revoked"])
async def test_integration_errors_break_the_integration(fake: FakeSlack, error: str) -> None:
    adapter, context = make(fake)
    fake.fail("chat.postMessage", error=error)
    with pytest.raises(IntegrationBroken) as caught:
        await adapter.send(event("escalation", "x"))
    assert error in caught.value.reason
    assert context.health[-1][0] == "broken" and context.health[-1][1].startswith(f"slack: {error}")
    await adapter.send(event("escalation", "x"))  # fixed by the operator: healthy again
    assert context.health[-1][0] == "ok"


async def test_an_unknown_channel_is_a_broken_integration(fake: FakeSlack) -> None:
    adapter, _ = make(fake, agents_channel="C0GONE")
    with pytest.raises(IntegrationBroken, match="channel_not_found"):
        await adapter.send(event("new_conversation", "x"))


async def test_other_slack_errors_are_permanent(fake: FakeSlack) -> None:
    adapter, _ = make(fake)
    fake.fail("chat.postMessage", error="msg_too_long")
    with pytest.raises(PermanentError) as caught:
        await adapter.send(event("escalation", "x"))
    assert not isinstance(caught.value, IntegrationBroken | TransientError)


async def test_slack_sends_only_events(fake: FakeSlack) -> None:
    adapter, _ = make(fake)
    with pytest.raises(PermanentError):
        await adapter.send(Message(kind="reply", channel="slack", address="U1", text="hi"))


async def test_check_and_start_report_the_auth_state(fake: FakeSlack) -> None:
    adapter, context = make(fake)
    assert await adapter.check() == ("ok", "workspace Acme as bridge")
    await adapter.start()
    assert context.health == [("ok", "workspace Acme as bridge")]
    await adapter.stop()
    wrong, context = make(fake, bot_token="xoxb-revoked")
    assert await wrong.check() == ("broken", "slack: invalid_auth (check channels.slack.bot_token)")
    await wrong.start()
    assert context.health == [("broken", "slack: invalid_auth (check channels.slack.bot_token)")]
    await wrong.stop()


async def test_check_when_slack_is_down(fake: FakeSlack) -> None:
    adapter, _ = make(fake)
    fake.fail("auth.test", status=500)
    state, detail = await adapter.check()
    assert state == "degraded" and "500" in detail


async def test_posts_to_one_channel_are_paced(fake: FakeSlack) -> None:
    adapter, _ = make(fake, rate_per_address_per_s=5.0)
    for i in range(3):
        await adapter.send(event("escalation", f"case {i}", f"c-{i}"))
    times = fake.call_times_s["chat.postMessage"]
    assert times[2] - times[0] >= 0.3  # 5 per second: 0.4 s from first to third (margin for transit)


def buttons(post: Any) -> list[str]:
    (actions,) = [b for b in post.blocks if b["type"] == "actions"]
    return [e["text"]["text"] for e in actions["elements"]]


def status_line(post: Any) -> str:
    (context,) = [b for b in post.blocks if b.get("block_id") == "bridge:status"]
    return str(context["elements"][0]["text"])


async def test_state_changes_show_on_the_first_post(fake: FakeSlack) -> None:
    adapter, _ = make(fake)
    await adapter.send(event("escalation", "URGENT: production line stopped <!channel>"))
    (root,) = fake.top_level("C0URGENT")
    assert status_line(root) == "*Status:* open · unassigned" and buttons(root) == ["Claim", "Resolve"]

    await adapter.send(event("state", "assigned to Alice", change="claim",
                             conversation={"assignee": "Alice", "status": "open"}))
    (root,) = fake.top_level("C0URGENT")
    assert status_line(root) == "*Status:* open · *Assigned to:* Alice"
    assert root.text.startswith("<!here> ") and "&lt;!channel&gt;" in root.text
    assert any(b.get("text", {}).get("text") == "URGENT: production line stopped <!channel>" for b in root.blocks)

    await adapter.send(event("state", "resolved by Alice", change="resolve",
                             conversation={"assignee": "Alice", "status": "resolved"}))
    (root,) = fake.top_level("C0URGENT")
    assert status_line(root).startswith("*Status:* resolved") and buttons(root) == ["Reopen"]
    assert len(fake.calls["chat.update"]) == 2
    assert texts(fake.thread("C0URGENT", root.ts)[1:]) == [":arrows_counterclockwise: assigned to Alice",
                                                         ":arrows_counterclockwise: resolved by Alice"]


async def test_a_failed_first_post_update_does_not_fail_the_state_event(fake: FakeSlack) -> None:
    adapter, _ = make(fake)
    await adapter.send(event("escalation", "x"))
    fake.fail("chat.update", error="cant_update_message")
    delivered = await adapter.send(event("state", "resolved by Alice", conversation={"status": "resolved"}))
    assert delivered.platform_id


async def test_status_names_a_channel_the_bot_cannot_post_in(fake: FakeSlack) -> None:
    fake.not_member.add("C0URGENT")
    adapter, context = make(fake)
    state, detail = await adapter.check()
    assert state == "broken" and detail.startswith("channel C0URGENT: not_in_channel (invite the bot")
    await adapter.start()
    assert context.health[-1] == ("broken", detail)
    await adapter.stop()
    adapter, _ = make(fake, urgent_channel="C0GONE")
    assert (await adapter.check())[1].startswith("channel C0GONE: channel_not_found")


async def test_a_reopened_conversation_continues_its_thread(fake: FakeSlack) -> None:
    adapter, _ = make(fake)
    await adapter.send(event("new_conversation", "where is my invoice?"))
    await adapter.send(event("state", "resolved by Alice", conversation={"status": "resolved"}))
    (root,) = fake.top_level("C0AGENTS")
    assert buttons(root) == ["Reopen"]
    delivered = await adapter.send(event("new_conversation", "it did not arrive", reopened=True,
                                         conversation={"status": "open"}))
    assert delivered.ref == "" and len(fake.top_level("C0AGENTS")) == 1
    assert fake.thread("C0AGENTS", root.ts)[-1].text == "Maria: it did not arrive"
    assert buttons(root) == ["Claim", "Resolve"]


async def test_one_broken_channel_stays_reported_while_others_work(fake: FakeSlack) -> None:
    adapter, context = make(fake, urgent_channel="C0GONE")
    with pytest.raises(IntegrationBroken):
        await adapter.send(event("escalation", "x", "c-1"))
    await adapter.send(event("new_conversation", "y", "c-2"))  # the agents' channel works
    assert context.health[-1] == ("broken", "slack: channel_not_found")


async def test_channels_given_by_name_keep_one_thread(fake: FakeSlack) -> None:
    adapter, _ = make(fake, agents_channel="#support", urgent_channel="#support")
    await adapter.send(event("new_conversation", "question"))
    delivered = await adapter.send(event("escalation", "now urgent", new=False))
    assert delivered.ref == "" and len(fake.top_level("C0AGENTS")) == 1


async def test_refused_blocks_fall_back_to_text(fake: FakeSlack) -> None:
    adapter, _ = make(fake)
    fake.fail("chat.postMessage", error="invalid_blocks")
    delivered = await adapter.send(event("escalation", "URGENT: <!channel> line stopped"))
    (root,) = fake.top_level("C0URGENT")
    assert delivered.ref == f"slack:C0URGENT:{root.ts}"
    assert root.blocks == [] and root.text.startswith("<!here> ") and "&lt;!channel&gt; line stopped" in root.text


async def test_sla_events_land_in_the_thread_and_an_urgent_breach_pings(fake: FakeSlack) -> None:
    adapter, _ = make(fake)
    await adapter.send(event("escalation", "line stopped"))
    await adapter.send(event("sla_warning", "SLA warning: urgent first response due in 5 min",
                             conversation={"urgency": "urgent"}))
    await adapter.send(event("sla_breach", "SLA breach: urgent first response target missed by 3 min",
                             conversation={"urgency": "urgent"}))
    await adapter.send(event("survey_result", "Comment on satisfaction 2/5: <!channel> *slow*"))
    (root,) = fake.top_level("C0URGENT")
    warning, breach, survey = fake.thread("C0URGENT", root.ts)[1:]
    assert warning.text == ":hourglass_flowing_sand: *SLA warning*: urgent first response due in 5 min"
    assert breach.text == "<!here> :alarm_clock: *SLA breach*: urgent first response target missed by 3 min"
    assert "<!channel>" not in survey.text
    assert any(b.get("text", {}).get("text") == "Comment on satisfaction 2/5: <!channel> *slow*"
               for b in survey.blocks)


async def test_a_reopened_urgent_conversation_continues_in_its_urgent_thread(fake: FakeSlack) -> None:
    adapter, _ = make(fake)
    await adapter.send(event("escalation", "URGENT: line stopped"))
    await adapter.send(event("state", "resolved by Alice", conversation={"status": "resolved", "urgency": "urgent"}))
    (root,) = fake.top_level("C0URGENT")
    delivered = await adapter.send(event("escalation", "it stopped again", new=False, reopened=True,
                                         conversation={"status": "open"}))
    assert delivered.ref == "" and fake.top_level("C0AGENTS") == [] and len(fake.top_level("C0URGENT")) == 1
    last = fake.thread("C0URGENT", root.ts)[-1]
    assert last.text.startswith("<!here> :rotating_light: *reopened by the customer (urgent)*")
    assert "it stopped again" in last.text
    assert buttons(root) == ["Claim", "Resolve"]
    # the same for a reopening announced as a routine new conversation: the thread never moves
    await adapter.send(event("new_conversation", "and again", reopened=True, conversation={"status": "open"}))
    assert fake.top_level("C0AGENTS") == [] and fake.thread("C0URGENT", root.ts)[-1].text == "Maria: and again"
    assert all("continues in a new thread" not in p.text for p in fake.posts)


async def test_formatting_marks_in_a_customer_name_format_nothing(fake: FakeSlack) -> None:
    adapter, _ = make(fake)
    name = "*Maria_K* ~ `x`"
    await adapter.send(event("new_conversation", "hello", conversation={"customer": name}))
    (root,) = fake.top_level("C0AGENTS")
    await adapter.send(event("customer_message", "hi again", conversation={"customer": name}))
    shown = [root.text, root.blocks[0]["text"]["text"], root.blocks[1]["fields"][0]["text"],
             fake.thread("C0AGENTS", root.ts)[-1].blocks[0]["elements"][0]["text"]]
    fenced = "\u200b*\u200bMaria\u200b_\u200bK\u200b*\u200b \u200b~\u200b \u200b`\u200bx\u200b`\u200b"
    for text in shown:  # every mark fenced by zero-width spaces: Slack pairs none of them
        assert fenced in text
        assert text.replace("\u200b", "").count(name) == 1


async def test_a_long_fallback_text_is_never_cut_inside_an_entity(fake: FakeSlack) -> None:
    adapter, _ = make(fake)
    for pad in range(6):  # whichever way the cut falls, it never splits "&amp;"
        conversation_id = f"abc123abc123-{pad + 10}"
        await adapter.send(event("new_conversation", "x" * pad + "&" * 3000, conversation_id=conversation_id))
        await adapter.send(event("customer_message", "y" * pad + "R&D " * 1000, conversation_id=conversation_id))
    for post in fake.posts:
        assert post.text.endswith("…")
        assert not re.search(r"&[a-z]{0,3}$", post.text[:-1]), post.text[-10:]
