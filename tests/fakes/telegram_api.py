"""A fake Telegram Bot API server (aiohttp, 127.0.0.1) for python-telegram-bot over real HTTP.

It records every request per method, serves queued updates through long-poll getUpdates
with Telegram's confirmation rule (an offset confirms every update below it), and can
answer with scripted failures: 429 with retry_after, 500, slow responses, 403 "bot was
blocked by the user". sendMessage is checked the way Telegram checks it (length in UTF-16
units, entity parsing for parse_mode HTML/MarkdownV2, callback data size), so a bad send
fails here as it would there. ``rendered`` holds what a user would see in each chat.

    fake = FakeTelegram()
    await fake.start()
    Bot(token, base_url=fake.base_url, base_file_url=fake.base_file_url)
"""

from __future__ import annotations

import asyncio
import contextlib
import html.parser
import json
import re
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "123456789:AAFakeTokenForTestsOnly_abcdefghijk"
BOT_USER = {"id": 123456789, "is_bot": True, "first_name": "Support", "username": "support_bot",
            "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}

_MDV2_RESERVED = set("_*[]()~`>#+-=|{}.!")
_HTML_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "span",
              "tg-spoiler", "tg-emoji", "blockquote"}


@dataclass
class Scripted:
    """One scripted answer for the next call of a method."""

    status: int = 200
    description: str = ""
    retry_after: int | None = None
    delay_s: float = 0.0


@dataclass
class Recorded:
    method: str
    params: dict[str, Any]
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # field -> (filename, content)
    status: int = 200
    at_s: float = field(default_factory=time.monotonic)  # when the call arrived


def site_port(site: web.TCPSite) -> int:
    """The port a TCPSite started on port 0 got."""
    server: Any = site._server
    return int(server.sockets[0].getsockname()[1])


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class _HtmlCheck(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.error = ""
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HTML_TAGS and not self.error:
            self.error = f"Unsupported start tag \"{tag}\""

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_entities(text: str, parse_mode: str | None) -> tuple[str, str]:
    """(rendered text, error) the way Telegram parses ``text`` in ``parse_mode`` (strictly)."""
    if not parse_mode:
        return text, ""
    if parse_mode == "MarkdownV2":
        out, i = [], 0
        while i < len(text):
            ch = text[i]
            if ch == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 2
                continue
            if ch in _MDV2_RESERVED:
                return "", f"Character '{ch}' is reserved and must be escaped with the preceding '\\'"
            out.append(ch)
            i += 1
        return "".join(out), ""
    if parse_mode == "HTML":
        if re.search(r"&(?!(lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)", text):
            return "", "Unsupported HTML entity"
        if re.search(r"<(?![a-zA-Z/])", text):
            return "", "Unexpected end of name token"
        parser = _HtmlCheck()
        parser.feed(text)
        parser.close()
        return "".join(parser.text), parser.error
    return "", f"Unsupported parse_mode {parse_mode!r}"


class FakeTelegram:
    """One fake bot. ``requests[method]`` lists every call; ``rendered[chat_id]`` the texts
    shown in each chat, in order."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.requests: dict[str, list[Recorded]] = defaultdict(list)
        self.rendered: dict[str, list[str]] = defaultdict(list)
        self.sent: list[dict[str, Any]] = []  # every message the bot put in a chat (text, markup, files)
        self.updates: list[dict[str, Any]] = []  # unconfirmed updates, in id order
        self.confirmed_below = 0  # every update id below this was confirmed by an offset
        self.served: list[list[int]] = []  # update ids of each non-empty getUpdates answer
        self.blocked_chats: set[str] = set()
        self.migrated: dict[str, int] = {}
        self.require_https_webhook = False  # Telegram does; tests on loopback cannot
        self.webhook: dict[str, Any] = {}
        self.files: dict[str, tuple[str, bytes]] = {}  # file_id -> (file_path, content)
        self._scripts: dict[str, deque[Scripted]] = defaultdict(deque)
        self._next_update_id = 500_000
        self._next_message_id = 1
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, port: int = 0) -> str:
        app = web.Application(client_max_size=60 * 1024 * 1024)
        app.router.add_post(r"/bot{token}/{method}", self._api)
        app.router.add_get(r"/bot{token}/{method}", self._api)
        app.router.add_get(r"/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)  # Telegram's logs, not ours
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.url = f"http://127.0.0.1:{site_port(site)}"
        return self.url

    async def stop(self) -> None:
        self._closing.set()
        async with self._changed:
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self.url}/file/bot"

    # -- scripting -------------------------------------------------------------------

    def fail(self, method: str, status: int, description: str = "", *, retry_after: int | None = None,
             times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer ``status`` (429 with retry_after)."""
        if not description:
            description = {429: f"Too Many Requests: retry after {retry_after}", 500: "Internal Server Error",
                           403: "Forbidden: bot was blocked by the user", 400: "Bad Request",
                           401: "Unauthorized", 502: "Bad Gateway"}.get(status, "error")
        for _ in range(times):
            self._scripts[method].append(Scripted(status, description, retry_after))

    def answer_normally(self, method: str, times: int = 1) -> None:
        """The next ``times`` calls answer normally (to script a failure after them)."""
        for _ in range(times):
            self._scripts[method].append(Scripted())

    def slow(self, method: str, delay_s: float, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer normally after ``delay_s``."""
        for _ in range(times):
            self._scripts[method].append(Scripted(delay_s=delay_s))

    def migrate(self, chat_id: int | str, new_chat_id: int) -> None:
        """The group became a supergroup: sends to the old id answer 400 with migrate_to_chat_id."""
        self.migrated[str(chat_id)] = new_chat_id

    def block(self, chat_id: int | str) -> None:
        """The user of this chat blocked the bot: sends to it answer 403."""
        self.blocked_chats.add(str(chat_id))

    async def push_update(self, update: dict[str, Any]) -> int:
        """Queue an update (``update_id`` assigned when missing) for getUpdates."""
        if "update_id" not in update:
            update = {"update_id": self._next_update_id, **update}
        self._next_update_id = max(self._next_update_id, update["update_id"]) + 1
        self.updates.append(update)
        async with self._changed:
            self._changed.notify_all()
        return int(update["update_id"])

    def add_file(self, file_id: str, file_path: str, content: bytes) -> None:
        self.files[file_id] = (file_path, content)

    def texts(self, chat_id: int | str) -> list[str]:
        return self.rendered[str(chat_id)]

    # -- the API ---------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params, files = await self._params(request)
        record = Recorded(method, params, files)
        self.requests[method].append(record)
        if request.match_info["token"] != self.token:
            record.status = 401
            return _error(401, "Unauthorized")
        script = self._scripts[method].popleft() if self._scripts[method] else None
        if script is not None:
            if script.delay_s:
                await self._sleep(script.delay_s)
            if script.status != 200:
                record.status = script.status
                return _error(script.status, script.description, script.retry_after)
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            record.status = 404
            return _error(404, "Not Found: method not found")
        try:
            result = await handler(params, files)
        except _ApiError as exc:
            record.status = exc.status
            return _error(exc.status, exc.description, parameters=exc.parameters)
        return web.json_response({"ok": True, "result": result})

    async def _sleep(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), delay_s)

    @staticmethod
    async def _params(request: web.Request) -> tuple[dict[str, Any], dict[str, tuple[str, bytes]]]:
        params: dict[str, Any] = {}
        files: dict[str, tuple[str, bytes]] = {}
        if request.content_type == "application/json":
            params = await request.json()
        elif request.can_read_body:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[key] = (value.filename, value.file.read())
                else:
                    params[key] = str(value)
        else:
            params = dict(request.query)
        for key in ("reply_markup", "allowed_updates"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        return params, files

    # -- methods ---------------------------------------------------------------------

    async def _m_getMe(self, params: dict[str, Any], files: dict[str, Any]) -> Any:
        return BOT_USER

    async def _m_deleteWebhook(self, params: dict[str, Any], files: dict[str, Any]) -> Any:
        self.webhook = {}
        return True

    async def _m_setWebhook(self, params: dict[str, Any], files: dict[str, Any]) -> Any:
        if self.require_https_webhook and not str(params.get("url", "")).startswith("https://"):
            raise _ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        self.webhook = dict(params)
        return True

    async def _m_getUpdates(self, params: dict[str, Any], files: dict[str, Any]) -> Any:
        if self.webhook.get("url"):
            raise _ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                                 "use deleteWebhook to delete the webhook first")
        offset = int(params.get("offset") or 0)
        limit = int(params.get("limit") or 100)
        timeout_s = float(params.get("timeout") or 0)
        if offset:
            self.confirmed_below = max(self.confirmed_below, offset)
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        deadline = time.monotonic() + timeout_s
        async with self._changed:
            while not self.updates and not self._closing.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    break
        batch = self.updates[:limit]
        if batch:
            self.served.append([u["update_id"] for u in batch])
        return batch

    async def _m_sendMessage(self, params: dict[str, Any], files: dict[str, Any]) -> Any:
        chat_id = self._chat(params)
        text = str(params.get("text", ""))
        rendered, error = parse_entities(text, params.get("parse_mode"))
        if error:
            raise _ApiError(400, f"Bad Request: can't parse entities: {error}")
        if not rendered.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        if utf16_len(rendered) > 4096:
            raise _ApiError(400, "Bad Request: message is too long")
        markup = params.get("reply_markup")
        for row in (markup or {}).get("inline_keyboard", []):
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(data.encode()) <= 64:
                    raise _ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
        self.rendered[chat_id].append(rendered)
        return self._message(chat_id, {"text": rendered, "reply_markup": markup} if markup else {"text": rendered})

    async def _m_sendDocument(self, params: dict[str, Any], files: dict[str, tuple[str, bytes]]) -> Any:
        return self._media("document", params, files)

    async def _m_sendPhoto(self, params: dict[str, Any], files: dict[str, tuple[str, bytes]]) -> Any:
        return self._media("photo", params, files)

    async def _m_getFile(self, params: dict[str, Any], files: dict[str, Any]) -> Any:
        file_id = str(params.get("file_id", ""))
        if file_id not in self.files:
            raise _ApiError(400, "Bad Request: invalid file_id")
        path, content = self.files[file_id]
        return {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": len(content), "file_path": path}

    async def _m_answerCallbackQuery(self, params: dict[str, Any], files: dict[str, Any]) -> Any:
        return True

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        for path, content in self.files.values():
            if path == request.match_info["path"]:
                return web.Response(body=content)
        return web.Response(status=404)

    # -- helpers ---------------------------------------------------------------------

    def _chat(self, params: dict[str, Any]) -> str:
        chat_id = str(params.get("chat_id", ""))
        if not chat_id:
            raise _ApiError(400, "Bad Request: chat_id is empty")
        if chat_id in self.blocked_chats:
            raise _ApiError(403, "Forbidden: bot was blocked by the user")
        if chat_id in self.migrated:
            raise _ApiError(400, "Bad Request: group chat was upgraded to a supergroup chat",
                            {"migrate_to_chat_id": self.migrated[chat_id]})
        return chat_id

    def _media(self, kind: str, params: dict[str, Any], files: dict[str, tuple[str, bytes]]) -> Any:
        chat_id = self._chat(params)
        value = params.get(kind)
        if isinstance(value, str) and value.startswith("attach://"):
            value = files.get(value.removeprefix("attach://"))
        elif kind in files:
            value = files[kind]
        if isinstance(value, tuple):
            filename, content = value
            entry: dict[str, Any] = {"kind": kind, "filename": filename, "content": content, "uploaded": True}
        elif isinstance(value, str) and value.startswith(("http://", "https://")):
            entry = {"kind": kind, "url": value, "uploaded": False}
        elif isinstance(value, str) and value:
            entry = {"kind": kind, "file_id": value, "uploaded": False}
        else:
            raise _ApiError(400, f"Bad Request: there is no {kind} in the request")
        file_id = f"F{self._next_message_id}"
        media = {"file_id": file_id, "file_unique_id": f"u{file_id}"}
        payload = {kind: [dict(media, width=1, height=1)] if kind == "photo" else media}
        self.rendered[chat_id].append(f"[{kind}: {entry.get('filename') or entry.get('file_id') or entry.get('url')}]")
        return self._message(chat_id, payload, entry)

    def _message(self, chat_id: str, payload: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        message_id = self._next_message_id
        self._next_message_id += 1
        chat_type = "private" if not chat_id.startswith("-") else "supergroup"
        self.sent.append({"chat_id": chat_id, "message_id": message_id, **payload, **(extra or {})})
        return {"message_id": message_id, "date": int(time.time()), "from": BOT_USER,
                "chat": {"id": int(chat_id), "type": chat_type}, **payload}


class _ApiError(Exception):
    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


def _error(status: int, description: str, retry_after: int | None = None,
           parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=status)
