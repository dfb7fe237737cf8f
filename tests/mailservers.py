"""Real mail servers for tests, on loopback: Dovecot (IMAP), aiosmtpd (SMTP), a TCP proxy
that can cut a connection in the middle of a server's answer, and a recording
`AdapterContext` backed by the real Redis from conftest.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import email
import email.policy
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from bridge.adapter import AdapterContext, HealthState
from bridge.context import RedisState
from bridge.model import Contact, Conversation, Message
from tests.servers import free_port, wait_port
from tests.timing import scaled

MAIL_UID = 65534


def make_certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (its own CA): (cert.pem, key.pem)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={host}",
                    "-addext", f"subjectAltName=IP:{host}"], check=True, capture_output=True)
    return cert, key


class Dovecot:
    """A private Dovecot IMAP server (user ``agent`` / ``secret``; more with ``users``)."""

    def __init__(self, port: int, users: dict[str, str] | None = None, *, tls_port: int = 0) -> None:
        # dovecot's auth process runs as user dovecot: every parent directory must be
        # traversable, which pytest's 0700 tmp_path is not
        self.directory = Path(tempfile.mkdtemp(prefix="bridge-dovecot-"))
        self.directory.chmod(0o755)
        self.port = port
        self.users = users or {"agent": "secret"}
        self.process: subprocess.Popen[bytes] | None = None
        self.conf = self.directory / "dovecot.conf"
        self.tls_port = tls_port  # > 0: also implicit TLS (imaps) here, with `certificate` as its own CA
        self.certificate: Path | None = None

    def maildir(self, user: str = "agent") -> Path:
        return self.directory / "home" / user / "Maildir"

    def _write_config(self) -> None:
        run = self.directory / "run"
        run.mkdir(parents=True, exist_ok=True)
        (self.directory / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.users.items()))
        for user in self.users:
            for sub in ("cur", "new", "tmp"):
                (self.maildir(user) / sub).mkdir(parents=True, exist_ok=True)
        for path in (self.directory / "home").rglob("*"):
            os.chown(path, MAIL_UID, MAIL_UID)
        os.chown(self.directory / "home", MAIL_UID, MAIL_UID)
        self.conf.write_text(f"""
protocols = imap
listen = 127.0.0.1
base_dir = {run}
state_dir = {self.directory / 'state'}
instance_name = dovecot-{uuid.uuid4().hex[:8]}
log_path = {self.directory / 'dovecot.log'}
{self._ssl_settings()}
disable_plaintext_auth = no
first_valid_uid = {MAIL_UID}
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = {self.directory / 'passwd'}
}}
userdb {{
  driver = static
  args = uid={MAIL_UID} gid={MAIL_UID} home={self.directory / 'home'}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
  }}
}}
""")
        (self.directory / "state").mkdir(exist_ok=True)

    def _ssl_settings(self) -> str:
        if not self.tls_port:
            return "ssl = no"
        self.certificate, key = make_certificate(self.directory)
        return f"ssl = yes\nssl_cert = <{self.certificate}\nssl_key = <{key}"

    def start(self) -> None:
        binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
        if not Path(binary).exists():
            raise RuntimeError("dovecot is not installed: apt-get install -y dovecot-imapd")
        if not self.conf.exists():
            self._write_config()
        # its own process group: stopping it ends the per-connection imap processes too
        self.process = subprocess.Popen([binary, "-F", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        wait_port(self.port)
        if self.tls_port:
            wait_port(self.tls_port)

    def stop(self) -> None:
        if self.process is None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # children that outlived the master
            os.killpg(group, signal.SIGKILL)
        self.process = None
        with contextlib.suppress(OSError):  # wait until the port is free again
            for _ in range(200):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", self.port)) != 0:
                        break
                time.sleep(0.01)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def deliver(self, raw: bytes, user: str = "agent") -> None:
        """Deliver like an MDA: write into tmp/, then rename into new/."""
        name = f"{time.time_ns()}.{uuid.uuid4().hex}.test"
        tmp = self.maildir(user) / "tmp" / name
        tmp.write_bytes(raw)
        os.chown(tmp, MAIL_UID, MAIL_UID)
        tmp.rename(self.maildir(user) / "new" / name)

    def reset_uidvalidity(self, uidvalidity: int, user: str = "agent") -> None:
        """Rebuild the mailbox's UID list with a new UIDVALIDITY (server must be stopped)."""
        box = self.maildir(user)
        for path in box.glob("dovecot*"):
            path.unlink()
        uidlist = box / "dovecot-uidlist"
        uidlist.write_text(f"3 V{uidvalidity} N1\n")
        os.chown(uidlist, MAIL_UID, MAIL_UID)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def text(self) -> str:
        body = self.message.get_body(("plain",))
        assert body is not None
        return str(body.get_content()).replace("\r\n", "\n")


class RecordingHandler:
    """Records every accepted message; ``fail_with`` answers DATA with an SMTP code instead."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.fail_with: str | None = None  # e.g. "451 4.3.0 try later" or "550 5.1.1 no such user"
        self.fail_times: int | None = None  # fail only this many times, then accept
        self.reject_rcpt: str | None = None
        # run on each accepted mail before the 250 goes back (runs on the server's own thread)
        self.before_accept: Callable[[Received], Awaitable[None]] | None = None
        self.event = asyncio.Event()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if self.reject_rcpt and address in self.reject_rcpt:  # "550 5.1.1 <gone@x> unknown"
            return self.reject_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.fail_with and self.fail_times != 0:
            if self.fail_times is not None:
                self.fail_times -= 1
            return self.fail_with
        content = envelope.original_content or b""
        received = Received(str(envelope.mail_from), list(envelope.rcpt_tos), content)
        self.received.append(received)
        self.event.set()
        if self.before_accept is not None:
            await self.before_accept(received)
        return "250 Message accepted"

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        async with asyncio.timeout(scaled(timeout_s)):
            while len(self.received) < count:
                self.event.clear()
                await self.event.wait()
        return self.received


def _authenticator(users: dict[str, str]) -> Callable[..., AuthResult]:
    def check(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user, password = auth_data.login.decode(), auth_data.password.decode()
            if users.get(user) == password:
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)  # handled=True would leave the client hanging

    return check


@contextlib.contextmanager
def smtp_server(*, tls: ssl.SSLContext | None = None, starttls: ssl.SSLContext | None = None,
                users: dict[str, str] | None = None) -> Iterator[tuple[RecordingHandler, int]]:
    """aiosmtpd on loopback; ``tls``: implicit TLS; ``starttls``: STARTTLS required;
    ``users``: AUTH required (over TLS)."""
    handler = RecordingHandler()
    port = free_port()
    kwargs: dict[str, Any] = {}
    if tls is not None:
        kwargs["ssl_context"] = tls
    if starttls is not None:
        kwargs.update(tls_context=starttls, require_starttls=True)
    if users is not None:
        kwargs.update(authenticator=_authenticator(users), auth_required=True, auth_require_tls=True)
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


class CuttingProxy:
    """A TCP proxy to a server; cuts the connection once the server's bytes contain ``cut_on``
    (forwarding only part of that chunk), ``cuts`` times."""

    def __init__(self, target_port: int, cut_on: bytes = b"", cuts: int = 0) -> None:
        self.target_port = target_port
        self.cut_on = cut_on
        self.cuts = cuts
        self.port = 0
        self.connections = 0
        self.server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.close()
            await self.server.wait_closed()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {client_w, server_w}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_server: bool) -> None:
            try:
                while data := await reader.read(65536):
                    if from_server and self.cuts and self.cut_on and self.cut_on in data:
                        self.cuts -= 1
                        writer.write(data[: data.index(self.cut_on) + len(self.cut_on) + 20])
                        await writer.drain()
                        break
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                for w in (client_w, server_w):
                    w.close()

        await asyncio.gather(pipe(client_r, server_w, False), pipe(server_r, client_w, True))
        self._writers -= {client_w, server_w}


@dataclass
class Conversations:
    """A conversation store the test fills by hand (the engine's, before the engine exists)."""

    items: dict[str, Conversation] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    contacts: dict[str, Contact] = field(default_factory=dict)

    async def get(self, conversation_id: str) -> Conversation | None:
        return self.items.get(conversation_id)

    async def for_address(self, channel: str, address: str) -> Conversation | None:
        return next((c for c in self.items.values() if c.channel == channel and c.address == address), None)

    async def by_ref(self, ref: str) -> str | None:
        return self.refs.get(ref)

    async def list(self, status: str | None = None, limit: int = 100) -> list[Conversation]:
        return list(self.items.values())[:limit]

    async def transcript(self, conversation_id: str, limit: int = 200) -> builtins.list[Message]:
        return []

    async def contact(self, contact_id: str) -> Contact | None:
        return self.contacts.get(contact_id)


class NoFanout:
    async def broadcast(self, topic: str, payload: bytes) -> None:
        return None

    async def subscribe(self, topic: str, on_subscribed: Any = None) -> AsyncIterator[bytes]:  # pragma: no cover
        if False:
            yield b""


@dataclass
class Recorder:
    """What the adapter published (with the bus's dedupe rule) and the health it reported."""

    published: list[Message] = field(default_factory=list)
    attempts: list[Message] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    health: list[tuple[str, str]] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)
    on_publish: Callable[[Message], None] | None = None  # runs inside publish (to deliver mail mid-read)

    async def publish(self, message: Message) -> bool:
        self.attempts.append(message)
        if self.on_publish is not None:
            self.on_publish(message)
        if message.dedupe_key and message.dedupe_key in self.seen:
            return False
        self.seen.add(message.dedupe_key)
        self.published.append(message)
        self.event.set()
        return True

    async def report_health(self, state: HealthState, detail: str) -> None:
        self.health.append((state, detail))

    async def wait_for(self, count: int, timeout_s: float = 15.0) -> list[Message]:
        async with asyncio.timeout(scaled(timeout_s)):
            while len(self.published) < count:
                self.event.clear()
                await self.event.wait()
        return self.published


def make_context(redis: aioredis.Redis, recorder: Recorder, conversations: Conversations | None = None
                 ) -> AdapterContext:
    return AdapterContext(publish=recorder.publish, state=RedisState(redis, "email"), conversations=conversations or
                          Conversations(), fanout=NoFanout(), report_health=recorder.report_health)


@contextlib.asynccontextmanager
async def running(adapter: Any) -> AsyncIterator[Any]:
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()
