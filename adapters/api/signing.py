"""Webhook signatures: HMAC-SHA256 over "<timestamp>.<body>", hex, prefixed "v1=".

Receivers recompute it with the shared secret, compare in constant time and reject
timestamps older than a few minutes (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Bridge-Timestamp"
SIGNATURE_HEADER = "X-Bridge-Signature"
MESSAGE_ID_HEADER = "X-Bridge-Message-Id"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, max_age_s: int = 300) -> bool:
    try:
        age_s = abs(time.time() - int(timestamp))
    except ValueError:
        return False
    return age_s <= max_age_s and hmac.compare_digest(sign(secret, timestamp, body), signature)
