"""A fake Slack Web API (and Socket Mode endpoint) on 127.0.0.1, for the real slack-sdk.

Point ``AsyncWebClient(base_url=fake.base_url)`` at it. It records every call per API
method (``fake.calls["chat.postMessage"]``), keeps posted messages per channel
(``fake.thread(channel, ts)``), and can be told to fail: ``fake.fail("chat.postMessage",
status=429, retry_after_s=3)``, ``status=500``, ``error="channel_not_found"`` or
``delay_s=...`` (a hung server: it answers late and does nothing), each for ``times``
calls.

Socket Mode: ``apps.connections.open`` answers ``ws://127.0.0.1:<port>/socket``; the
fake says ``hello`` to each connection, and ``await fake.socket_send(payload)`` sends an
envelope and returns the client's ack (or None when none came in time).

Also here: `sign` (a signed Events API request, as Slack sends it) and
`MemoryContext` (an `AdapterContext` over plain dicts, for tests without the bridge).
"""

from __future__ import annotations

import asyncio
import builtins
import itertools
import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web
from slack_sdk.signature import SignatureVerifier

from bridge.adapter import AdapterContext, DeskSettings, HealthState
from bridge.model import Contact, Conversation, Message


@dataclass
class Failure:
    status: int = 200
    error: str = ""
    retry_after_s: float | None = None
    delay_s: float = 0.0
    times: int = 1


@dataclass
class Post:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str = ""
    user: str = ""


class FakeSlack:
    def __init__(self, *, bot_token: str = "xoxb-test-token", app_token: str = "xapp-test-token",
                 bot_user_id: str = "UBOT", bot_id: str = "BBOT", team: str = "Acme",
                 channels: dict[str, str] | None = None) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.team = team
        # channel id -> name; unknown ids get channel_not_found when set, anything goes when empty
        self.channels: dict[str, str] = dict(channels or {})
        self.users: dict[str, dict[str, Any]] = {}
        self.not_member: set[str] = set()  # channels the bot was not invited to
        self.files: dict[str, dict[str, Any]] = {}  # file id -> name, mimetype, content
        self.file_downloads: list[str] = []  # file ids downloaded with the bot token
        self.calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.call_times_s: dict[str, list[float]] = defaultdict(list)  # time.monotonic() of each call
        self.posts: list[Post] = []
        self.failures: dict[str, list[Failure]] = defaultdict(list)
        self.sockets: list[web.WebSocketResponse] = []
        self.acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.posted = asyncio.Event()  # set on every chat.postMessage (tests clear it)
        self._seq = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._connected = asyncio.Event()
        self.port = 0

    # -- control ---------------------------------------------------------------------

    def add_user(self, user_id: str, *, name: str = "", email: str = "", display_name: str = "") -> None:
        self.users[user_id] = {"id": user_id, "name": name or user_id.lower(), "real_name": name,
                               "profile": {"email": email, "display_name": display_name, "real_name": name}}

    def add_file(self, file_id: str, name: str, mimetype: str, content: bytes) -> dict[str, Any]:
        """A file shared in Slack; returns its ``files`` entry as a message event carries it."""
        self.files[file_id] = {"name": name, "mimetype": mimetype, "content": content}
        return {"id": file_id, "name": name, "title": name, "mimetype": mimetype, "size": len(content),
                "url_private": self._file_url(file_id)}

    def _file_url(self, file_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/files-pri/T0001-{file_id}/{self.files[file_id]['name']}"

    def fail(self, method: str, *, status: int = 200, error: str = "", retry_after_s: float | None = None,
             delay_s: float = 0.0, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` fail this way."""
        self.failures[method].append(Failure(status, error, retry_after_s, delay_s, times))

    def thread(self, channel: str, ts: str) -> list[Post]:
        """The thread's first post and its replies, in order."""
        return [p for p in self.posts if p.channel == channel and (p.ts == ts or p.thread_ts == ts)]

    def top_level(self, channel: str) -> list[Post]:
        return [p for p in self.posts if p.channel == channel and not p.thread_ts]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # -- server ----------------------------------------------------------------------

    async def start(self) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/socket", self._socket)
        app.router.add_get("/files-pri/{team_file}/{name}", self._download)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            raw = await request.read()
            if request.content_type == "application/json":
                params.update(json.loads(raw or b"{}"))
            elif raw:
                params.update(parse_qsl(raw.decode()))
        for key in ("blocks", "attachments"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
        return params

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or params.get("token", "")
        self.calls[method].append(params)
        self.call_times_s[method].append(time.monotonic())
        queue = self.failures.get(method)
        if queue:
            failure = queue[0]
            failure.times -= 1
            if failure.times <= 0:
                queue.pop(0)
            if failure.delay_s:  # a hung server: answers late, and does nothing
                await asyncio.sleep(failure.delay_s)
                if failure.status == 200 and not failure.error:
                    return web.json_response({"ok": False, "error": "request_timeout"}, status=504)
            if failure.status == 429:
                headers = {"Retry-After": str(int(failure.retry_after_s or 1))}
                return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers=headers)
            if failure.status >= 500:
                return web.Response(status=failure.status, text="<html>upstream error</html>",
                                    content_type="text/html")
            if failure.error:
                return web.json_response({"ok": False, "error": failure.error})
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        return web.json_response(await handler(params, request))

    def _known(self, channel: str) -> bool:
        return not self.channels or channel in self.channels

    async def _m_auth_test(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        return {"ok": True, "url": "https://acme.slack.com/", "team": self.team, "user": "bridge",
                "team_id": "T0001", "user_id": self.bot_user_id, "bot_id": self.bot_id, "is_enterprise_install": False}

    async def _m_chat_postMessage(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        channel = str(params.get("channel", ""))
        if channel.startswith("#"):
            by_name = {name: cid for cid, name in self.channels.items()}
            channel = by_name.get(channel[1:], channel)
        if not self._known(channel):
            return {"ok": False, "error": "channel_not_found"}
        if channel in self.not_member:
            return {"ok": False, "error": "not_in_channel"}
        ts = f"{int(time.time())}.{next(self._seq):06d}"
        post = Post(channel=channel, ts=ts, text=str(params.get("text", "")), blocks=params.get("blocks") or [],
                    thread_ts=str(params.get("thread_ts") or ""), user=self.bot_user_id)
        self.posts.append(post)
        self.posted.set()
        return {"ok": True, "channel": channel, "ts": ts,
                "message": {"type": "message", "text": post.text, "user": self.bot_user_id, "bot_id": self.bot_id,
                            "ts": ts, "thread_ts": post.thread_ts or None}}

    async def _m_chat_update(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        for post in self.posts:
            if post.channel == params.get("channel") and post.ts == params.get("ts"):
                post.text = str(params.get("text", post.text))
                post.blocks = params.get("blocks") or post.blocks
                return {"ok": True, "channel": post.channel, "ts": post.ts, "text": post.text}
        return {"ok": False, "error": "message_not_found"}

    async def _m_users_info(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        user = self.users.get(str(params.get("user", "")))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    async def _m_conversations_info(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        channel = str(params.get("channel", ""))
        if not self._known(channel):
            return {"ok": False, "error": "channel_not_found"}
        return {"ok": True, "channel": {"id": channel, "name": self.channels.get(channel, channel.lower()),
                                        "is_member": channel not in self.not_member, "is_archived": False}}

    async def _m_conversations_join(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        return await self._m_conversations_info(params, request)

    async def _m_conversations_list(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        return {"ok": True, "channels": [{"id": c, "name": n, "is_member": True} for c, n in self.channels.items()],
                "response_metadata": {"next_cursor": ""}}

    async def _m_conversations_replies(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        posts = self.thread(str(params.get("channel", "")), str(params.get("ts", "")))
        return {"ok": True, "messages": [{"type": "message", "ts": p.ts, "text": p.text, "user": p.user,
                                          "thread_ts": p.thread_ts or p.ts} for p in posts], "has_more": False}

    async def _m_files_info(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        file_id = str(params.get("file", ""))
        if file_id not in self.files:
            return {"ok": False, "error": "file_not_found"}
        f = self.files[file_id]
        return {"ok": True, "file": {"id": file_id, "name": f["name"], "mimetype": f["mimetype"],
                                     "size": len(f["content"]), "url_private": self._file_url(file_id),
                                     "url_private_download": self._file_url(file_id) + "?download=1"}}

    async def _download(self, request: web.Request) -> web.Response:
        """files.slack.com: the bytes, only with the bot token (else Slack's login page)."""
        file_id = request.match_info["team_file"].split("-", 1)[-1]
        if request.headers.get("Authorization", "") != f"Bearer {self.bot_token}" or file_id not in self.files:
            return web.Response(status=200, text="<html>sign in to Slack</html>", content_type="text/html")
        self.file_downloads.append(file_id)
        f = self.files[file_id]
        return web.Response(body=f["content"], content_type=f["mimetype"])

    async def _m_apps_connections_open(self, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket?ticket={uuid.uuid4().hex}"}

    # -- socket mode -----------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": len(self.sockets),
                            "debug_info": {"host": "fake", "approximate_connection_time": 3600},
                            "connection_info": {"app_id": "A0001"}})
        self._connected.set()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                future = self.acks.get(str(data.get("envelope_id", "")))
                if future is not None and not future.done():
                    future.set_result(data)
        finally:
            self.sockets.remove(ws)
            if not self.sockets:
                self._connected.clear()
        return ws

    async def wait_socket(self, timeout_s: float = 5.0) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    async def socket_send(self, payload: dict[str, Any], *, kind: str = "events_api", retry_attempt: int = 0,
                          timeout_s: float = 5.0) -> dict[str, Any] | None:
        """Send one envelope to the connected client; its ack, or None when none came."""
        await self.wait_socket()
        envelope_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.acks[envelope_id] = future
        await self.sockets[-1].send_json({"envelope_id": envelope_id, "type": kind, "payload": payload,
                                          "accepts_response_payload": kind != "events_api",
                                          "retry_attempt": retry_attempt,
                                          "retry_reason": "timeout" if retry_attempt else ""})
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return None
        finally:
            self.acks.pop(envelope_id, None)


def sign(secret: str, body: str, *, timestamp: int | None = None,
         extra: dict[str, str] | None = None) -> dict[str, str]:
    """Headers Slack sends with an Events API / interactivity POST of ``body``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": str(signature)}
    if body.startswith("{"):
        headers["Content-Type"] = "application/json"
    else:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    headers.update(extra or {})
    return headers


# -- a bridge context without the bridge -------------------------------------------------


class MemoryState:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.blobs: dict[str, bytes] = {}

    async def get_bytes(self, key: str) -> bytes | None:
        return self.blobs.get(key)

    async def set_bytes(self, key: str, value: bytes, ttl_s: int | None = None) -> None:
        self.blobs[key] = value

    async def get(self, key: str) -> str | None:
        return self.data.get(key)

    async def set(self, key: str, value: str, ttl_s: int | None = None) -> None:
        self.data[key] = value

    async def set_if_absent(self, key: str, value: str, ttl_s: int | None = None) -> bool:
        if key in self.data:
            return False
        self.data[key] = value
        return True

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)


class MemoryConversations:
    def __init__(self) -> None:
        self.refs: dict[str, str] = {}

    async def get(self, conversation_id: str) -> Conversation | None:
        return None

    async def for_address(self, channel: str, address: str) -> Conversation | None:
        return None

    async def by_ref(self, ref: str) -> str | None:
        return self.refs.get(ref)

    async def list(self, status: str | None = None, limit: int = 100) -> builtins.list[Conversation]:
        return []

    async def transcript(self, conversation_id: str, limit: int = 200) -> builtins.list[Message]:
        return []

    async def contact(self, contact_id: str) -> Contact | None:
        return None


class _NoFanout:
    async def broadcast(self, topic: str, payload: bytes) -> None:
        return None

    async def subscribe(self, topic: str, on_subscribed: Any = None) -> Any:  # pragma: no cover - unused by slack
        raise NotImplementedError


class MemoryContext:
    """Collects what an adapter publishes (dropping repeated dedupe keys, like the bus)
    and the health it reports."""

    def __init__(self, settings: DeskSettings | None = None) -> None:
        self.published: list[Message] = []
        self.seen: set[str] = set()
        self.health: list[tuple[str, str]] = []
        self.state = MemoryState()
        self.conversations = MemoryConversations()
        self.fail_publish: Exception | None = None
        self.publish_delay_s = 0.0
        self.ctx = AdapterContext(publish=self.publish, state=self.state, conversations=self.conversations,
                                  fanout=_NoFanout(), report_health=self.report_health,  # type: ignore[arg-type]
                                  settings=settings or DeskSettings())

    async def publish(self, message: Message) -> bool:
        if self.publish_delay_s:
            await asyncio.sleep(self.publish_delay_s)
        if self.fail_publish is not None:
            raise self.fail_publish
        if message.dedupe_key and message.dedupe_key in self.seen:
            return False
        if message.dedupe_key:
            self.seen.add(message.dedupe_key)
        self.published.append(message)
        return True

    async def report_health(self, state: HealthState, detail: str) -> None:
        self.health.append((state, detail))
