"""The console's contact panel: the open conversation's customer as a person (contacts
linked as the same person, their conversations on every channel, fields, history), and
the agent's changes to it. The logic is bridge.contacts; this only speaks HTTP for it.

A link is made only with ``confirmed: true``, which the page sends after the agent looked
at both contacts side by side and pressed "Same person".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from adapters.widget.console import Console
from bridge.contacts import ContactBook, ContactError, PersonView
from bridge.errors import StoreUnavailable

VIA = "console"
#: (method, path, handler name): the adapter mounts these on `ContactPanel`
ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/agent/contacts.js", "asset"),
    ("GET", "/agent/api/conversations/{id}/contact", "of_conversation"),
    ("GET", "/agent/api/contacts", "find"),
    ("GET", "/agent/api/contacts/{id}", "get"),
    ("PATCH", "/agent/api/contacts/{id}", "patch"),
    ("POST", "/agent/api/contacts/{id}/links", "link"),
    ("DELETE", "/agent/api/contacts/{id}/links/{other}", "unlink"),
]


class ContactPanel:
    def __init__(self, console: Console) -> None:
        self.console = console

    @property
    def book(self) -> ContactBook:
        if self.console.ctx.contacts is None:
            raise ContactError("contacts are not available in this process", status=503)
        return self.console.ctx.contacts

    async def asset(self, request: web.Request) -> web.StreamResponse:
        return await self.console.asset(request)

    async def _answer(self, request: web.Request, act: Callable[[str, dict[str, Any]], Awaitable[PersonView]],
                      *, write: bool = False) -> web.Response:
        agent = await self.console._require(request, write=write)
        body = await self.console._body(request) if write else {}
        try:
            view = await act(agent, body)
        except ContactError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        except StoreUnavailable:
            return web.json_response({"error": "the bridge's store is not answering; try again"}, status=503)
        return web.json_response({"contact": view.as_json()})

    async def of_conversation(self, request: web.Request) -> web.Response:
        async def act(agent: str, body: dict[str, Any]) -> PersonView:
            return await self.book.view((await self.book.for_conversation(request.match_info["id"])).id)
        return await self._answer(request, act)

    async def find(self, request: web.Request) -> web.Response:
        async def act(agent: str, body: dict[str, Any]) -> PersonView:
            return await self.book.view((await self.book.find(request.query.get("q", "")[:300])).id)
        return await self._answer(request, act)

    async def get(self, request: web.Request) -> web.Response:
        return await self._answer(request, lambda agent, body: self.book.view(request.match_info["id"]))

    async def patch(self, request: web.Request) -> web.Response:
        async def act(agent: str, body: dict[str, Any]) -> PersonView:
            fields = body.get("fields")
            if not isinstance(fields, dict):
                raise ContactError("send {fields: {company, tier, notes}}")
            return await self.book.set_fields(request.match_info["id"], fields, agent=agent, via=VIA)
        return await self._answer(request, act, write=True)

    async def link(self, request: web.Request) -> web.Response:
        async def act(agent: str, body: dict[str, Any]) -> PersonView:
            other = body.get("contact_id")
            if not isinstance(other, str) or not other:
                raise ContactError("send {contact_id, confirmed: true}")
            return await self.book.link(request.match_info["id"], other, agent=agent, via=VIA,
                                        confirmed=body.get("confirmed") is True)
        return await self._answer(request, act, write=True)

    async def unlink(self, request: web.Request) -> web.Response:
        return await self._answer(request, lambda agent, body: self.book.unlink(
            request.match_info["id"], request.match_info["other"], agent=agent, via=VIA), write=True)
