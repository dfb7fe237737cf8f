"""Visitor identity: server-signed tokens, and the optional site-signed user id check.

A visitor token is ``<payload>.<signature>``: the payload (base64url JSON) names the
visitor id and when the token was issued; the signature is HMAC-SHA256 over the payload
with the bridge's secret. A browser keeps the token and presents it on every connect, so
the visitor survives reloads; nobody can make a token for another visitor id without the
secret. Every comparison is constant-time.

Sites whose users are logged in can sign the user id themselves (hex HMAC-SHA256 of the
user id with ``identity_secret``); a visitor proven that way is ``user:<id>``, the same on
every device.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

_USER_ID_MAX = 128


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_visitor_id() -> str:
    """An anonymous visitor: 128 random bits."""
    return "v_" + secrets.token_hex(16)


def user_visitor_id(user_id: str) -> str:
    return "user:" + user_id


@dataclass(frozen=True, slots=True)
class Token:
    visitor: str
    issued_s: int


class Signer:
    """Signs and verifies small payloads with one secret, for a given purpose.

    The purpose is mixed into the key, so a console session cookie can never be replayed
    as a visitor token or the other way round.
    """

    def __init__(self, secret: bytes, purpose: str) -> None:
        self._key = hmac.new(secret, purpose.encode(), hashlib.sha256).digest()

    def sign(self, data: dict[str, object]) -> str:
        payload = _b64(json.dumps(data, separators=(",", ":"), sort_keys=True).encode())
        mac = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return f"{payload}.{_b64(mac)}"

    def verify(self, token: str, max_age_s: float) -> dict[str, object] | None:
        """The signed data, or None when the token is malformed, forged or expired."""
        if not isinstance(token, str) or len(token) > 1024 or token.count(".") != 1:
            return None
        payload, _, signature = token.partition(".")
        expected = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        try:
            given = _unb64(signature)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(expected, given):
            return None
        try:
            data = json.loads(_unb64(payload))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        issued = data.get("iat")
        if not isinstance(issued, int) or time.time() - issued > max_age_s:
            return None
        return data


class VisitorTokens:
    """Issues and checks visitor tokens."""

    def __init__(self, secret: bytes, *, max_age_s: float) -> None:
        self._signer = Signer(secret, "widget-visitor")
        self.max_age_s = max_age_s

    def issue(self, visitor: str) -> str:
        return self._signer.sign({"v": visitor, "iat": int(time.time())})

    def verify(self, token: str) -> Token | None:
        data = self._signer.verify(token, self.max_age_s)
        if data is None:
            return None
        visitor, issued = data.get("v"), data.get("iat")
        if not isinstance(visitor, str) or not visitor or not isinstance(issued, int):
            return None
        return Token(visitor, issued)


def derive_console_token(secret: str) -> str:
    """The console's login token when none is configured: derived from the widget secret,
    so every process knows it and nothing but the secret needs keeping."""
    return _b64(hmac.new(secret.encode(), b"console-login-token", hashlib.sha256).digest())


def user_hash(identity_secret: bytes, user_id: str) -> str:
    """What the site computes on its server and puts in ``data-user-hash``."""
    return hmac.new(identity_secret, user_id.encode(), hashlib.sha256).hexdigest()


def verify_user(identity_secret: bytes, user_id: str, given_hash: str) -> bool:
    """True when ``given_hash`` is the site's signature of ``user_id`` (constant time)."""
    if not user_id or len(user_id) > _USER_ID_MAX or not isinstance(given_hash, str):
        return False
    expected = user_hash(identity_secret, user_id)
    return hmac.compare_digest(expected.encode(), given_hash.strip().lower().encode())
