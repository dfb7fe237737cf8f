"""Reading mail from a real IMAP server (Dovecot): catch-up, drops, resyncs, IDLE and polling."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from pydantic import SecretStr

from adapters.email.adapter import EmailAdapter
from adapters.email.config import EmailConfig
from adapters.email.parse import MAX_PARTS
from bridge.context import RedisState
from tests.harness import wait_for
from tests.mailservers import CuttingProxy, Dovecot, Recorder, make_context, running
from tests.servers import free_port

CORPUS = Path(__file__).parent / "fixtures" / "email"



def imap_config(port: int, **extra: Any) -> EmailConfig:
    values: dict[str, Any] = {"address": "support@example.com", "imap_host": "127.0.0.1", "imap_port": port,
                              "imap_tls": "none", "imap_user": "agent", "imap_password": SecretStr("secret"),
                              "imap_timeout_s": 5, "reconnect_min_s": 0.05, "reconnect_max_s": 0.5,
                              "smtp_host": "127.0.0.1", "smtp_port": free_port(), "smtp_tls": "none", **extra}
    return EmailConfig(**values)


def customer_mail(text: str, sender: str = "ann@customer.example") -> bytes:
    return (f"From: Ann <{sender}>\r\nTo: support@example.com\r\nSubject: {text}\r\n"
            f"Message-ID: {make_msgid(domain='customer.example')}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"\r\n{text}\r\n").encode()


async def connected(recorder: Recorder, times: int = 1) -> None:
    await wait_for(lambda: sum(1 for state, _ in recorder.health if state == "ok") >= times, what="IMAP login")


async def test_mail_delivered_while_the_adapter_is_down_is_read_on_return(redis: aioredis.Redis,
                                                                          dovecot: Dovecot) -> None:
    recorder = Recorder()
    config = imap_config(dovecot.port)
    async with running(EmailAdapter(config, make_context(redis, recorder))):
        await connected(recorder)
        dovecot.deliver(customer_mail("one"))
        await recorder.wait_for(1)
    dovecot.deliver(customer_mail("two"))
    dovecot.deliver(customer_mail("three"))
    async with running(EmailAdapter(config, make_context(redis, recorder))):  # the bridge comes back
        await recorder.wait_for(3)
    assert [m.text for m in recorder.published] == ["one", "two", "three"]
    assert len(recorder.attempts) == 3, [m.text for m in recorder.attempts]  # nothing read twice
    first = recorder.published[0]
    assert first.kind == "customer" and first.channel == "email" and first.address == "ann@customer.example"
    assert first.dedupe_key == f"email:{first.data['message_id']}" and first.data["match"] == "new"


async def test_mail_already_in_the_mailbox_on_first_start_is_not_answered_by_default(redis: aioredis.Redis,
                                                                                     dovecot: Dovecot) -> None:
    dovecot.deliver(customer_mail("old mail from last year"))
    recorder = Recorder()
    async with running(EmailAdapter(imap_config(dovecot.port), make_context(redis, recorder))):
        await connected(recorder)
        dovecot.deliver(customer_mail("new"))
        await recorder.wait_for(1)
    assert [m.text for m in recorder.published] == ["new"]


async def test_a_connection_dropped_mid_fetch_loses_and_doubles_nothing(redis: aioredis.Redis,
                                                                        dovecot: Dovecot) -> None:
    proxy = CuttingProxy(dovecot.port, cut_on=b"FETCH (UID", cuts=2)
    await proxy.start()
    try:
        recorder = Recorder()
        config = imap_config(proxy.port)
        async with running(EmailAdapter(config, make_context(redis, recorder))):
            await connected(recorder)
        for text in ("first", "second", "third"):
            dovecot.deliver(customer_mail(text))
        async with running(EmailAdapter(config, make_context(redis, recorder))):
            await recorder.wait_for(3)
            assert proxy.cuts == 0  # both cuts happened in the middle of a FETCH answer
    finally:
        await proxy.stop()
    assert [m.text for m in recorder.published] == ["first", "second", "third"]
    assert len(recorder.attempts) == 3
    assert proxy.connections >= 4
    assert any(state == "degraded" for state, _ in recorder.health)


async def test_uidvalidity_change_resyncs_without_doubles(redis: aioredis.Redis, dovecot: Dovecot) -> None:
    recorder = Recorder()
    context = make_context(redis, recorder)
    config = imap_config(dovecot.port)
    no_id = (CORPUS / "no_message_id.eml").read_bytes()
    async with running(EmailAdapter(config, context)):
        await connected(recorder)
        dovecot.deliver(customer_mail("a"))
        dovecot.deliver(customer_mail("b"))
        dovecot.deliver(no_id)
        await recorder.wait_for(3)
    dovecot.stop()
    dovecot.reset_uidvalidity(4242)  # the mailbox was rebuilt: every UID changed
    dovecot.deliver(customer_mail("c"))
    dovecot.start()
    # and the connection drops in the middle of the resync (after the first Message-ID check)
    proxy = CuttingProxy(dovecot.port, cut_on=b"(MESSAGE-ID)]", cuts=1)
    await proxy.start()
    try:
        async with running(EmailAdapter(imap_config(proxy.port), make_context(redis, recorder))):
            await recorder.wait_for(4)
            await wait_for(lambda: _equals(context.state.get("imap:resync_until"), None), what="the resync to end")
            assert proxy.cuts == 0 and proxy.connections >= 2
    finally:
        await proxy.stop()
    assert await context.state.get("imap:uidvalidity") == "4242"
    assert await context.state.get("imap:uid") == "4"
    assert [m.text for m in recorder.published] == ["a", "b", "Please call me back.", "c"]
    # a and b were recognized by Message-ID, the mail without one by its headers and body: none
    # reached the bus again (whose dedupe window may be shorter than resync_dedupe_days)
    assert len(recorder.attempts) == 4


async def test_the_imap_server_restarting_loses_nothing(redis: aioredis.Redis, dovecot: Dovecot) -> None:
    recorder = Recorder()
    async with running(EmailAdapter(imap_config(dovecot.port), make_context(redis, recorder))):
        await connected(recorder)
        dovecot.stop()
        dovecot.deliver(customer_mail("while the server was down"))
        dovecot.start()
        await recorder.wait_for(1)
        assert any(state == "degraded" for state, _ in recorder.health), recorder.health
        await connected(recorder, times=2)
    assert [m.text for m in recorder.published] == ["while the server was down"]


async def test_mail_arriving_while_another_is_read_does_not_wait_for_the_next_idle(redis: aioredis.Redis,
                                                                                   dovecot: Dovecot) -> None:
    """The server announces the second mail in its answer to a command before IDLE; the
    adapter must not start IDLE (default renewal: 25 min) without reading it."""
    recorder = Recorder()
    pending = [customer_mail("second")]

    def deliver_the_second(_message: object) -> None:
        while pending:
            dovecot.deliver(pending.pop())

    recorder.on_publish = deliver_the_second
    async with running(EmailAdapter(imap_config(dovecot.port), make_context(redis, recorder))):
        await connected(recorder)
        dovecot.deliver(customer_mail("first"))
        await recorder.wait_for(2)
    assert [m.text for m in recorder.published] == ["first", "second"]


async def test_huge_mail_is_read_in_part_and_mail_without_sender_is_skipped(redis: aioredis.Redis,
                                                                            dovecot: Dovecot) -> None:
    recorder = Recorder()
    huge = customer_mail("see the attached log").replace(
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n",
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n")
    huge = huge.rstrip(b"\r\n") + b"\r\n--b\r\nContent-Type: text/plain; name=log.txt\r\n\r\n" + b"x" * 200_000
    async with running(EmailAdapter(imap_config(dovecot.port, max_message_bytes=20_000),
                                    make_context(redis, recorder))):
        await connected(recorder)
        dovecot.deliver(huge)
        dovecot.deliver(b"Subject: no sender at all\r\nMessage-ID: <nobody@x>\r\n\r\nwho am I\r\n")
        dovecot.deliver(customer_mail("after the odd ones"))
        await recorder.wait_for(2)
    big, after = recorder.published
    assert big.text == "see the attached log" and big.data["truncated"]["read"] == 20_000
    assert big.data["truncated"]["size"] > 200_000
    assert after.text == "after the odd ones" and len(recorder.attempts) == 2


async def test_polling_when_idle_is_off(redis: aioredis.Redis, dovecot: Dovecot) -> None:
    recorder = Recorder()
    config = imap_config(dovecot.port, idle=False, poll_interval_s=0.1)
    async with running(EmailAdapter(config, make_context(redis, recorder))):
        await connected(recorder)
        dovecot.deliver(customer_mail("polled"))
        await recorder.wait_for(1)
    assert recorder.published[0].text == "polled"


async def test_idle_is_renewed_and_keeps_delivering(redis: aioredis.Redis, dovecot: Dovecot) -> None:
    import asyncio

    recorder = Recorder()
    config = imap_config(dovecot.port, idle_renew_s=0.1)
    async with running(EmailAdapter(config, make_context(redis, recorder))) as adapter:
        await connected(recorder)
        await asyncio.sleep(0.5)  # several IDLE renewals
        dovecot.deliver(customer_mail("after renewals"))
        await recorder.wait_for(1)
        assert adapter.watcher.idle_cycles >= 3
        assert adapter.watcher.connections == 1  # renewed in place, not by reconnecting
    assert recorder.published[0].text == "after renewals"
    assert EmailConfig.model_fields["idle_renew_s"].default < 29 * 60


async def test_wrong_password_reports_broken(redis: aioredis.Redis, dovecot: Dovecot) -> None:
    recorder = Recorder()
    config = imap_config(dovecot.port, imap_password=SecretStr("wrong"))
    async with running(EmailAdapter(config, make_context(redis, recorder))):
        await wait_for(lambda: recorder.health, what="a health report")
    state, detail = recorder.health[0]
    assert state == "broken" and "imap_password" in detail and "wrong" not in detail


async def test_a_temporary_login_failure_is_degraded_and_recovers(redis: aioredis.Redis, dovecot: Dovecot) -> None:
    passwd = dovecot.directory / "passwd"
    passwd.chmod(0o600)  # the auth process cannot read it: "[UNAVAILABLE] Temporary authentication failure"
    recorder = Recorder()
    async with running(EmailAdapter(imap_config(dovecot.port), make_context(redis, recorder))):
        await wait_for(lambda: recorder.health, what="a health report")
        passwd.chmod(0o644)
        await connected(recorder)
        dovecot.deliver(customer_mail("after the outage"))
        await recorder.wait_for(1)
    state, detail = recorder.health[0]
    assert state == "degraded" and "UNAVAILABLE" in detail
    assert "broken" not in [s for s, _ in recorder.health]


async def test_the_corpus_through_imap_is_recorded_and_loops_flagged(redis: aioredis.Redis, dovecot: Dovecot) -> None:
    recorder = Recorder()
    names = sorted(p.name for p in CORPUS.glob("*.eml"))
    async with running(EmailAdapter(imap_config(dovecot.port), make_context(redis, recorder))):
        await connected(recorder)
        for name in names:
            dovecot.deliver((CORPUS / name).read_bytes())
        await recorder.wait_for(len(names) - 1)  # all but our own mail
        await wait_for(lambda: _equals(recorder_state(redis), str(len(names))), what="every UID read")
    by_id = {m.data["message_id"]: m for m in recorder.published}
    assert "own-1@example.com" not in by_id
    for message_id in ("dsn-1@mx.customer.example", "ooo-1@customer.example", "oof-1@corp.example",
                       "list-1@lists.example", "bulk-1@shop.example", "exim-1@mail.example.net",
                       "bare-1@mx.example.org", "abw-1@kunde.example", "abs-1@client.example"):
        assert by_id[message_id].data["auto"] is True and by_id[message_id].data["loop_reason"]
    # read, not dropped for "no readable sender"; the text after a line of "=" is kept
    assert by_id["fold-1@customer.example"].address == "lee@customer.example"
    assert by_id["origline-1@customer.example"].text == "Please send the invoice for order 8812 again."
    assert by_id["equals-1@customer.example"].text.endswith("unit 3 does not start at all.")
    assert by_id["bare-1@mx.example.org"].address == "mailer-daemon@mx.example.org"
    assert "\ufffd" not in by_id["jis-1@customer.jp"].text
    assert not by_id["plain-1@customer.example"].data.get("auto")
    files = by_id["noname-1@customer.example"].attachments
    assert [a.name for a in files] == ["attachment-2.bin", "passwd", "照片 .jpg"]
    validity = await RedisState(redis, "email").get("imap:uidvalidity")
    assert [a.ref.split(":")[0] for a in files] == [validity] * 3
    assert [a.ref.split(":")[2] for a in files] == ["2", "3", "4"]


async def recorder_state(redis: aioredis.Redis) -> str | None:
    return await RedisState(redis, "email").get("imap:uid")


async def _equals(awaitable: Any, expected: Any) -> bool:
    return (await awaitable) == expected


async def test_every_attachment_is_listed_and_a_cap_is_said(redis: aioredis.Redis, dovecot: Dovecot) -> None:
    def photos(count: int) -> bytes:
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = "ann@customer.example", "support@example.com", f"{count} photos"
        mail["Message-ID"] = make_msgid(domain="customer.example")
        mail.set_content("All photos of the batch.")
        for i in range(count):
            mail.add_attachment(b"x", maintype="image", subtype="jpeg", filename=f"photo-{i:03}.jpg")
        return mail.as_bytes()

    recorder = Recorder()
    async with running(EmailAdapter(imap_config(dovecot.port), make_context(redis, recorder))):
        await connected(recorder)
        dovecot.deliver(photos(200))
        dovecot.deliver(photos(MAX_PARTS + 5))
        two_hundred, too_many = await recorder.wait_for(2)
    assert [a.name for a in two_hundred.attachments] == [f"photo-{i:03}.jpg" for i in range(200)]
    assert "parts_not_read" not in two_hundred.data
    assert len(too_many.attachments) == MAX_PARTS - 1  # the text is a part too
    assert too_many.data["parts_not_read"] == 6 and any("6 parts not read" in d for d in too_many.data["defects"])
