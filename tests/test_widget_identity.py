"""Visitor tokens, the site's user signature, passwords and rate buckets (no servers)."""

from __future__ import annotations

import base64
import json

from adapters.widget.console import hash_password, verify_password
from adapters.widget.identity import Signer, VisitorTokens, new_visitor_id, user_hash, verify_user
from adapters.widget.limits import Buckets, Counts

SECRET = b"s" * 32


def test_a_token_names_its_visitor_and_survives_a_reload() -> None:
    tokens = VisitorTokens(SECRET, max_age_s=3600)
    visitor = new_visitor_id()
    token = tokens.issue(visitor)
    checked = tokens.verify(token)
    assert checked is not None and checked.visitor == visitor
    # another process with the same secret accepts it too
    assert VisitorTokens(SECRET, max_age_s=3600).verify(token) == checked


def test_a_forged_token_is_refused() -> None:
    tokens = VisitorTokens(SECRET, max_age_s=3600)
    token = tokens.issue("v_attacker")
    payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["v"] = "v_victim"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert tokens.verify(f"{forged}.{signature}") is None
    assert VisitorTokens(b"another secret", max_age_s=3600).verify(token) is None
    for junk in ["", ".", "a.b", "x" * 5000, "..", token + "x", token.replace(".", "")]:
        assert tokens.verify(junk) is None


def test_an_expired_token_is_refused() -> None:
    assert VisitorTokens(SECRET, max_age_s=-1).verify(VisitorTokens(SECRET, max_age_s=1).issue("v_1")) is None


def test_a_console_session_is_no_visitor_token() -> None:
    session = Signer(SECRET, "console-session").sign({"v": "v_1", "a": "ann", "iat": 2_000_000_000})
    assert VisitorTokens(SECRET, max_age_s=1e12).verify(session) is None


def test_the_site_signature_of_a_user_id() -> None:
    site_secret = b"site-secret"
    good = user_hash(site_secret, "42")
    assert verify_user(site_secret, "42", good)
    assert verify_user(site_secret, "42", good.upper())
    assert not verify_user(site_secret, "43", good)
    assert not verify_user(b"other", "42", good)
    assert not verify_user(site_secret, "42", "")
    assert not verify_user(site_secret, "", user_hash(site_secret, ""))


def test_password_hashes() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("scrypt$")
    assert verify_password("correct horse", hashed)
    assert not verify_password("wrong horse", hashed)
    pbkdf2 = "pbkdf2_sha256$1000$73616c74$" + __import__("hashlib").pbkdf2_hmac("sha256", b"pw", b"salt", 1000).hex()
    assert verify_password("pw", pbkdf2)
    assert not verify_password("pw2", pbkdf2)
    assert not verify_password("pw", "plain")
    assert not verify_password("pw", "scrypt$x$y$z$zz$zz")


def test_buckets_allow_a_burst_then_say_how_long_to_wait() -> None:
    buckets = Buckets(rate_per_s=1.0, burst=3)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait_s = buckets.take("a")
    assert 0 < wait_s <= 1.0
    assert buckets.take("b") == 0.0  # keys are independent
    buckets.refund("a")
    assert buckets.take("a") == 0.0


def test_connection_counts_have_a_ceiling() -> None:
    counts = Counts(2)
    assert counts.acquire("ip") and counts.acquire("ip")
    assert not counts.acquire("ip")
    counts.release("ip")
    assert counts.acquire("ip")
    assert counts["ip"] == 2 and counts["other"] == 0
