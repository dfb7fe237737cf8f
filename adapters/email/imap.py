"""The IMAP side: a loop that reads new mail by UID, forever, losing and doubling nothing.

- Connect, log in, select the mailbox; read every message above the stored UID
  watermark, hand each to ``handle`` (which publishes it), and only then advance the
  watermark in ``state``. A crash or a dropped connection between the two re-reads one
  message, which the bus drops by its dedupe key (``email:<Message-ID>``).
- Then wait: IDLE when the server has it (re-issued every ``idle_renew_s``, below the
  29 minutes after which servers drop it), else poll every ``poll_interval_s``.
- Any failure: close, wait with jittered exponential backoff, reconnect.
- UIDVALIDITY changed (mailbox rebuilt): every message is looked at again, and the
  ones whose Message-ID was stored before are skipped (a full resync, deduplicated).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import aioimaplib

from adapters.email.config import EmailConfig
from adapters.email.parse import message_id_in_header, synthetic_id
from bridge.adapter import HealthState, StateStore
from bridge.retry import backoff_s

log = logging.getLogger(__name__)

T = TypeVar("T")

UIDVALIDITY_KEY = "imap:uidvalidity"
WATERMARK_KEY = "imap:uid"
RESYNC_KEY = "imap:resync_until"  # during a UIDVALIDITY resync: the last UID to check by Message-ID
SEEN_KEY = "imap:seen:"  # + Message-ID, with a TTL: what a UIDVALIDITY resync skips
STOP_GRACE_S = 5.0  # a mail being stored when the bridge stops is finished (its watermark moved)

# handle(uid, raw bytes, full size in bytes) -> the Message-ID it stored the mail under;
# raw is cut at max_message_bytes when the mail is larger
Handler = Callable[[int, bytes, int], Awaitable[str]]
HealthReporter = Callable[[HealthState, str], Awaitable[None]]


class ConnectionDropped(Exception):
    pass


class LoginRefused(Exception):
    pass


class MailTooLarge(Exception):
    pass


def _lines(response: Any) -> list[bytes]:
    return [bytes(line) for line in getattr(response, "lines", [])]


def _check(response: Any, what: str) -> None:
    if getattr(response, "result", "") != "OK":
        detail = b" ".join(_lines(response)).decode("utf-8", "replace")[:200]
        raise ConnectionDropped(f"IMAP {what} failed: {getattr(response, 'result', '?')} {detail}")


class ImapWatcher:
    def __init__(self, config: EmailConfig, state: StateStore, handle: Handler, report_health: HealthReporter) -> None:
        self.config = config
        self.state = state
        self.handle = handle
        self.report_health = report_health
        self.client: aioimaplib.IMAP4 | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()  # set by stop(); also wakes the reconnect backoff at once
        self.connections = 0  # how many times we logged in (for status and tests)
        self.idle_cycles = 0  # IDLE commands issued
        self.uidvalidity = ""  # of the selected mailbox, once connected

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="email-imap")

    async def stop(self) -> None:
        """Stop reading: the IMAP connection is closed, so the loop ends at its next command;
        a mail being stored is finished first (published, then its watermark written: were it
        cancelled in between, the next start would read it again). Cancelled past
        STOP_GRACE_S."""
        self._stopped.set()
        self._lost.set()
        self._close()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=STOP_GRACE_S)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(self._task, 10)
            self._task = None

    async def run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            before = self.connections
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except LoginRefused as exc:
                failures = 1 if self.connections > before else failures + 1
                await self.report_health("broken", str(exc))
                log.error("email: %s", exc)
            except Exception as exc:
                if self._stopped.is_set():
                    return
                failures = 1 if self.connections > before else failures + 1
                reason = f"IMAP {self.config.imap_host}:{self.config.imap_port}: {type(exc).__name__}: {exc}"
                await self.report_health("degraded", reason)
                log.warning("email: %s; reconnecting", reason)
            else:
                failures = 0
            finally:
                self._close()
            if self._stopped.is_set():
                return
            # jittered exponential backoff (the bridge's one policy), reset by every successful login
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), backoff_s(failures, base_s=self.config.reconnect_min_s,
                                                                       cap_s=self.config.reconnect_max_s))

    def _close(self) -> None:
        client, self.client = self.client, None
        if client is not None and client.protocol is not None and client.protocol.transport is not None:
            client.protocol.transport.close()

    # -- one connection ------------------------------------------------------------

    async def _cmd(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run an IMAP command, failing fast when the connection drops under it."""
        if self._stopped.is_set():
            coro.close()
            raise ConnectionDropped("stopping")
        task = asyncio.ensure_future(coro)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait({task, lost}, timeout=timeout_s or self.config.imap_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise ConnectionDropped("connection lost" if self._lost.is_set() else "IMAP command timed out")

    async def _connect(self) -> aioimaplib.IMAP4:
        if self._stopped.is_set():
            raise ConnectionDropped("stopping")
        self._lost = asyncio.Event()
        lost = self._lost

        def on_lost(_exc: Exception | None) -> None:
            lost.set()

        host, port = self.config.imap_host or "", self.config.imap_port
        timeout_s = self.config.imap_timeout_s
        # IMAP4 with an ssl_context is implicit TLS; IMAP4_SSL would not take conn_lost_cb
        context = self.config.tls_context() if self.config.imap_tls != "none" else None
        client = aioimaplib.IMAP4(host=host, port=port, timeout=timeout_s, conn_lost_cb=on_lost,
                                  ssl_context=context if self.config.imap_tls == "tls" else None)
        self.client = client
        await client.wait_hello_from_server()
        if context is not None and self.config.imap_tls == "starttls":
            await self._starttls(client, context, host)
        assert self.config.imap_user and self.config.imap_password
        response = await self._cmd(client.login(self.config.imap_user, self.config.imap_password.get_secret_value()))
        if response.result != "OK":
            detail = b" ".join(_lines(response))
            if b"[UNAVAILABLE]" in detail or b"[INUSE]" in detail:  # the server's trouble, not the password
                raise ConnectionDropped(f"IMAP login not possible now: {detail.decode('utf-8', 'replace')[:200]}")
            raise LoginRefused(f"IMAP login refused for {self.config.imap_user!r} "
                               "(check channels.email.imap_user / imap_password)")
        return client

    async def _starttls(self, client: aioimaplib.IMAP4, context: ssl.SSLContext, host: str) -> None:
        """Upgrade the plain connection to TLS before logging in (RFC 2595). aioimaplib knows
        the command but not the upgrade: asyncio wraps the same protocol in TLS here."""
        if not client.has_capability("STARTTLS"):
            raise LoginRefused(f"IMAP {host}:{self.config.imap_port} offers no STARTTLS; use imap_tls: tls "
                               "(usually port 993), or none on a trusted network")
        protocol = client.protocol
        response = await self._cmd(protocol.execute(
            aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)))
        _check(response, "STARTTLS")
        protocol.transport = await self._cmd(asyncio.get_running_loop().start_tls(
            protocol.transport, protocol, context, server_hostname=host))
        await self._cmd(protocol.capability())  # what the server offers changes once encrypted

    async def _session(self) -> None:
        client = await self._connect()
        response = await self._cmd(client.select(self.config.imap_mailbox))
        _check(response, f"SELECT {self.config.imap_mailbox}")
        found = re.search(rb"UIDVALIDITY (\d+)", b" ".join(_lines(response)))
        validity = found.group(1).decode() if found else "0"
        self.uidvalidity = validity
        self.connections += 1
        stored = await self.state.get(UIDVALIDITY_KEY)
        if stored is None:
            await self._first_run(client, validity)
        elif stored != validity:
            log.warning("email: UIDVALIDITY of %s changed (%s -> %s): full resync, deduplicated by Message-ID",
                        self.config.imap_mailbox, stored, validity)
            # every UID up to today's highest is checked against the stored Message-IDs; kept in
            # state so a resync cut short by a crash goes on the same way
            await self.state.set(RESYNC_KEY, str(max(await self._search(client, "ALL"), default=0)))
            await self.state.set(WATERMARK_KEY, "0")
            await self.state.set(UIDVALIDITY_KEY, validity)
        await self.report_health("ok", "")
        use_idle = self.config.idle and client.has_capability("IDLE")
        while True:
            await self._catch_up(client)
            if use_idle:
                await self._idle(client)
            else:
                await self._poll_wait(client)

    async def _first_run(self, client: aioimaplib.IMAP4, validity: str) -> None:
        start = 0
        if self.config.start_from == "new":
            uids = await self._search(client, "ALL")
            start = max(uids, default=0)
        await self.state.set(WATERMARK_KEY, str(start))
        await self.state.set(UIDVALIDITY_KEY, validity)

    async def _search(self, client: aioimaplib.IMAP4, *criteria: str) -> list[int]:
        response = await self._cmd(client.uid_search(*criteria, charset=None))
        _check(response, "UID SEARCH")
        uids: list[int] = []
        for line in _lines(response):
            text = line.decode("ascii", "replace")
            if text.upper().startswith("SEARCH"):
                text = text[6:]
            if re.fullmatch(r"[\d\s]*", text):
                uids.extend(int(x) for x in text.split())
        return sorted(set(uids))

    async def _catch_up(self, client: aioimaplib.IMAP4) -> None:
        """Read everything above the watermark; return only after a SEARCH found nothing new.

        That last SEARCH must be the command right before IDLE: the server announces
        mail that arrives later at (or after) the start of IDLE, but mail announced in
        the answer to another command (a STORE) aioimaplib drops, and IDLE would not
        announce it again.
        """
        while True:
            watermark = int(await self.state.get(WATERMARK_KEY) or 0)
            resync_until = int(await self.state.get(RESYNC_KEY) or 0)
            if resync_until and watermark >= resync_until:
                await self.state.delete(RESYNC_KEY)
                resync_until = 0
            uids = [u for u in await self._search(client, "UID", f"{watermark + 1}:*") if u > watermark]
            if not uids:
                return
            for uid in uids:
                await self._read_one(client, uid, resync=uid <= resync_until)
                if resync_until and uid >= resync_until:
                    await self.state.delete(RESYNC_KEY)
                    resync_until = 0

    async def _read_one(self, client: aioimaplib.IMAP4, uid: int, *, resync: bool) -> None:
        if resync and await self._seen_before(client, uid):
            await self.state.set(WATERMARK_KEY, str(uid))
            return
        # one round trip: the size and at most max_message_bytes of the mail
        raw, size = await self._fetch_sized(client, uid, f"BODY.PEEK[]<0.{self.config.max_message_bytes}>")
        if raw is None:  # expunged between SEARCH and FETCH
            await self.state.set(WATERMARK_KEY, str(uid))
            return
        message_id = await self.handle(uid, raw, size or len(raw))
        # stored: now (and only now) the watermark moves past it
        await self.state.set(WATERMARK_KEY, str(uid))
        await self.state.set(SEEN_KEY + message_id, "1", ttl_s=self.config.resync_dedupe_days * 86400)
        if self.config.mark_seen:
            await self._cmd(client.uid("store", str(uid), "+FLAGS.SILENT", r"(\Seen)"))

    async def _seen_before(self, client: aioimaplib.IMAP4, uid: int) -> bool:
        """Read before the UIDVALIDITY change: its Message-ID (or, for mail without one, the
        id `parse.synthetic_id` makes of its headers and body) was stored in the last
        ``resync_dedupe_days``."""
        header = await self._fetch(client, uid, "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]")
        message_id = message_id_in_header(header or b"")
        if not message_id:
            raw = await self._fetch(client, uid, f"BODY.PEEK[]<0.{self.config.max_message_bytes}>")
            if raw is None:
                return False
            message_id = await asyncio.to_thread(synthetic_id, raw)
        return await self.state.get(SEEN_KEY + message_id) is not None

    async def _fetch(self, client: aioimaplib.IMAP4, uid: int, part: str) -> bytes | None:
        return (await self._fetch_sized(client, uid, part))[0]

    async def _fetch_sized(self, client: aioimaplib.IMAP4, uid: int, part: str) -> tuple[bytes | None, int]:
        """One part of one mail and the mail's RFC822.SIZE (0 when the server did not say)."""
        response = await self._cmd(client.uid("fetch", str(uid), f"(UID RFC822.SIZE {part})"))
        _check(response, f"UID FETCH {uid}")
        lines = getattr(response, "lines", [])
        for i, line in enumerate(lines):
            if isinstance(line, bytearray) and i > 0:
                head = bytes(lines[i - 1])
                uid_found = re.search(rb"UID (\d+)", head)
                if uid_found is None or int(uid_found.group(1)) == uid:
                    after = lines[i + 1] if i + 1 < len(lines) else b""
                    tail = b"" if isinstance(after, bytearray) else bytes(after)
                    size = re.search(rb"RFC822\.SIZE (\d+)", head + b" " + tail)
                    return bytes(line), int(size.group(1)) if size else 0
        return None, 0

    async def _idle(self, client: aioimaplib.IMAP4) -> None:
        """IDLE until the server announces mail (EXISTS) or it is time to renew."""
        idle = await self._cmd(client.idle_start(timeout=self.config.idle_renew_s))
        self.idle_cycles += 1
        try:
            while client.has_pending_idle():
                push = await self._cmd(client.wait_server_push(timeout=self.config.idle_renew_s + 5),
                                       timeout_s=self.config.idle_renew_s + 10)
                if push == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break  # renewal time: end this IDLE and start another
                if any(b"EXISTS" in bytes(line) for line in (push if isinstance(push, list) else [])):
                    break
        finally:
            if client.has_pending_idle() and not self._lost.is_set():
                client.idle_done()
        await self._cmd(asyncio.wait_for(idle, self.config.imap_timeout_s))

    async def _poll_wait(self, client: aioimaplib.IMAP4) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._lost.wait(), self.config.poll_interval_s)
        if self._lost.is_set():
            raise ConnectionDropped("connection lost while polling")
        _check(await self._cmd(client.noop()), "NOOP")

    async def fetch_mail(self, uidvalidity: str, uid: int, max_bytes: int) -> bytes:
        """One mail of the watched mailbox, on a connection of its own (the watcher's is
        in IDLE): for an attachment an agent opens. Raises `LookupError` when the mail is
        gone (expunged, or the mailbox was rebuilt: another UIDVALIDITY), `MailTooLarge` when
        it is over ``max_bytes``, `ConnectionDropped` when the server cannot be reached."""
        once = ImapWatcher(self.config, self.state, self.handle, self.report_health)
        try:
            client = await once._connect()
            response = await once._cmd(client.select(self.config.imap_mailbox))
            _check(response, f"SELECT {self.config.imap_mailbox}")
            found = re.search(rb"UIDVALIDITY (\d+)", b" ".join(_lines(response)))
            if (found.group(1).decode() if found else "0") != uidvalidity:
                raise LookupError("the mailbox was rebuilt since (UIDVALIDITY changed)")
            raw, size = await once._fetch_sized(client, uid, f"BODY.PEEK[]<0.{max_bytes + 1}>")
            if raw is None:
                raise LookupError(f"mail {uid} is no longer in {self.config.imap_mailbox}")
            if max(size, len(raw)) > max_bytes:
                raise MailTooLarge(f"mail of {max(size, len(raw))} bytes is over channels.email.max_message_bytes")
            with contextlib.suppress(Exception):
                await once._cmd(client.logout(), timeout_s=5)
            return raw
        except LoginRefused as exc:
            raise ConnectionDropped(str(exc)) from exc
        finally:
            once._close()

    async def check(self) -> tuple[HealthState, str]:
        """Log in and out once, for ``bridge status``."""
        watcher = ImapWatcher(self.config, self.state, self.handle, self.report_health)
        try:
            client = await watcher._connect()
            with contextlib.suppress(Exception):
                await watcher._cmd(client.logout(), timeout_s=5)
        except LoginRefused as exc:
            return ("broken", str(exc))
        except Exception as exc:
            return ("degraded", f"IMAP {self.config.imap_host}:{self.config.imap_port}: {exc}")
        finally:
            watcher._close()
        return ("ok", "")
