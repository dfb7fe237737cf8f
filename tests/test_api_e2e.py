"""End to end through the HTTP API channel, against a real Redis and a real webhook."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.harness import running_bridge
from tests.webhook import WEBHOOK_SECRET, WebhookReceiver

TOKEN = "test-api-token-123"
SECRET = WEBHOOK_SECRET
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {"T_API_TOKEN": TOKEN, "T_WEBHOOK_SECRET": SECRET}


def api_config(webhook_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "channels": {"api": {"token": "${T_API_TOKEN}", "webhook_url": webhook_url,
                             "webhook_secret": "${T_WEBHOOK_SECRET}", "max_message_bytes": 4096, **extra}},
        "triage": {"urgent_keywords": {"en": ["urgent", "production line stopped"], "zh": ["紧急"]}},
        "queues": {"default": {"email": "support@example.com", "reply_within_h": 24},
                   "billing": {"email": "billing@example.com", "reply_within_h": 48}},
    }



async def test_urgent_message_gets_instant_reply_and_escalation(redis_url: str, webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        r = await b.post("/api/v1/messages", headers=AUTH,
                         json={"customer_id": "cust-1", "text": "URGENT: production line stopped", "message_id": "m1"})
        assert r.status == 202
        await b.wait_for(lambda: webhook.texts_for("cust-1"), what="the instant reply")
        (reply,) = webhook.texts_for("cust-1")
        assert "urgent" in reply.lower() and "minutes" in reply
        conversation = await b.store.for_address("api", "cust-1")
        assert conversation is not None
        assert conversation.urgency == "urgent"
        assert "urgent" in conversation.urgency_reason.lower()
        assert webhook.bad_signatures == 0


async def test_routine_message_is_acknowledged_and_queued(redis_url: str, webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        r = await b.post("/api/v1/messages", headers=AUTH,
                         json={"customer_id": "cust-2", "text": "Could you send me the invoice for May?",
                               "name": "Maria", "message_id": "m2"})
        assert r.status == 202
        await b.wait_for(lambda: webhook.texts_for("cust-2"), what="the acknowledgement")
        (ack,) = webhook.texts_for("cust-2")
        conversation = await b.store.for_address("api", "cust-2")
        assert conversation is not None and conversation.urgency == "routine"
        assert "24 hours" in ack and conversation.id in ack
        (case,) = await b.store.queued("default")
        assert case.conversation_id == conversation.id
        assert case.address == "support@example.com"
        assert case.text == "Could you send me the invoice for May?"


async def test_agent_reply_reaches_the_customer_webhook(redis_url: str, webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "cust-3", "text": "Hello, a question"})
        conversation = await b.wait_for(lambda: b.store.for_address("api", "cust-3"))
        r = await b.post(f"/api/v1/conversations/{conversation.id}/messages", headers=AUTH,
                         json={"text": "Hi, this is Ana. Your order ships tomorrow.", "agent": "Ana"})
        assert r.status == 202
        await b.wait_for(lambda: len(webhook.texts_for("cust-3")) == 2, what="the agent's reply")
        ack, answer = webhook.texts_for("cust-3")
        assert answer == "Hi, this is Ana. Your order ships tomorrow."
        delivered = next(m for m in webhook.messages if m["text"] == answer)
        assert delivered["sender"]["name"] == "Ana"
        updated = await b.wait_for(lambda: b.store.get(conversation.id))
        assert updated.first_response_ms > 0 and updated.status == "pending" and updated.assignee == "Ana"
        transcript = [m.text for m in await b.store.transcript(conversation.id)]
        assert transcript == ["Hello, a question", ack, answer]
        assert webhook.bad_signatures == 0


async def test_resolve_and_reopen(redis_url: str, webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "cust-4", "text": "Question"})
        conversation = await b.wait_for(lambda: b.store.for_address("api", "cust-4"))
        r = await b.post(f"/api/v1/conversations/{conversation.id}/actions", headers=AUTH,
                         json={"action": "resolve", "agent": "Ana"})
        assert r.status == 202

        async def status() -> str:
            c = await b.store.get(conversation.id)
            return c.status if c else ""

        await b.wait_for(lambda: _eq(status(), "resolved"))
        await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "cust-4", "text": "One more thing"})
        await b.wait_for(lambda: _eq(status(), "open"))
        again = await b.store.for_address("api", "cust-4")
        assert again is not None and again.id == conversation.id  # reopened, not a new one


async def _eq(awaitable: Any, expected: Any) -> bool:
    return (await awaitable) == expected


async def test_one_contact_owns_addresses_linked_by_email_or_by_command(redis_url: str,
                                                                         webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        await b.post("/api/v1/messages", headers=AUTH,
                     json={"customer_id": "shop-77", "text": "Hello", "email": "Li.Wei@example.com", "name": "Li Wei"})
        first = await b.wait_for(lambda: b.store.for_address("api", "shop-77"))
        await b.post("/api/v1/messages", headers=AUTH,
                     json={"customer_id": "crm-9", "text": "Hi again", "email": "li.wei@example.com"})
        second = await b.wait_for(lambda: b.store.for_address("api", "crm-9"))
        assert second.id != first.id and second.contact_id == first.contact_id  # linked by email
        contact = await b.store.contact(first.contact_id)
        assert contact is not None and contact.addresses == ["api:shop-77", "api:crm-9"]

        await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "sms-5", "text": "it's me, Li"})
        third = await b.wait_for(lambda: b.store.for_address("api", "sms-5"))
        assert third.contact_id != first.contact_id
        r = await b.post(f"/api/v1/conversations/{third.id}/actions", headers=AUTH,
                         json={"action": "link", "email": "li.wei@example.com", "agent": "Ana"})
        assert r.status == 202

        async def linked() -> bool:
            c = await b.store.get(third.id)
            return c is not None and c.contact_id == first.contact_id

        await b.wait_for(linked, what="the link command")
        contact = await b.store.contact(first.contact_id)
        assert contact is not None and "api:sms-5" in contact.addresses


async def test_health_and_metrics_endpoints(redis_url: str, webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "m-1", "text": "Hello"})
        await b.wait_for(lambda: webhook.texts_for("m-1"))
        health = await b.get("/healthz")
        assert health.status == 200
        body = await health.json()
        assert body["status"] == "ok" and body["redis"] is True and body["adapters"]["api"]["state"] == "ok"
        metrics = await (await b.get("/metrics")).text()
        assert 'bridge_inbound_published_total{channel="api"}' in metrics
        assert 'bridge_sent_total{channel="api"}' in metrics
        assert "bridge_engine_messages_total" in metrics
        # the sends' times, as a Prometheus histogram of its own making (bridge.metrics.LoopHistogram)
        sends = next(f for f in text_string_to_metric_families(metrics) if f.name == "bridge_send_seconds")
        api = [s for s in sends.samples if s.labels.get("channel") == "api"]
        count = next(s.value for s in api if s.name == "bridge_send_seconds_count")
        buckets = [s.value for s in api if s.name == "bridge_send_seconds_bucket"]
        assert count >= 1 and buckets == sorted(buckets) and buckets[-1] == count
        assert next(s.value for s in api if s.name == "bridge_send_seconds_sum") > 0


async def test_disputes_are_driven_through_the_api(redis_url: str, webhook: WebhookReceiver) -> None:
    config = api_config(webhook.url)
    config["engine"] = {"steps": ["triage", "routing", "dispute"]}
    async with running_bridge(redis_url, config, env=ENV) as b:
        await b.post("/api/v1/messages", headers=AUTH, json={"customer_id": "dsp-1", "text": "I was charged twice"})
        conversation = await b.wait_for(lambda: b.store.for_address("api", "dsp-1"))
        actions = f"/api/v1/conversations/{conversation.id}/actions"
        r = await b.post(actions, headers=AUTH, json={"action": "dispute", "step": "start", "agent": "Ana",
                                                      "claim": "double charge on invoice 881"})
        assert r.status == 202
        await b.post(actions, headers=AUTH, json={"action": "dispute", "step": "next", "agent": "Ana",
                                                  "evidence": "bank statement"})

        async def step() -> str:
            c = await b.store.get(conversation.id)
            return str(c.data.get("dispute", {}).get("step", "")) if c else ""

        await b.wait_for(lambda: _eq(step(), "gather_evidence"), what="the dispute's second step")
        c = await b.store.get(conversation.id)
        assert c is not None and c.data["dispute"]["claim"] == "double charge on invoice 881"
        assert c.data["dispute"]["evidence"] == ["bank statement"]
