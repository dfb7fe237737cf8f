"""The HTTP API's contact endpoints: read a customer's contact (the person, their
conversations on every channel, fields, history), set fields, link and unlink contacts.

``GET /api/v1/contacts/{id}``, ``GET /api/v1/contacts?q=<id|email|channel:address>``,
``GET /api/v1/conversations/{id}/contact``, ``PATCH /api/v1/contacts/{id}``
(``{"agent", "fields": {...}}``), ``POST /api/v1/contacts/{id}/links``
(``{"agent", "contact_id", "confirmed": true}``), ``DELETE /api/v1/contacts/{id}/links/{other}``
(``{"agent"}``). The calls need the channel's token; the logic is bridge.contacts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from bridge.contacts import ContactBook, ContactError, PersonView

VIA = "api"


class FieldsChange(msgspec.Struct, forbid_unknown_fields=True):
    agent: str
    fields: dict[str, str]


class LinkRequest(msgspec.Struct, forbid_unknown_fields=True):
    agent: str
    contact_id: str
    confirmed: bool = False  # the caller showed both contacts to the agent, who said yes


class UnlinkRequest(msgspec.Struct, forbid_unknown_fields=True):
    agent: str


Body = Callable[[web.Request, type[Any]], Awaitable[Any]]


class ContactRoutes:
    """``body(request, model)`` authenticates and decodes (raising an HTTP answer);
    ``authorized(request)`` checks the token of a request without one."""

    def __init__(self, contacts: ContactBook | None, body: Body, authorized: Callable[[web.Request], bool],
                 http_error: type[Exception]) -> None:
        self.contacts = contacts
        self.body = body
        self.authorized = authorized
        self.http_error = http_error

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.get("/api/v1/contacts", self.find),
            web.get("/api/v1/contacts/{contact_id}", self.get),
            web.get("/api/v1/conversations/{conversation_id}/contact", self.of_conversation),
            web.patch("/api/v1/contacts/{contact_id}", self.patch),
            web.post("/api/v1/contacts/{contact_id}/links", self.link),
            web.delete("/api/v1/contacts/{contact_id}/links/{other_id}", self.unlink),
        ]

    async def _answer(self, request: web.Request, model: type[Any] | None,
                      act: Callable[[ContactBook, Any], Awaitable[PersonView]]) -> web.Response:
        if self.contacts is None:
            return web.json_response({"error": "contacts need the bridge's store"}, status=503)
        try:
            if model is None:
                if not self.authorized(request):
                    return web.json_response(
                        {"error": "missing or wrong token: send 'Authorization: Bearer <token>'"}, status=401)
                body = None
            else:
                body = await self.body(request, model)
            view = await act(self.contacts, body)
        except ContactError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        except self.http_error as exc:
            response: web.Response = exc.response  # type: ignore[attr-defined]
            return response
        return web.json_response({"contact": view.as_json()})

    async def get(self, request: web.Request) -> web.Response:
        return await self._answer(request, None, lambda book, _: book.view(request.match_info["contact_id"]))

    async def find(self, request: web.Request) -> web.Response:
        async def act(book: ContactBook, _: Any) -> PersonView:
            return await book.view((await book.find(request.query.get("q", ""))).id)
        return await self._answer(request, None, act)

    async def of_conversation(self, request: web.Request) -> web.Response:
        async def act(book: ContactBook, _: Any) -> PersonView:
            return await book.view((await book.for_conversation(request.match_info["conversation_id"])).id)
        return await self._answer(request, None, act)

    async def patch(self, request: web.Request) -> web.Response:
        return await self._answer(request, FieldsChange, lambda book, body: book.set_fields(
            request.match_info["contact_id"], body.fields, agent=body.agent, via=VIA))

    async def link(self, request: web.Request) -> web.Response:
        return await self._answer(request, LinkRequest, lambda book, body: book.link(
            request.match_info["contact_id"], body.contact_id, agent=body.agent, via=VIA, confirmed=body.confirmed))

    async def unlink(self, request: web.Request) -> web.Response:
        return await self._answer(request, UnlinkRequest, lambda book, body: book.unlink(
            request.match_info["contact_id"], request.match_info["other_id"], agent=body.agent, via=VIA))
