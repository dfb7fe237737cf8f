"""``!contact`` in a conversation's Slack thread, over the fake Slack server and the whole
bridge: show the customer's contact, set a field, link (shown first, made only on
confirm) and unlink; every value from a customer stays literal in Slack."""

from __future__ import annotations

import json

from bridge.model import Contact
from tests.fakes.slack_api import FakeSlack, Post
from tests.harness import RunningBridge, running_bridge
from tests.test_slack_e2e import agent_writes, config, customer_writes, env, fake  # noqa: F401 - fake: fixture
from tests.webhook import WebhookReceiver


async def answer(b: RunningBridge, slack: FakeSlack, root: Post, command: str, expected: str) -> Post:
    """Alice writes ``command`` in the thread; the bridge's answer that contains ``expected``."""
    before = len(slack.thread(root.channel, root.ts))
    assert await agent_writes(b, root, command) == 200

    def found() -> Post | None:
        posts = [p for p in slack.thread(root.channel, root.ts)[before:] if p.user in ("", "UBOT")]
        return next((p for p in posts if expected in json.dumps(p.blocks, ensure_ascii=False) + p.text), None)
    post: Post = await b.wait_for(found, what=f"an answer to {command!r} with {expected!r}")
    return post


async def contact_of(b: RunningBridge, customer: str) -> Contact:
    conversation = await b.store.for_address("api", customer)
    assert conversation is not None
    contact = await b.store.contact(conversation.contact_id)
    assert contact is not None
    return contact


async def test_contact_commands_in_the_thread(redis_url: str, fake: FakeSlack,  # noqa: F811
                                             webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, config(fake, webhook), env=env(fake)) as b:
        await customer_writes(b, "cust-erp", "Price list for 2027?", "m0")
        (erp_root,) = await b.wait_for(lambda: fake.top_level("C0AGENTS"), what="the ERP customer's thread")
        await b.post("/api/v1/messages", headers={"Authorization": "Bearer test-api-token-123"},
                     json={"customer_id": "cust-shop", "name": "Maria <!channel> *Boss*",
                           "text": "Could you send me the invoice for May?", "message_id": "m1"})
        root = (await b.wait_for(lambda: fake.top_level("C0AGENTS")[1:], what="the shop customer's thread"))[0]
        erp = await contact_of(b, "cust-erp")

        shown = await answer(b, fake, root, "!contact", "api · open")
        text = json.dumps(shown.blocks, ensure_ascii=False)
        assert "<!channel>" not in text and "&lt;!channel&gt;" in text  # the customer's name pings nobody
        assert "\u200b*\u200bBoss" in text  # nor formats anything

        await answer(b, fake, root, "!contact set tier vip", "*tier* set to vip by Alice")
        await answer(b, fake, root, "!contact set notes Call before 10 &amp; ask for <@U0BOB>", "notes")
        shop = await contact_of(b, "cust-shop")
        assert shop.fields == {"tier": "vip", "notes": "Call before 10 & ask for @U0BOB"}
        await answer(b, fake, root, "!contact set birthday May", "unknown field")

        proposal = await answer(b, fake, root, "!contact link api:cust-erp", "Same person?")
        assert f"!contact link {erp.id} confirm" in json.dumps(proposal.blocks, ensure_ascii=False)
        assert (await contact_of(b, "cust-shop")).linked == []  # shown, not linked

        await answer(b, fake, root, f"!contact link {erp.id} confirm", f"linked with {erp.id} by Alice")
        assert (await contact_of(b, "cust-shop")).linked == [erp.id]
        erp = await contact_of(b, "cust-erp")
        assert erp.fields["tier"] == "vip"  # one person, one set of fields
        # the other thread sees the same person, with both conversations
        both = await answer(b, fake, erp_root, "!contact", "same person")
        assert json.dumps(both.blocks, ensure_ascii=False).count("api · open") == 2

        await answer(b, fake, root, f"!contact unlink {erp.id}", f"{erp.id} unlinked by Alice")
        assert (await contact_of(b, "cust-shop")).linked == []
        events = await b.store.contact_events([erp.id])
        assert [json.loads(e)["action"] for e in events] == ["unlink", "link"]
        assert all(json.loads(e)["agent"] == "Alice" and json.loads(e)["via"] == "slack" for e in events)
        assert webhook.texts_for("cust-shop") and all("vip" not in t for t in webhook.texts_for("cust-shop"))


async def test_a_malformed_contact_command_is_explained(redis_url: str, fake: FakeSlack,  # noqa: F811
                                                        webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, config(fake, webhook), env=env(fake)) as b:
        await customer_writes(b, "cust-1", "Could you send me the invoice for May?", "m1")
        (root,) = await b.wait_for(lambda: fake.top_level("C0AGENTS"), what="the thread")
        await answer(b, fake, root, "!contact link", "!contact set company|tier|notes")
        await answer(b, fake, root, "!contact unlink nobody", "no contact is")
