"""Files visitors attach to their messages: a photo of the broken board, a PDF of the order.

``POST /widget/upload`` (the visitor's token as ``Authorization: Bearer``, the file as the
body, its type in ``Content-Type`` and its name, percent-encoded, in ``X-File-Name``)
stores the bytes in Redis for ``uploads.keep_days`` and answers ``{"id", "name", "mime",
"size"}``; the visitor then sends a message with ``"files": [id]``. Only the visitor who
uploaded a file can attach it. Agents (console, Slack, email tickets) and the visitor see
it through a signed link, ``GET /widget/files/<id>?type&name&exp&sig``, served under the
bridge's file policy (pictures inline, the rest downloads, never a page of ours).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.parse
from collections.abc import Callable
from typing import Any

from aiohttp import web

from adapters.widget.config import WidgetConfig
from adapters.widget.identity import VisitorTokens
from adapters.widget.limits import Buckets
from adapters.widget.metrics import REFUSED
from adapters.widget.peers import client_ip
from adapters.widget.quotas import Quota, StoredBytes
from bridge import filelinks
from bridge.adapter import AdapterContext
from bridge.errors import StorageFull
from bridge.model import Attachment
from bridge.untrusted import TooLarge, read_capped

FILE_KEY = "upload:"  # + id: the bytes, in the adapter's state
META_KEY = "upload_meta:"  # + id: {"visitor", "name", "mime", "size"}
_ID_CHARS = 22
UPLOADS_AT_ONCE = 8  # per process: each holds up to max_bytes in memory while it is stored


class Uploads:
    def __init__(self, config: WidgetConfig, ctx: AdapterContext, tokens: VisitorTokens, secret: bytes,
                 origin_allowed: Callable[[web.Request], bool]) -> None:
        self.config = config.uploads
        self.ctx = ctx
        self.tokens = tokens
        self.key = filelinks.signing_key("widget", secret.decode())
        self.origin_allowed = origin_allowed
        self.rate = Buckets(self.config.per_visitor_per_hour / 3600.0, max(1, int(self.config.per_message)))
        self.ttl_s = int(self.config.keep_days * 86400)
        self.trust_forwarded_for = config.trust_forwarded_for
        self.per_ip = Quota(ctx.state, "uploads-ip", self.config.per_ip_per_hour, 3600)
        self.total = Quota(ctx.state, "uploads", self.config.total_per_hour, 3600)
        self.stored = StoredBytes(ctx.state, "upload-bytes", int(self.config.max_stored_mb * 1024 * 1024), self.ttl_s)
        self.at_once = asyncio.Semaphore(UPLOADS_AT_ONCE)

    # -- HTTP ------------------------------------------------------------------------------

    def _cors(self, request: web.Request) -> dict[str, str]:
        """The widget runs on other sites: their pages may call us when allowed."""
        return {"Access-Control-Allow-Origin": request.headers.get("Origin", ""),
                "Access-Control-Allow-Methods": "POST", "Vary": "Origin",
                "Access-Control-Allow-Headers": "Authorization, Content-Type, X-File-Name",
                "Access-Control-Max-Age": "600"}

    async def preflight(self, request: web.Request) -> web.Response:
        if not self.origin_allowed(request):
            return web.Response(status=403)
        return web.Response(status=204, headers=self._cors(request))

    async def upload(self, request: web.Request) -> web.Response:
        if not self.origin_allowed(request):
            REFUSED.labels("origin").inc()
            return web.json_response({"error": "origin not allowed"}, status=403)
        headers = self._cors(request)

        def refuse(status: int, error: str, **extra: Any) -> web.Response:
            return web.json_response({"error": error, **extra}, status=status, headers=headers)

        token = self.tokens.verify(request.headers.get("Authorization", "").removeprefix("Bearer ").strip())
        if token is None:
            return refuse(401, "no valid visitor token: connect to the chat first")
        mime = request.content_type or "application/octet-stream"
        if mime not in self.config.types:
            return refuse(415, "this kind of file is not accepted", accepted=self.config.types)
        if request.content_length is not None and request.content_length > self.config.max_bytes:
            return refuse(413, "file too large", max_bytes=self.config.max_bytes)
        wait_s = self.rate.take(token.visitor)
        if wait_s:
            return refuse(429, "too many files", retry_after_ms=int(wait_s * 1000) + 1)
        try:
            ip = client_ip(request, self.trust_forwarded_for)
            for quota, key, error in ((self.per_ip, ip, "too many files from this address this hour"),
                                      (self.total, "", "too many files this hour; try again later")):
                wait_s = await quota.take(key)
                if wait_s:
                    REFUSED.labels("upload_quota").inc()
                    return refuse(429, error, retry_after_ms=int(wait_s * 1000) + 1)
            async with self.at_once:
                try:
                    data = await read_capped(request.content, self.config.max_bytes)
                except TooLarge:
                    return refuse(413, "file too large", max_bytes=self.config.max_bytes)
                if not data:
                    return refuse(400, "empty file")
                if not await self.stored.take(len(data)):
                    REFUSED.labels("upload_quota").inc()
                    return refuse(507, "file storage is full (channels.widget.uploads.max_stored_mb); try later")
                name = _file_name(request.headers.get("X-File-Name", ""), mime)
                file_id = secrets.token_urlsafe(16)[:_ID_CHARS]
                meta = {"visitor": token.visitor, "name": name, "mime": mime, "size": len(data)}
                await self.ctx.state.set_bytes(FILE_KEY + file_id, data, ttl_s=self.ttl_s)
                await self.ctx.state.set(META_KEY + file_id, json.dumps(meta), ttl_s=self.ttl_s)
        except StorageFull:
            REFUSED.labels("storage_full").inc()
            return refuse(507, "file storage is full (Redis memory, redis.max_memory_mb); try later")
        return web.json_response({"id": file_id, "name": name, "mime": mime, "size": len(data)}, headers=headers)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        wanted = filelinks.linked_attachment(request.query, self.key, request.match_info["id"])
        if wanted is None:
            return web.Response(status=403, text="invalid or expired link")
        data = await self.ctx.state.get_bytes(FILE_KEY + wanted.ref)
        if data is None:
            return web.Response(status=404, text="the file has expired")
        return web.Response(body=data, **filelinks.response_options(wanted.mime, wanted.name or "file"))

    # -- attaching ---------------------------------------------------------------------------

    async def attachments(self, visitor: str, ids: Any) -> list[Attachment] | None:
        """The visitor's own uploads named by a message, as attachments with links; None
        when any id is not one of theirs (or the list is malformed)."""
        if not isinstance(ids, list) or len(ids) > self.config.per_message:
            return None
        found = []
        for file_id in ids:
            if not isinstance(file_id, str) or not file_id.replace("-", "").replace("_", "").isalnum():
                return None
            raw = await self.ctx.state.get(META_KEY + file_id)
            meta = json.loads(raw) if raw else None
            if not isinstance(meta, dict) or meta.get("visitor") != visitor:
                return None
            attachment = Attachment(name=str(meta["name"]), mime=str(meta["mime"]), size=int(meta["size"]),
                                    ref=file_id)
            attachment.url = filelinks.attachment_link(self.ctx.public_url, "/widget/files", self.key, attachment,
                                                       self.ttl_s)
            found.append(attachment)
        return found


def _file_name(header: str, mime: str) -> str:
    """A safe display name: no directories, no control characters, 120 characters at most."""
    name = urllib.parse.unquote(header).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable() and c not in '<>:"|?*').strip(". ")[:120]
    return name or "file." + (mime.rsplit("/", 1)[-1] or "bin")
