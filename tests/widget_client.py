"""A widget visitor's tab as a browser speaks to the bridge: one WebSocket, every frame kept."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp

from tests.harness import wait_for


class Tab:
    """One browser tab's socket: collects every frame the server sends."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(json.loads(msg.data))
        self.close_code = self.ws.close_code

    @classmethod
    async def connect(cls, url: str, *, origin: str | None = "self", hello: dict[str, Any] | None = None,
                      **kwargs: Any) -> Tab:
        session = aiohttp.ClientSession()
        headers = dict(kwargs.pop("headers", {}))  # e.g. X-Forwarded-For, as a proxy adds it
        if origin is not None:
            headers["Origin"] = url if origin == "self" else origin
        try:
            ws = await session.ws_connect(url + "/widget/ws", headers=headers, **kwargs)
        except BaseException:
            await session.close()
            raise
        tab = cls(session, ws)
        if hello is not None:
            await ws.send_str(json.dumps({"type": "hello", **hello}))
        return tab

    async def welcome(self) -> dict[str, Any]:
        frame: dict[str, Any] = await wait_for(lambda: next((f for f in self.frames if f["type"] == "welcome"), None),
                                               what="welcome")
        return frame

    def items(self) -> list[dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for frame in self.frames:
            for item in frame.get("history", []) if frame["type"] == "welcome" else (
                    [frame["item"]] if frame["type"] == "item" else []):
                out.setdefault(item["id"], item)
        return list(out.values())

    def texts(self, who: str | None = None) -> list[str]:
        return [i["text"] for i in self.items() if who is None or i["from"] == who]

    async def say(self, cid: str, text: str) -> None:
        await self.ws.send_str(json.dumps({"type": "message", "cid": cid, "text": text}))

    async def closed(self) -> int:
        await asyncio.wait_for(self._reader, 10)
        assert self.close_code is not None
        return self.close_code

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)
        await self.session.close()
