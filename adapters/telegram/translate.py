"""Pure translation between Bot API payloads and our `Message`, and outbound text shaping.

Inbound works on the Bot API's JSON (an Update as a dict, exactly as Telegram sends it), so
recorded payloads test it without a bot. Outbound text is sent as plain text, with no
``parse_mode``: Telegram then shows every character as written, so no customer or agent
string can break entity parsing ("can't parse entities") or format itself. Nothing needs
escaping, and splitting never has to keep an escape or a tag whole.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from bridge.model import Attachment, Button, Message, Sender

#: the update kinds the bridge asks for (getUpdates allowed_updates / setWebhook)
ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]

#: Telegram's limit on one message's text, counted in UTF-16 code units
MAX_TEXT_UNITS = 4096
MAX_CALLBACK_DATA_BYTES = 64
MAX_BUTTONS = 100

GREETINGS: dict[str, str] = {
    "en": "Hello! This is our support chat. Write your question here and we will answer you in this chat.",
    "zh": "您好！这里是我们的客服聊天。请在这里写下您的问题，我们会在此聊天中回复您。",
    "ru": "Здравствуйте! Это чат нашей поддержки. Напишите свой вопрос здесь, и мы ответим вам в этом чате.",
    "tl": "Kumusta! Ito ang aming support chat. Isulat dito ang iyong tanong at sasagutin ka namin sa chat na ito.",
    "ms": "Helo! Ini ialah sembang sokongan kami. Tulis soalan anda di sini dan kami akan membalas dalam sembang ini.",
}


# -- inbound -----------------------------------------------------------------------------


def sender_of(user: dict[str, Any] | None) -> Sender | None:
    if not user:
        return None
    name = " ".join(p for p in (user.get("first_name", ""), user.get("last_name", "")) if p)
    return Sender(
        id=str(user["id"]),
        name=name or user.get("username", ""),
        username=user.get("username", ""),
        language=user.get("language_code", ""),
    )


def attachments_of(msg: dict[str, Any]) -> list[Attachment]:
    """File metadata only; ``ref`` is the file_id the bytes are fetched by (getFile)."""
    out: list[Attachment] = []
    photos = msg.get("photo")
    if photos:
        # Telegram sends every size it made; the last is the largest.
        best = max(photos, key=lambda p: (p.get("width", 0) * p.get("height", 0), p.get("file_size", 0)))
        out.append(Attachment(name=f"photo_{best.get('file_unique_id', 'image')}.jpg", mime="image/jpeg",
                              size=int(best.get("file_size", 0)), ref=best["file_id"]))
    defaults = {"document": "application/octet-stream", "video": "video/mp4", "audio": "audio/mpeg",
                "voice": "audio/ogg", "video_note": "video/mp4", "animation": "video/mp4"}
    for kind, default_mime in defaults.items():
        item = msg.get(kind)
        if not item:
            continue
        out.append(Attachment(
            name=item.get("file_name") or f"{kind}_{item.get('file_unique_id', '')}",
            mime=item.get("mime_type") or default_mime,
            size=int(item.get("file_size", 0)),
            ref=item["file_id"],
        ))
    return out


def command_of(text: str, bot_username: str = "") -> tuple[str, str] | None:
    """``("start", "payload")`` for "/start payload" or "/start@ourbot payload"; None for
    plain text and for commands addressed to another bot."""
    if not text.startswith("/"):
        return None
    head, _, args = text.partition(" ")
    name, _, target = head[1:].partition("@")
    if not name or (target and bot_username and target.lower() != bot_username.lower()):
        return None
    return name.lower(), args.strip()


def button_label(markup: dict[str, Any] | None, value: str) -> str:
    """The label of the inline button whose callback_data is ``value``, if still shown."""
    for row in (markup or {}).get("inline_keyboard", []):
        for button in row:
            if button.get("callback_data") == value:
                return str(button.get("text", ""))
    return ""


def update_to_message(update: dict[str, Any], channel: str = "telegram", bot_username: str = "") -> Message | None:
    """One Update -> one customer `Message`, or None for updates the bridge ignores
    (service messages, channel posts). The dedupe key is ``<channel>:<update_id>``.

    A group is one conversation (address = chat id) and ``sender`` says who wrote.
    ``data["command"]`` is set for bot commands (``/start``), ``data["callback"]`` for a
    pressed inline button (with ``data["callback_query_id"]`` to answer it).
    """
    update_id = update["update_id"]
    dedupe_key = f"{channel}:{update_id}"
    if "callback_query" in update:
        query = update["callback_query"]
        value = str(query.get("data", ""))
        origin = query.get("message") or {}
        chat = origin.get("chat") or {}
        address = str(chat.get("id") or query["from"]["id"])
        label = button_label(origin.get("reply_markup"), value)
        return Message(
            kind="customer", channel=channel, address=address, dedupe_key=dedupe_key,
            text=label or value, sender=sender_of(query.get("from")),
            data={"callback": value, "callback_query_id": str(query["id"]), **_chat_data(chat)},
        )
    edited = "edited_message" in update
    msg = update.get("edited_message") if edited else update.get("message")
    if not msg:
        return None
    text = msg.get("text") or msg.get("caption") or ""
    attachments = attachments_of(msg)
    data: dict[str, Any] = {"message_id": msg.get("message_id"), **_chat_data(msg["chat"])}
    if msg.get("contact"):
        contact = msg["contact"]
        data["shared_contact"] = {k: contact[k] for k in ("phone_number", "first_name", "last_name") if k in contact}
        text = text or " ".join(filter(None, [contact.get("first_name"), contact.get("last_name"),
                                              contact.get("phone_number")]))
    if msg.get("location"):
        data["location"] = {k: msg["location"][k] for k in ("latitude", "longitude")}
    if not text and not attachments and not msg.get("location") and not msg.get("sticker"):
        return None  # joins, leaves, pins, title changes: nothing a customer said
    if msg.get("sticker"):
        data["sticker"] = msg["sticker"].get("emoji", "")
        text = text or msg["sticker"].get("emoji", "")
    if msg.get("text"):
        command = command_of(msg["text"], bot_username)
        if command:
            data["command"], data["args"] = command
    platform_s = msg.get("edit_date") if edited else msg.get("date")
    return Message(
        kind="customer", channel=channel, address=str(msg["chat"]["id"]), dedupe_key=dedupe_key,
        text=text, sender=sender_of(msg.get("from") or msg.get("sender_chat")),
        attachments=attachments, data=data, edited=edited, platform_ms=int(platform_s or 0) * 1000,
    )


def _chat_data(chat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"chat_type": chat.get("type", "")}
    if chat.get("title"):
        out["chat_title"] = chat["title"]
    return out


def greeting_for(language: str, overrides: dict[str, str] | None = None, default_language: str = "en") -> str:
    """The /start greeting in the customer's language ("pt-br" tries "pt-br", then "pt")."""
    table = {**GREETINGS, **(overrides or {})}
    language = (language or "").lower()
    for candidate in (language, language.split("-")[0], default_language, "en"):
        if candidate in table:
            return table[candidate]
    return next(iter(table.values()))


# -- outbound ----------------------------------------------------------------------------


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (an emoji outside the BMP is 2)."""
    return len(text.encode("utf-16-le")) // 2


def _glued(ch: str) -> bool:
    """Characters that belong to the one before them: a cut must not land before them."""
    return (unicodedata.combining(ch) != 0 or ch in "\u200d\ufe0e\ufe0f"
            or "\U0001f3fb" <= ch <= "\U0001f3ff"  # skin tones
            or "\U000e0020" <= ch <= "\U000e007f")  # tag sequences (flags)


def _hard_cut(text: str, limit: int) -> int:
    """The largest cut index keeping ``text[:cut]`` within ``limit`` UTF-16 units, never
    inside a character and never splitting a combining mark or emoji sequence."""
    units = 0
    cut = 0
    for i, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            break
        cut = i + 1
    best = cut
    while best > 0 and best < len(text) and (_glued(text[best]) or text[best - 1] == "\u200d"):
        best -= 1
    return best or cut


def split_text(text: str, limit: int = MAX_TEXT_UNITS) -> list[str]:
    """Split ``text`` into messages of at most ``limit`` UTF-16 units, cutting at the last
    paragraph break, else line break, else space that fits; a word longer than a whole
    message is cut between characters (never inside a surrogate pair or an emoji sequence).
    The whitespace at a cut is dropped; nothing else is."""
    chunks: list[str] = []
    rest = text.strip()
    while rest:
        if utf16_len(rest) <= limit:
            chunks.append(rest)
            break
        window = rest[:_hard_cut(rest, limit)]
        cut = -1
        for separator in ("\n\n", "\n", " "):
            at = window.rfind(separator)
            if at > 0:
                cut = at
                break
        if cut <= 0:
            cut = len(window)
        head = rest[:cut].rstrip()
        if not head:  # only whitespace before the separator: cut hard instead
            head = window
            cut = len(window)
        chunks.append(head)
        rest = rest[cut:].lstrip()
    return chunks


AGENT_NAME_MAX = 64


def agent_prefix(message: Message, show_agent_name: bool) -> str:
    """The line naming the agent above their reply (``"Anna:\n"``), or ""."""
    sender = message.sender
    if show_agent_name and sender and sender.is_agent and sender.name and message.text.strip():
        return f"{sender.name[:AGENT_NAME_MAX]}:\n"
    return ""


def reply_parts(text: str, prefix: str = "", limit: int = MAX_TEXT_UNITS) -> list[str]:
    """``text`` in messages of at most ``limit`` units (`split_text`), the first led by
    ``prefix``: the agent's name never goes out alone, and never pushes a part over."""
    chunks = split_text(text, limit - utf16_len(prefix))
    if prefix and chunks:
        chunks[0] = prefix + chunks[0]
    return chunks


def keyboard_rows(buttons: list[Button]) -> list[list[tuple[str, str]]] | None:
    """Inline keyboard rows of (label, callback value), or None when Telegram cannot show
    these buttons (callback data over 64 bytes, an empty label, too many buttons)."""
    if not buttons or len(buttons) > MAX_BUTTONS:
        return None
    for button in buttons:
        if not button.label.strip() or not 1 <= len(button.value.encode()) <= MAX_CALLBACK_DATA_BYTES:
            return None
    per_row = 5 if all(len(b.label) <= 4 for b in buttons) else 3 if all(len(b.label) <= 12 for b in buttons) else 1
    pairs = [(b.label, b.value) for b in buttons]
    return [pairs[i:i + per_row] for i in range(0, len(pairs), per_row)]


def buttons_as_text(buttons: list[Button]) -> str:
    """The plain-text fallback for buttons: one numbered line each."""
    return "\n".join(f"{i}. {b.label}" for i, b in enumerate(buttons, 1))
