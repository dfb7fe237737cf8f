"""The support flows in the whole bridge: HTTP API customers, real Redis, timers through the engine."""

from __future__ import annotations

from typing import Any

from bridge.model import now_ms
from tests.harness import Clock, running_bridge
from tests.test_flows_helpers import FAQ
from tests.webhook import WEBHOOK_SECRET, WebhookReceiver

TOKEN = "flows-api-token"
SECRET = WEBHOOK_SECRET
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {"T_FLOWS_TOKEN": TOKEN, "T_FLOWS_SECRET": SECRET}
STEPS = ["survey", "language", "urgency", "topics", "kb", "routing", "sla", "dispute"]


def config(webhook_url: str) -> dict[str, Any]:
    return {
        "channels": {"api": {"token": "${T_FLOWS_TOKEN}", "webhook_url": webhook_url,
                             "webhook_secret": "${T_FLOWS_SECRET}"}},
        "engine": {"steps": STEPS},
        "queues": {"default": {"email": "support@example.com"},
                   "billing": {"email": "billing@example.com", "topics": ["billing"]}},
        "flows": {"kb": {"path": str(FAQ)},
                  "sla": {"targets": {"urgent": {"first_response_min": 10, "resolution_h": 4},
                                      "routine": {"first_response_min": 240, "resolution_h": 48}}},
                  "survey": {"delay_min": 30}},
    }



async def say(b: Any, customer: str, text: str, message_id: str) -> None:
    r = await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": customer, "text": text,
                                                             "message_id": message_id})
    assert r.status == 202


async def test_faq_answered_in_russian_without_a_ticket(redis_url: str, webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, config(webhook.url), env=ENV) as b:
        await say(b, "ru-1", "Какой гарантийный срок на блоки питания?", "m1")
        await b.wait_for(lambda: webhook.texts_for("ru-1"), what="the knowledge-base answer")
        (answer,) = webhook.texts_for("ru-1")
        assert answer.startswith("На все компоненты действует гарантия производителя")
        assert "Нажмите кнопку, чтобы связаться с сотрудником." in answer
        assert webhook.messages[0]["buttons"] == [{"label": "Связаться с сотрудником", "value": "handoff"}]
        assert await b.store.queued("default") == []
        conversation = await b.store.for_address("api", "ru-1")
        assert conversation is not None and conversation.language == "ru"


async def test_urgent_chinese_case_escalated_and_sla_breach_fires(redis_url: str, webhook: WebhookReceiver) -> None:
    clock = Clock(now_ms())
    async with running_bridge(redis_url, config(webhook.url), env=ENV, clock_ms=clock) as b:
        await say(b, "zh-1", "我们的生产线停了，你们发的电容型号不对，请马上联系我", "m1")
        await b.wait_for(lambda: webhook.texts_for("zh-1"), what="the instant reply")
        assert webhook.texts_for("zh-1") == ["我们已收到您的紧急消息并已通知团队，工作人员将在几分钟内与您联系。"]
        conversation = await b.store.for_address("api", "zh-1")
        assert conversation is not None
        assert conversation.urgency == "urgent" and conversation.urgency_reason.startswith("line down")
        clock.advance(minutes=11)

        async def breached() -> Any:
            c = await b.store.get(conversation.id)
            events = (c.data.get("sla") or {}).get("events", []) if c else []
            return [e for e in events if e["level"] == "breach"]

        (breach,) = await b.wait_for(breached, what="the first-response breach")
        assert (breach["kind"], breach["urgency"]) == ("first_response", "urgent")


async def test_survey_after_resolution_through_the_engine(redis_url: str, webhook: WebhookReceiver) -> None:
    clock = Clock(now_ms())
    async with running_bridge(redis_url, config(webhook.url), env=ENV, clock_ms=clock) as b:
        await say(b, "en-1", "The invoice for order 3321 shows the wrong company name", "m1")
        conversation = await b.wait_for(lambda: b.store.for_address("api", "en-1"))
        assert conversation.queue == "billing"
        r = await b.post(f"/api/v1/conversations/{conversation.id}/messages", headers=AUTH,
                         json={"text": "Fixed, new invoice attached", "agent": "Bo"})
        assert r.status == 202
        await b.wait_for(lambda: len(webhook.texts_for("en-1")) == 2, what="the agent's reply")
        r = await b.post(f"/api/v1/conversations/{conversation.id}/actions", headers=AUTH,
                         json={"action": "resolve", "agent": "Bo"})
        assert r.status == 202

        async def resolved() -> bool:
            c = await b.store.get(conversation.id)
            return c is not None and c.status == "resolved"

        await b.wait_for(resolved, what="the resolution")
        clock.advance(minutes=31)  # the probe started by the agent's answer finds it resolved, arms the survey
        await b.wait_for(lambda: len(webhook.texts_for("en-1")) == 3, timeout_s=15, what="the survey")
        survey = webhook.messages[-1]
        assert survey["text"].startswith(f"Your case {conversation.id} is closed. How did we do?")
        assert [b_["value"] for b_ in survey["buttons"]] == [f"survey:{n}" for n in range(1, 6)]
        await say(b, "en-1", "survey:2", "m2")
        await b.wait_for(lambda: len(webhook.texts_for("en-1")) == 4, what="the reply to the score")
        assert webhook.texts_for("en-1")[-1].startswith("We are sorry we let you down.")
        c = await b.store.get(conversation.id)
        assert c is not None and c.data["survey"]["score"] == 2
        assert c.status == "open" and "low_satisfaction" in c.tags
