"""Signed links to files that live on a platform behind the bridge's credentials.

A file a customer sends on Telegram, or an agent shares in Slack, can only be fetched
with the bot's token. The other side gets instead a link to the bridge,
``<public url><path>/<file id>?exp=<unix s>&sig=<hmac>`` (plus any fields the adapter
wants signed, such as the file's type); the bridge checks the signature (constant time)
and the expiry, then fetches the file with the token. Each adapter derives its key from
its own token, so no extra secret is needed and a new token invalidates old links.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from bridge.model import Attachment

SIGNATURE_HEX_CHARS = 40


def signing_key(purpose: str, token: str) -> bytes:
    return hashlib.sha256(f"support-bridge {purpose} file links\0".encode() + token.encode()).digest()


def signature(key: bytes, file_id: str, expires_s: int, signed: dict[str, str] | None = None) -> str:
    fields = "".join(f"\0{k}={v}" for k, v in sorted((signed or {}).items()))
    digest = hmac.new(key, f"{file_id}\0{expires_s}{fields}".encode(), hashlib.sha256).hexdigest()
    return digest[:SIGNATURE_HEX_CHARS]


def link(base_url: str, path: str, key: bytes, file_id: str, ttl_s: int, now_s: float | None = None,
         signed: dict[str, str] | None = None) -> str:
    """The link; ``signed`` fields travel in the query and cannot be changed."""
    expires_s = int((time.time() if now_s is None else now_s) + ttl_s)
    query = urllib.parse.urlencode({**(signed or {}), "exp": expires_s,
                                    "sig": signature(key, file_id, expires_s, signed)})
    return f"{base_url.rstrip('/')}{path}/{urllib.parse.quote(file_id, safe='')}?{query}"


def valid(key: bytes, file_id: str, expires: str, sig: str, now_s: float | None = None,
          signed: dict[str, str] | None = None) -> bool:
    """The link was made by us, for this file (and these fields), and has not expired."""
    try:
        expires_s = int(expires)
    except ValueError:
        return False
    if expires_s < (time.time() if now_s is None else now_s):
        return False
    return hmac.compare_digest(signature(key, file_id, expires_s, signed).encode(), sig.encode())


def web_url(url: str) -> str:
    """``url`` when a browser may follow it from our pages (http or https), else ""."""
    return url if url.startswith(("https://", "http://")) else ""


def attachment_link(base_url: str, path: str, key: bytes, attachment: Attachment, ttl_s: int) -> str:
    """A link to a customer's file; its type and name are signed with it, since the type
    decides whether a browser may show the file."""
    return link(base_url, path, key, attachment.ref, ttl_s, signed={"type": attachment.mime, "name": attachment.name})


def linked_attachment(query: Mapping[str, str], key: bytes, ref: str) -> Attachment | None:
    """The file a request's link names (``ref`` from its path), when we signed the link and
    it has not expired."""
    mime, name = query.get("type", ""), query.get("name", "")
    if not valid(key, ref, query.get("exp", ""), query.get("sig", ""), signed={"type": mime, "name": name}):
        return None
    return Attachment(ref=ref, mime=mime, name=name)


#: types a browser may show from the bridge's origin; everything else downloads
INLINE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
#: types a browser could run as a page: served as bytes, never with their own type
_ACTIVE = ("html", "xml", "svg", "javascript", "ecmascript")


def response_options(mime: str, name: str) -> dict[str, Any]:
    """Content type and headers for serving a customer's or an agent's file: pictures
    inline, the rest as a download; never a page of ours (sandboxed, no sniffing)."""
    inline = mime in INLINE_TYPES
    active = not mime or any(word in mime.lower() for word in _ACTIVE)
    return {"content_type": "application/octet-stream" if active else mime, "headers": {
        "Content-Disposition": f"{'inline' if inline else 'attachment'}; filename*=UTF-8''{urllib.parse.quote(name)}",
        "Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox"}}
