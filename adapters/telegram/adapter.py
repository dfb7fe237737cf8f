"""The Telegram adapter: customers write to a bot; replies go back to their chat.

Receiving (long polling, the default) owns the offset: fetch a batch with getUpdates,
publish each update as a `Message` (dedupe key ``telegram:<update_id>``), store the next
offset in ``ctx.state`` once every publish returned, and only then confirm the batch to
Telegram, by asking for the next one with that offset. A crash before the store makes
Telegram hand the batch out again; the dedupe key drops what was already appended.
Webhook mode serves one route on the bridge's web server and answers 200 only after the
publish, so Telegram retries anything not stored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import os
import urllib.parse
import warnings
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

import aiohttp
from aiohttp import web
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile
from telegram import Message as TgMessage
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from adapters.telegram import translate
from adapters.telegram.config import TelegramConfig
from bridge import failpoints, filelinks
from bridge.adapter import Adapter, AdapterContext, Capabilities, ChannelConfig, Delivered, HealthState
from bridge.errors import IntegrationBroken, PermanentError, TransientError
from bridge.model import Attachment, Message
from bridge.ratelimit import Pacer
from bridge.retry import Backoff
from bridge.sentonce import send_once

log = logging.getLogger("adapters.telegram")

# Opt into python-telegram-bot's coming timedelta durations now: without it PTB 22 warns
# (PTBDeprecationWarning) each time a 429 is raised. `retry_after_s` reads either form.
os.environ.setdefault("PTB_TIMEDELTA", "true")

# httpx (PTB's HTTP client) logs every request URL at INFO, and a Bot API URL holds the
# bot token. Keep it quiet unless an operator configured that logger on purpose.
if logging.getLogger("httpx").level == logging.NOTSET:
    logging.getLogger("httpx").setLevel(logging.WARNING)

OFFSET_KEY = "offset"
PROGRESS_TTL_S = 2 * 86400
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: BadRequest descriptions that mean the chat itself is gone for us
_UNREACHABLE = ("chat not found", "user is deactivated", "bot was kicked", "not enough rights to send",
                "have no rights to send", "peer_id_invalid")

T = TypeVar("T")


def retry_after_s(exc: RetryAfter) -> float:
    """Seconds Telegram asked us to wait (PTB 22 warns on the int form; read either)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value: int | float | timedelta = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def send_error(exc: TelegramError, what: str) -> Exception:
    """Map a Bot API failure to the bridge's send errors (the dispatcher's retry policy)."""
    if isinstance(exc, RetryAfter):
        return TransientError(f"telegram flood control on {what}", retry_after_s=retry_after_s(exc))
    if isinstance(exc, Forbidden):
        return PermanentError(f"telegram refused {what}: {exc.message}", unreachable=True)
    if isinstance(exc, InvalidToken):
        return IntegrationBroken(f"telegram rejected the bot token (channels.telegram.token): {exc.message}")
    if isinstance(exc, BadRequest):
        unreachable = any(s in exc.message.lower() for s in _UNREACHABLE)
        return PermanentError(f"telegram rejected {what}: {exc.message}", unreachable=unreachable)
    if isinstance(exc, TimedOut):
        return TransientError(f"telegram timed out on {what}")
    if isinstance(exc, NetworkError | Conflict):
        return TransientError(f"telegram failed {what}: {exc.message}")
    return PermanentError(f"telegram error on {what}: {exc!r}")


class FileTooLarge(PermanentError):
    """A customer's file over ``max_file_bytes`` (the Bot API hands out 20 MB at most)."""


class TelegramAdapter(Adapter):
    """Customers on Telegram (private chats and groups)."""

    name: ClassVar[str] = "telegram"
    config_model: ClassVar[type[ChannelConfig]] = TelegramConfig
    side = "customer"
    #: text is split into parts of 4096 UTF-16 units (translate.MAX_TEXT_UNITS)
    capabilities = Capabilities(buttons=True, files=True, max_text_length=translate.MAX_TEXT_UNITS)
    #: Telegram's documented limits: ~30 messages/s per bot, 1 message/s per chat
    default_rate_per_s: ClassVar[float] = 30.0
    default_rate_per_address_per_s: ClassVar[float | None] = 1.0

    def __init__(self, config: ChannelConfig, ctx: AdapterContext) -> None:
        super().__init__(config, ctx)
        assert isinstance(config, TelegramConfig)
        self.cfg: TelegramConfig = config
        self._chat_pacer = Pacer(config.rate_per_address_per_s or self.default_rate_per_address_per_s)
        self._request = HTTPXRequest(
            connection_pool_size=64, connect_timeout=config.connect_timeout_s, read_timeout=config.read_timeout_s,
            write_timeout=config.write_timeout_s, media_write_timeout=config.media_write_timeout_s,
        )
        # Long polls get their own connection so a held getUpdates never blocks a send.
        self._poll_request = HTTPXRequest(
            connection_pool_size=1, connect_timeout=config.connect_timeout_s, read_timeout=config.read_timeout_s,
            write_timeout=config.write_timeout_s,
        )
        self.bot = Bot(
            config.token.get_secret_value(), base_url=config.base_url, base_file_url=config.base_file_url,
            request=self._request, get_updates_request=self._poll_request, local_mode=config.local_mode,
        )
        self.bot_username = ""
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._health: tuple[HealthState, str] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._file_key = filelinks.signing_key("telegram", config.token.get_secret_value())

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self._request.initialize()
        await self._poll_request.initialize()
        self._started = True
        if not self.ctx.receive:
            return
        loop = self._poll_loop() if self.cfg.mode == "polling" else self._register_webhook()
        self._task = asyncio.create_task(loop, name="telegram-receive")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._started:
            await self._request.shutdown()
            await self._poll_request.shutdown()
            self._started = False
        await self._report("stopped", "")

    async def check(self) -> tuple[HealthState, str]:
        """getMe: does Telegram accept the token?"""
        try:
            me = await self._with_request(self.bot.get_me)
        except InvalidToken:
            return ("broken", "Telegram rejected the bot token (channels.telegram.token); ask @BotFather for it")
        except TelegramError as exc:
            return ("degraded", f"Telegram did not answer getMe: {exc}")
        self.bot_username = me.username or ""
        return ("ok", f"@{me.username}")

    async def _with_request(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run a Bot API call, opening the HTTP client first when the adapter is not started
        (``bridge status`` checks without starting)."""
        if self._started:
            return await call()
        await self._request.initialize()
        try:
            return await call()
        finally:
            await self._request.shutdown()

    async def _report(self, state: HealthState, detail: str) -> None:
        """Report health on changes only (the poll loop would repeat itself every 30 s)."""
        if self._health == (state, detail):
            return
        self._health = (state, detail)
        with contextlib.suppress(Exception):
            await self.ctx.report_health(state, detail)

    # -- receiving: long polling with an offset we own ---------------------------------

    async def _poll_loop(self) -> None:
        backoff = Backoff(base_s=1.0, cap_s=30.0)
        await self._report("starting", "long polling")
        while (ready := await self._prepare_polling(backoff)) == "retry":
            pass
        if ready == "broken":
            return
        offset = await self._load_offset(backoff)
        while True:
            try:
                updates = await self._fetch(offset)
            except RetryAfter as exc:
                await self._report("degraded", "Telegram flood control on getUpdates")
                await asyncio.sleep(retry_after_s(exc))
                continue
            except TimedOut:
                continue  # a long poll the network dropped: ask again
            except InvalidToken:
                await self._report("broken", "Telegram rejected the bot token (channels.telegram.token)")
                return
            except Conflict as exc:
                await self._report("degraded", f"another poller or a webhook uses this bot: {exc.message}")
                await asyncio.sleep(backoff.next())
                continue
            except TelegramError as exc:
                await self._report("degraded", f"getUpdates failed: {exc}")
                await asyncio.sleep(backoff.next())
                continue
            failpoints.hit("ingest.after_fetch")
            if updates:
                try:
                    for update in updates:
                        await self._ingest(update)
                        failpoints.hit("telegram.after_publish")
                    next_offset = max(int(u["update_id"]) for u in updates) + 1
                    # Stored before Telegram hears of it: the next getUpdates confirms.
                    await self.ctx.state.set(OFFSET_KEY, str(next_offset))
                    offset = next_offset
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the bus is down: fetch the same batch again later
                    log.warning("telegram updates not stored", extra={"error": repr(exc)})
                    await self._report("degraded", f"cannot store updates: {exc!r}")
                    await asyncio.sleep(backoff.next())
                    continue
            backoff.reset()
            await self._report("ok", "long polling")

    async def _load_offset(self, backoff: Backoff) -> int | None:
        """The next update id to ask for, as last stored (None: whatever Telegram holds)."""
        while True:
            try:
                stored = await self.ctx.state.get(OFFSET_KEY)
                return int(stored) if stored else None
            except Exception as exc:  # Redis not reachable yet: nothing can be stored either
                await self._report("degraded", f"cannot read the stored offset: {exc!r}")
                await asyncio.sleep(backoff.next())

    async def _fetch(self, offset: int | None) -> list[dict[str, Any]]:
        """One long poll, as the Bot API's JSON. Raises `TelegramError` subclasses."""
        try:
            updates = await self.bot.get_updates(
                offset=offset, limit=self.cfg.poll_limit, timeout=self.cfg.poll_timeout_s,
                allowed_updates=translate.ALLOWED_UPDATES,
            )
        except TelegramError:
            raise
        except Exception as exc:
            # python-telegram-bot could not parse something Telegram sent (a field it does not
            # know yet). Read the same batch as plain JSON instead of stalling on it forever.
            log.error("telegram updates not parsed by python-telegram-bot", extra={"error": repr(exc)})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PTB asks us to prefer get_updates; it just failed
                raw = await self.bot.do_api_request("getUpdates", api_kwargs={
                    "offset": offset, "limit": self.cfg.poll_limit, "timeout": 0,
                    "allowed_updates": translate.ALLOWED_UPDATES})
            return [u for u in raw if isinstance(u, dict) and isinstance(u.get("update_id"), int)]
        return [u.to_dict() for u in updates]

    async def _prepare_polling(self, backoff: Backoff) -> str:
        """Learn the bot's username (for /cmd@bot) and remove a webhook, which would make
        every getUpdates fail with 409. Pending updates are kept."""
        try:
            me = await self.bot.get_me()
            self.bot_username = me.username or ""
            await self.bot.delete_webhook(drop_pending_updates=False)
            return "ready"
        except InvalidToken:
            await self._report("broken", "Telegram rejected the bot token (channels.telegram.token)")
            return "broken"
        except TelegramError as exc:
            await self._report("degraded", f"cannot reach Telegram: {exc}")
            await asyncio.sleep(retry_after_s(exc) if isinstance(exc, RetryAfter) else backoff.next())
            return "retry"

    async def _ingest(self, update: dict[str, Any]) -> None:
        """Publish one update; side effects (greeting, answering a button) come after.

        An update the translator cannot read is logged and skipped: holding the offset for
        it would stop every later customer message."""
        try:
            message = translate.update_to_message(update, self.name, self.bot_username)
        except Exception as exc:
            log.error("telegram update not understood; skipped",
                      extra={"update_id": update.get("update_id"), "error": repr(exc)})
            return
        if message is None:
            return
        for attachment in message.attachments:
            attachment.url = filelinks.attachment_link(self.ctx.public_url, self.cfg.files_path, self._file_key,
                                                       attachment, self.cfg.file_link_ttl_s)
        command = message.data.get("command")
        if command == "start" and not message.edited and self.cfg.greet_on_start:
            # /start is Telegram's "open the chat" button, not a support request: it is
            # answered here in the customer's language and opens no case.
            await self._greet(message)
            return
        await self.ctx.publish(message)
        query_id = message.data.get("callback_query_id")
        if query_id:
            with contextlib.suppress(TelegramError):  # stops the button's spinner; harmless if late
                await self.bot.answer_callback_query(query_id)

    async def _greet(self, message: Message) -> None:
        language = message.sender.language if message.sender else ""
        text = translate.greeting_for(language, self.cfg.greeting, self.ctx.settings.default_language)
        try:
            await self.bot.send_message(chat_id=message.address, text=text)
        except TelegramError as exc:  # a greeting is a courtesy: never hold up the offset for it
            log.warning("telegram greeting not sent", extra={"chat": message.address, "error": str(exc)})

    # -- receiving: webhook ------------------------------------------------------------

    async def _register_webhook(self) -> None:
        if not self.cfg.set_webhook:
            await self._report("ok", "webhook (registered by the operator)")
            return
        url = self.cfg.webhook_url or self.ctx.public_url.rstrip("/") + self.cfg.webhook_path
        backoff = Backoff(base_s=1.0, cap_s=60.0)
        secret = self.cfg.webhook_secret.get_secret_value() if self.cfg.webhook_secret else None
        while True:
            try:
                me = await self.bot.get_me()
                self.bot_username = me.username or ""
                await self.bot.set_webhook(url, secret_token=secret, allowed_updates=translate.ALLOWED_UPDATES)
                await self._report("ok", f"webhook {url}")
                return
            except InvalidToken:
                await self._report("broken", "Telegram rejected the bot token (channels.telegram.token)")
                return
            except BadRequest as exc:  # a URL Telegram will not use: retrying cannot help
                await self._report("broken", f"Telegram refused the webhook URL {url}: {exc.message} (it must be "
                                             "https; set http.public_url or channels.telegram.webhook_url)")
                return
            except TelegramError as exc:
                await self._report("degraded", f"setWebhook failed: {exc}")
                await asyncio.sleep(retry_after_s(exc) if isinstance(exc, RetryAfter) else backoff.next())

    def routes(self) -> Iterable[web.AbstractRouteDef]:
        file_route = web.get(self.cfg.files_path + "/{file_id}", self._serve_file)
        if self.cfg.mode != "webhook":
            return [file_route]
        return [web.post(self.cfg.webhook_path, self._webhook), file_route]

    async def _webhook(self, request: web.Request) -> web.Response:
        expected = self.cfg.webhook_secret.get_secret_value().encode() if self.cfg.webhook_secret else b""
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not expected or not hmac.compare_digest(given, expected):
            return web.Response(status=403, text="forbidden")
        try:
            update = await request.json()
            if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
                raise ValueError("not an update")
        except ValueError:
            return web.Response(status=400, text="not a Telegram update")
        try:
            await self._ingest(update)
        except Exception as exc:  # not stored: a non-200 makes Telegram deliver it again
            log.warning("telegram update not stored", extra={"error": repr(exc)})
            return web.Response(status=503, text="try again")
        return web.Response(text="ok")

    # -- files -------------------------------------------------------------------------

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        wanted = filelinks.linked_attachment(request.query, self._file_key, request.match_info["file_id"])
        if wanted is None:
            return web.Response(status=403, text="invalid or expired link")
        try:
            content = await self.fetch_attachment(wanted)
        except PermanentError as exc:
            return web.Response(status=413 if isinstance(exc, FileTooLarge) else 404, text=f"telegram: {exc.reason}")
        except TransientError as exc:
            return web.Response(status=503, text=f"telegram: {exc.reason}")
        return web.Response(body=content, **filelinks.response_options(wanted.mime, wanted.name or wanted.ref))

    async def fetch_attachment(self, attachment: Attachment) -> bytes:
        """The bytes of an inbound file, fetched on demand through getFile by its ``ref``."""
        try:
            return await self._with_request(lambda: self._download(attachment.ref))
        except TelegramError as exc:
            raise send_error(exc, "getFile") from exc

    async def _download(self, file_id: str) -> bytes:
        file = await self.bot.get_file(file_id)
        if (file.file_size or 0) > self.cfg.max_file_bytes:
            raise FileTooLarge(f"file of {file.file_size} bytes is over channels.telegram.max_file_bytes")
        return bytes(await file.download_as_bytearray())

    # -- sending -----------------------------------------------------------------------

    async def send(self, message: Message) -> Delivered:
        """Text in plain-text parts of at most 4096 characters, then each attachment
        uploaded; buttons ride on the last text part. A retry resumes after the parts
        already delivered (their count is kept in ``ctx.state``), and a redelivery of a
        message sent whole sends nothing again (`bridge.sentonce`)."""
        return await send_once(self.ctx.state, message, self._send)

    async def _send(self, message: Message) -> Delivered:
        parts = list(self._parts(message))
        if not parts:
            raise PermanentError("nothing to send: no text and no attachments")
        progress_key = f"progress:{message.id}"
        done = 0
        if len(parts) > 1:
            stored = await self.ctx.state.get(progress_key)
            done = int(stored) if stored else 0
        chat_id: int | str = message.address
        last: TgMessage | None = None
        for index, part in enumerate(parts):
            if index < done:
                continue
            await self._chat_pacer.wait(str(chat_id))  # the parts of one message keep the per-chat pace too
            try:
                try:
                    last = await part(chat_id)
                except ChatMigrated as exc:  # a group became a supergroup: same chat, new id
                    chat_id = exc.new_chat_id
                    last = await part(chat_id)
            except TelegramError as exc:
                raise send_error(exc, "sendMessage") from exc
            if len(parts) > 1:
                await self.ctx.state.set(progress_key, str(index + 1), ttl_s=PROGRESS_TTL_S)
        if len(parts) > 1:
            await self.ctx.state.delete(progress_key)
        return Delivered(platform_id=str(last.message_id) if last else "")

    def _parts(self, message: Message) -> Iterator[Callable[[int | str], Awaitable[TgMessage]]]:
        prefix = translate.agent_prefix(message, self.cfg.show_agent_name)
        text = message.text
        buttons = message.buttons
        rows = translate.keyboard_rows(buttons) if (buttons and self.cfg.buttons) else None
        if buttons and rows is None:
            text = f"{text}\n\n{translate.buttons_as_text(buttons)}" if text else translate.buttons_as_text(buttons)
        chunks = translate.reply_parts(text, prefix)
        if rows is not None and not chunks:
            chunks = [translate.buttons_as_text(buttons)]  # a keyboard needs a message to sit on
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            yield self._text_part(chunk, rows if last else None, buttons if last else [])
        for attachment in message.attachments:
            yield self._file_part(attachment)

    def _text_part(self, text: str, rows: list[list[tuple[str, str]]] | None,
                   buttons: list[Any]) -> Callable[[int | str], Awaitable[TgMessage]]:
        async def send(chat_id: int | str) -> TgMessage:
            if rows is None:
                return await self.bot.send_message(chat_id=chat_id, text=text)
            markup = InlineKeyboardMarkup(
                [[InlineKeyboardButton(label, callback_data=value) for label, value in row] for row in rows]
            )
            try:
                return await self.bot.send_message(chat_id=chat_id, text=text, reply_markup=markup)
            except BadRequest as exc:
                if "button" not in exc.message.lower() and "markup" not in exc.message.lower():
                    raise
                # Telegram refused the keyboard: the choices go as text instead.
                fallback = f"{text}\n\n{translate.buttons_as_text(buttons)}"
                return await self.bot.send_message(chat_id=chat_id, text=fallback[: translate.MAX_TEXT_UNITS])

        return send

    def _file_part(self, attachment: Attachment) -> Callable[[int | str], Awaitable[TgMessage]]:
        async def send(chat_id: int | str) -> TgMessage:
            if not attachment.url:
                # Already on Telegram (a file_id this bot received): no bytes to move.
                return await self.bot.send_document(chat_id=chat_id, document=attachment.ref)
            content = await self._fetch_bytes(attachment.url)
            upload = InputFile(content, filename=attachment.name or "file", attach=True)
            if attachment.mime in ("image/jpeg", "image/png") and len(content) <= 10 * 1024 * 1024:
                return await self.bot.send_photo(chat_id=chat_id, photo=upload)
            return await self.bot.send_document(chat_id=chat_id, document=upload)

        return send

    async def _fetch_bytes(self, url: str) -> bytes:
        """Outbound files are uploaded, never handed to Telegram as a URL: the bridge fetches
        them (``data:`` or http(s)) with a size cap."""
        limit = self.cfg.max_upload_bytes
        if url.startswith("data:"):
            header, _, payload = url.partition(",")
            try:
                content = (base64.b64decode(payload, validate=True) if header.endswith(";base64")
                           else urllib.parse.unquote_to_bytes(payload))
            except (binascii.Error, ValueError) as exc:
                raise PermanentError(f"attachment is not a valid data: URL ({exc})") from None
        elif url.startswith(("http://", "https://")):
            if self._http is None:
                self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
            try:
                async with self._http.get(url) as response:
                    if response.status >= 500:
                        raise TransientError(f"attachment source answered {response.status}")
                    if response.status >= 400:
                        raise PermanentError(f"attachment source answered {response.status}")
                    content = await response.content.read(limit + 1)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TransientError(f"attachment not fetched: {exc!r}") from None
        else:
            raise PermanentError(f"attachment URL scheme not supported: {url.split(':', 1)[0]!r}")
        if len(content) > limit:
            raise PermanentError(f"attachment over {limit} bytes (channels.telegram.max_upload_bytes)")
        return content
