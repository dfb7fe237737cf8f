"""TLS and logins: IMAP over implicit TLS (Dovecot), SMTP with STARTTLS or implicit TLS and
AUTH (aiosmtpd), certificates verified against a private CA, wrong passwords reported."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from adapters.email.adapter import EmailAdapter
from adapters.email.config import EmailConfig
from bridge.errors import IntegrationBroken
from bridge.model import Message
from tests.harness import wait_for
from tests.mailservers import Dovecot, Recorder, make_certificate, make_context, running, smtp_server
from tests.servers import free_port
from tests.test_email_imap import connected, customer_mail


@pytest.fixture(scope="module")
def certificate() -> Iterator[tuple[Path, Path]]:
    with tempfile.TemporaryDirectory() as directory:
        yield make_certificate(Path(directory))


@pytest.fixture
def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def dovecot_tls() -> Iterator[Dovecot]:
    server = Dovecot(free_port(), tls_port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def config(**values: Any) -> EmailConfig:
    return EmailConfig(**{"address": "support@example.com", "smtp_host": "127.0.0.1", "smtp_timeout_s": 5,
                          "imap_timeout_s": 5, "reconnect_min_s": 0.05, "reconnect_max_s": 0.5, **values})


def reply() -> Message:
    return Message(kind="reply", channel="email", address="ann@customer.example", text="Over TLS")


async def test_imap_over_tls_verified_against_a_private_ca(redis: aioredis.Redis, dovecot_tls: Dovecot) -> None:
    assert dovecot_tls.certificate is not None
    recorder = Recorder()
    imap = {"imap_host": "127.0.0.1", "imap_port": dovecot_tls.tls_port, "imap_tls": "tls", "imap_user": "agent",
            "imap_password": SecretStr("secret")}
    async with running(EmailAdapter(config(**imap, tls_ca_file=str(dovecot_tls.certificate)),
                                    make_context(redis, recorder))):
        await connected(recorder)
        dovecot_tls.deliver(customer_mail("sent over TLS"))
        await recorder.wait_for(1)
    assert recorder.published[0].text == "sent over TLS"

    untrusting = Recorder()  # the same server without its CA: refused, and said why
    async with running(EmailAdapter(config(**imap), make_context(redis, untrusting))):
        await wait_for(lambda: untrusting.health, what="a health report")
    state, detail = untrusting.health[0]
    assert state == "degraded" and "CERTIFICATE_VERIFY_FAILED" in detail


async def test_imap_starttls_on_the_plain_port(redis: aioredis.Redis, dovecot_tls: Dovecot, dovecot: Dovecot) -> None:
    assert dovecot_tls.certificate is not None
    recorder = Recorder()
    imap = {"imap_host": "127.0.0.1", "imap_tls": "starttls", "imap_user": "agent",
            "imap_password": SecretStr("secret")}
    async with running(EmailAdapter(config(**imap, imap_port=dovecot_tls.port,
                                           tls_ca_file=str(dovecot_tls.certificate)),
                                    make_context(redis, recorder))):
        await connected(recorder)
        dovecot_tls.deliver(customer_mail("sent after STARTTLS"))
        await recorder.wait_for(1)
    assert recorder.published[0].text == "sent after STARTTLS"

    untrusting = Recorder()  # the upgrade really is TLS: without the server's CA it fails, and says why
    async with running(EmailAdapter(config(**imap, imap_port=dovecot_tls.port), make_context(redis, untrusting))):
        await wait_for(lambda: untrusting.health, what="a health report")
    assert "CERTIFICATE_VERIFY_FAILED" in untrusting.health[0][1]

    # a server without TLS: never logs in in the clear, and says what to change
    plain = Recorder()
    async with running(EmailAdapter(config(**imap, imap_port=dovecot.port), make_context(redis, plain))):
        await wait_for(lambda: plain.health, what="a health report")
    state, detail = plain.health[0]
    assert state == "broken" and "offers no STARTTLS" in detail


async def test_smtp_starttls_with_login(redis: aioredis.Redis, server_tls: ssl.SSLContext,
                                        certificate: tuple[Path, Path]) -> None:
    with smtp_server(starttls=server_tls, users={"support": "pw"}) as (handler, port):
        good = config(smtp_port=port, smtp_tls="starttls", smtp_user="support", smtp_password=SecretStr("pw"),
                      tls_ca_file=str(certificate[0]))
        adapter = EmailAdapter(good, make_context(redis, Recorder()))
        await adapter.send(reply())
        (mail,) = await handler.wait_for(1)
        assert mail.text().strip() == "Over TLS"
        assert await adapter.check() == ("ok", "")

        bad = good.model_copy(update={"smtp_password": SecretStr("wrong")})
        refused = EmailAdapter(bad, make_context(redis, Recorder()))
        with pytest.raises(IntegrationBroken) as error:
            await refused.send(reply())
        assert "smtp_password" in error.value.reason and "wrong" not in error.value.reason
        assert (await refused.check())[0] == "broken"
        assert len(handler.received) == 1


async def test_smtp_implicit_tls(redis: aioredis.Redis, server_tls: ssl.SSLContext,
                                 certificate: tuple[Path, Path]) -> None:
    with smtp_server(tls=server_tls) as (handler, port):
        adapter = EmailAdapter(config(smtp_port=port, smtp_tls="tls", tls_ca_file=str(certificate[0])),
                               make_context(redis, Recorder()))
        await adapter.send(reply())
        assert len(await handler.wait_for(1)) == 1
