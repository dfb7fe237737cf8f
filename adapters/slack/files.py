"""Links to Slack files that other channels can fetch without Slack credentials.

A file an agent shares in a thread lives on Slack behind the bot token. The customer's
channel (Telegram uploads files itself) gets instead a link to the bridge,
``<public url>/slack/files/<file id>?exp=<unix s>&sig=<hmac>``; the bridge checks the
signature (constant time) and the expiry, then fetches the file from Slack with the bot
token. The key is derived from the bot token, so no extra secret is needed and a new
token invalidates old links.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.parse

SIGNATURE_HEX_CHARS = 40


def signing_key(bot_token: str) -> bytes:
    return hashlib.sha256(b"support-bridge slack file links\0" + bot_token.encode()).digest()


def signature(key: bytes, file_id: str, expires_s: int) -> str:
    digest = hmac.new(key, f"{file_id}\0{expires_s}".encode(), hashlib.sha256).hexdigest()
    return digest[:SIGNATURE_HEX_CHARS]


def link(base_url: str, path: str, key: bytes, file_id: str, ttl_s: int, now_s: float | None = None) -> str:
    expires_s = int((time.time() if now_s is None else now_s) + ttl_s)
    query = urllib.parse.urlencode({"exp": expires_s, "sig": signature(key, file_id, expires_s)})
    return f"{base_url.rstrip('/')}{path}/{urllib.parse.quote(file_id, safe='')}?{query}"


def valid(key: bytes, file_id: str, expires: str, sig: str, now_s: float | None = None) -> bool:
    """The link was made by us, for this file, and has not expired."""
    try:
        expires_s = int(expires)
    except ValueError:
        return False
    if expires_s < (time.time() if now_s is None else now_s):
        return False
    return hmac.compare_digest(signature(key, file_id, expires_s).encode(), sig.encode())
