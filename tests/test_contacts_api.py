"""Contacts over the HTTP API, through the whole bridge (real Redis, engine, webhook): a
customer's contact, fields agents set, links confirmed by an agent, and the flow engine
seeing a link made by another process at once."""

from __future__ import annotations

from typing import Any

from tests.harness import RunningBridge, running_bridge
from tests.test_api_e2e import AUTH, ENV, api_config
from tests.webhook import WebhookReceiver


async def customer_writes(b: RunningBridge, customer: str, text: str, message_id: str, **extra: str) -> str:
    r = await b.post("/api/v1/messages", headers=AUTH,
                     json={"customer_id": customer, "text": text, "message_id": message_id, **extra})
    assert r.status == 202
    conversation = await b.wait_for(lambda: b.store.for_address("api", customer), what=f"{customer}'s conversation")
    return str(conversation.id)


async def call(b: RunningBridge, method: str, path: str, body: Any = None, *,
               auth: dict[str, str] = AUTH) -> tuple[int, dict[str, Any]]:
    async with b.http.request(method, b.url + path, json=body, headers=auth) as response:
        return response.status, await response.json()


async def test_fields_links_and_history_over_the_api(redis_url: str, webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        first = await customer_writes(b, "maria-shop", "Where is my order 1234?", "m1", name="Maria")
        second = await customer_writes(b, "maria-erp", "Invoice for May please", "m2", name="Maria K",
                                       email="maria@factory.example")

        status, body = await call(b, "GET", f"/api/v1/conversations/{first}/contact")
        assert status == 200
        maria = body["contact"]
        assert [c["id"] for c in maria["conversations"]] == [first]
        assert maria["fields"] == {"company": "", "tier": "", "notes": ""}

        status, body = await call(b, "PATCH", f"/api/v1/contacts/{maria['id']}",
                                  {"agent": "ana", "fields": {"company": "Acme Fabs", "notes": "prefers email"}})
        assert status == 200
        assert body["contact"]["fields"] == {"company": "Acme Fabs", "tier": "", "notes": "prefers email"}
        assert {(e["agent"], e["action"], e["field"], e["value"], e["via"]) for e in body["contact"]["events"]} == {
            ("ana", "set", "company", "Acme Fabs", "api"), ("ana", "set", "notes", "prefers email", "api")}

        status, body = await call(b, "GET", "/api/v1/contacts?q=maria@factory.example")
        assert status == 200
        other = body["contact"]
        assert other["id"] != maria["id"] and [c["id"] for c in other["conversations"]] == [second]

        status, body = await call(b, "POST", f"/api/v1/contacts/{maria['id']}/links",
                                  {"agent": "ana", "contact_id": other["id"]})
        assert status == 400 and "confirmation" in body["error"]
        status, body = await call(b, "POST", f"/api/v1/contacts/{maria['id']}/links",
                                  {"agent": "ana", "contact_id": other["id"], "confirmed": True})
        assert status == 200
        linked = body["contact"]
        assert {c["id"] for c in linked["contacts"]} == {maria["id"], other["id"]}
        assert {c["id"] for c in linked["conversations"]} == {first, second}
        assert linked["events"][0]["action"] == "link" and linked["events"][0]["agent"] == "ana"

        # the other contact's view is the same person, with the same fields
        status, body = await call(b, "GET", f"/api/v1/contacts/{other['id']}")
        assert body["contact"]["fields"]["company"] == "Acme Fabs"
        assert {c["id"] for c in body["contact"]["conversations"]} == {first, second}

        status, body = await call(b, "POST", f"/api/v1/contacts/{other['id']}/links",
                                  {"agent": "ana", "contact_id": maria["id"], "confirmed": True})
        assert status == 409

        status, body = await call(b, "DELETE", f"/api/v1/contacts/{maria['id']}/links/{other['id']}",
                                  {"agent": "bo"})
        assert status == 200
        assert [c["id"] for c in body["contact"]["contacts"]] == [maria["id"]]
        assert [c["id"] for c in body["contact"]["conversations"]] == [first]
        assert (body["contact"]["events"][0]["action"], body["contact"]["events"][0]["agent"]) == ("unlink", "bo")
        status, body = await call(b, "GET", f"/api/v1/contacts/{other['id']}")
        assert [e["action"] for e in body["contact"]["events"]] == ["unlink", "link"]
        assert body["contact"]["fields"]["company"] == ""  # the person's fields stayed with Maria's contact


async def test_contact_calls_are_checked(redis_url: str, webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        conversation = await customer_writes(b, "cust-1", "hello", "m1")
        status, body = await call(b, "GET", f"/api/v1/conversations/{conversation}/contact", auth={})
        assert status == 401
        status, body = await call(b, "PATCH", "/api/v1/contacts/nobody", {"agent": "ana", "fields": {"tier": "x"}},
                                  auth={"Authorization": "Bearer wrong"})
        assert status == 401
        status, body = await call(b, "GET", "/api/v1/contacts/nobody")
        assert status == 404 and "nobody" in body["error"]
        contact_id = (await call(b, "GET", f"/api/v1/conversations/{conversation}/contact"))[1]["contact"]["id"]
        status, body = await call(b, "PATCH", f"/api/v1/contacts/{contact_id}",
                                  {"agent": "ana", "fields": {"birthday": "May"}})
        assert status == 400 and "company, tier, notes" in body["error"]
        status, body = await call(b, "PATCH", f"/api/v1/contacts/{contact_id}",
                                  {"agent": " ", "fields": {"tier": "vip"}})
        assert status == 400 and "agent" in body["error"]
        status, body = await call(b, "POST", f"/api/v1/contacts/{contact_id}/links",
                                  {"agent": "ana", "contact_id": contact_id, "confirmed": True})
        assert status == 400 and "itself" in body["error"]


async def test_a_link_made_in_another_process_is_seen_by_the_engine_at_once(redis_url: str,
                                                                             webhook: WebhookReceiver) -> None:
    """Maria writes from the shop (routine). An agent, in a web-only process, links her with
    the ERP contact that is tier VIP. Her next message is urgent: the engine, which had her
    contact cached, read it again."""
    config = api_config(webhook.url)
    async with running_bridge(redis_url, config, env=ENV) as b, \
            running_bridge(redis_url, {**config, "roles": ["web"]}, env=ENV) as web_only:
        shop = await customer_writes(b, "maria-shop", "Could you send the invoice for May?", "m1", name="Maria")
        await customer_writes(b, "maria-erp", "Price list for 2027?", "m2", email="maria@factory.example")
        await b.wait_for(lambda: len(webhook.texts_for("maria-shop")) == 1, what="the acknowledgement")
        conversation = await b.store.get(shop)
        assert conversation is not None and conversation.urgency == "routine"
        mine = (await call(web_only, "GET", f"/api/v1/conversations/{shop}/contact"))[1]["contact"]["id"]
        erp = (await call(web_only, "GET", "/api/v1/contacts?q=api:maria-erp"))[1]["contact"]["id"]
        status, _ = await call(web_only, "PATCH", f"/api/v1/contacts/{erp}",
                               {"agent": "ana", "fields": {"tier": "vip"}})
        assert status == 200
        status, _ = await call(web_only, "POST", f"/api/v1/contacts/{mine}/links",
                               {"agent": "ana", "contact_id": erp, "confirmed": True})
        assert status == 200

        await customer_writes(b, "maria-shop", "And the delivery note too, please", "m3")

        async def seen() -> Any:
            c = await b.store.get(shop)
            return c if c is not None and c.messages >= 2 else None
        conversation = await b.wait_for(seen, what="the second message handled")
        assert conversation.urgency == "urgent"
        assert "VIP customer (tier vip)" in conversation.urgency_reason


async def test_an_email_confirmed_by_an_agent_is_recorded_in_the_contacts_history(
        redis_url: str, webhook: WebhookReceiver) -> None:
    async with running_bridge(redis_url, api_config(webhook.url), env=ENV) as b:
        await customer_writes(b, "erp", "Price list for 2027?", "m1", email="maria@factory.example")
        shop = await customer_writes(b, "shop", "Where is my order?", "m2")
        r = await b.post(f"/api/v1/conversations/{shop}/actions", headers=AUTH,
                         json={"action": "link", "email": "maria@factory.example", "agent": "ana"})
        assert r.status == 202

        async def linked() -> Any:
            _, body = await call(b, "GET", f"/api/v1/conversations/{shop}/contact")
            return body["contact"] if body["contact"]["contacts"][0]["email"] else None
        contact = await b.wait_for(linked, what="the conversation joined the contact with that email")
        (event,) = contact["events"]
        assert (event["agent"], event["action"], event["field"], event["value"]) == (
            "ana", "link", "email", "maria@factory.example")
        assert [c["address"] for c in contact["conversations"]] == ["shop", "erp"]
