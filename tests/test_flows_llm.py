"""Optional LLM triage against a local fake OpenAI-compatible server: the verdict, and the
fallbacks (timeout, bad JSON, 429, budget) that leave triage to the rules and the model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from flows import llm, routing, triage
from flows.llm import LlmClient, LlmSettings
from tests.harness import running_bridge, wait_for
from tests.test_api_e2e import AUTH, ENV, api_config
from tests.test_flows_helpers import Chat, events, make_config, replies
from tests.webhook import WebhookReceiver

TOPICS = ["quality", "shipping", "general"]
LANGUAGES = ["en", "zh"]


@dataclass
class FakeLlm:
    """POST /v1/chat/completions answers ``reply`` (a dict, a raw string or an HTTP status)."""

    reply: Any = None
    hang: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        if self.hang:
            await self.released.wait()
        if isinstance(self.reply, int):
            return web.json_response({"error": "rate limited"}, status=self.reply, headers={"Retry-After": "30"})
        content = self.reply if isinstance(self.reply, str) else json.dumps(self.reply)
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": content}}]})


@pytest.fixture
async def fake() -> AsyncIterator[FakeLlm]:
    fake = FakeLlm()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        yield fake
    finally:
        fake.released.set()
        await runner.cleanup()


def client(fake: FakeLlm, **options: Any) -> LlmClient:
    settings = LlmSettings.model_validate({"url": fake.url, "model": "tiny", "timeout_s": 0.5,
                                           "headers": {"Authorization": "Bearer k"}, **options})
    return LlmClient(settings, TOPICS, LANGUAGES)


async def test_the_endpoint_classifies_with_a_json_schema(fake: FakeLlm) -> None:
    fake.reply = {"urgent": True, "topic": "quality", "language": "en", "reason": "line stopped by bad parts"}
    verdict = await client(fake).classify("our line stopped, the parts are bad")
    assert verdict is not None and verdict.urgent and verdict.topic == "quality"
    (sent,) = fake.requests
    assert sent["model"] == "tiny" and sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"]["properties"]["topic"]["enum"] == TOPICS
    assert sent["messages"][-1]["content"] == "our line stopped, the parts are bad"


@pytest.mark.parametrize(("reply", "error"), [
    ("this is not json", "not the JSON asked for"),
    ({"urgent": "maybe"}, "not the JSON asked for"),
    ({"urgent": False, "topic": "astrology", "language": "en"}, "outside the schema"),
    (429, "HTTP 429"),
    (500, "HTTP 500"),
])
async def test_bad_answers_fall_back_to_rules_and_model(fake: FakeLlm, reply: Any, error: str) -> None:
    fake.reply = reply
    c = client(fake)
    assert await c.classify("hello") is None
    assert error in c.last_error


async def test_a_slow_endpoint_times_out(fake: FakeLlm) -> None:
    fake.hang = True
    c = client(fake, timeout_s=0.2)
    assert await c.classify("hello") is None
    assert "Timeout" in c.last_error


async def test_the_budget_per_minute_is_kept(fake: FakeLlm) -> None:
    fake.reply = {"urgent": False, "topic": "general", "language": "en", "reason": ""}
    c = client(fake, per_minute=2)
    assert await c.classify("a") is not None and await c.classify("b") is not None
    assert await c.classify("c") is None
    assert "budget" in c.last_error and len(fake.requests) == 2


async def test_a_verdict_back_from_its_job_raises_urgency_never_calms() -> None:
    config = make_config()
    chat = Chat(config, [triage.build(config), routing.build(config)])
    turn = await chat.say("Could you check the cartons from the last delivery? Something looks off.")
    assert turn.conversation.urgency == "routine"
    turn = await chat.command(llm.COMMAND, urgent=True, topic="quality", language="en",
                              reason="possible damaged batch before a build")
    assert turn.conversation.urgency == "urgent"
    assert turn.conversation.urgency_reason == "LLM: possible damaged batch before a build"
    assert events(turn, "escalation") and "minutes" in replies(turn)[0].text

    calm = Chat(config, [triage.build(config), routing.build(config)], address="other")
    await calm.say("URGENT: our SMT line is down, wrong reels")
    turn = await calm.command(llm.COMMAND, urgent=False, topic="general", language="en", reason="")
    assert turn.conversation.urgency == "urgent"  # a second opinion never calms a case


async def test_the_job_turns_a_verdict_into_the_command_for_its_conversation(fake: FakeLlm) -> None:
    assert llm.job(make_config()) is None  # not configured: no job
    fake.reply = {"urgent": True, "topic": "quality", "language": "en", "reason": "batch defect"}
    run = llm.job(make_config({"llm": {"url": fake.url, "model": "tiny"}}))
    assert run is not None
    from bridge.model import Message

    command = await run(Message(kind="customer", channel="api", address="a", conversation_id="c-1", text="hi"))
    assert command is not None and (command.kind, command.name, command.conversation_id) == (
        "command", llm.COMMAND, "c-1")
    assert command.data["urgent"] is True
    fake.reply = 429
    assert await run(Message(kind="customer", channel="api", address="a", conversation_id="c-1", text="hi")) is None


async def test_the_second_reading_runs_as_a_job_through_the_running_bridge(fake: FakeLlm, redis_url: str,
                                                                          webhook: WebhookReceiver) -> None:
    """The partition does not wait for the LLM: the customer is acknowledged at once, and
    when the slow verdict says urgent, the urgent reply follows."""
    fake.hang = True
    fake.reply = {"urgent": True, "topic": "general", "language": "en", "reason": "the invoice blocks customs"}
    config = api_config(webhook.url)
    config["flows"] = {"llm": {"url": fake.url, "model": "tiny", "timeout_s": 20}}
    async with running_bridge(redis_url, config, env=ENV) as b:
        r = await b.post("/api/v1/messages", headers=AUTH,
                         json={"customer_id": "llm-1", "text": "Could you send me the invoice for May?"})
        assert r.status == 202
        (ack,) = await wait_for(lambda: webhook.texts_for("llm-1"), 10, "the acknowledgement")
        assert fake.requests  # the LLM was asked, and is still thinking
        fake.released.set()
        texts = await wait_for(lambda: len(webhook.texts_for("llm-1")) == 2 and webhook.texts_for("llm-1"), 10,
                               "the urgent reply after the second reading")
        assert texts[0] == ack and texts[1] != ack
        conversation = await b.store.for_address("api", "llm-1")
        assert conversation is not None and conversation.urgency == "urgent"
        assert conversation.urgency_reason == "LLM: the invoice blocks customs"
