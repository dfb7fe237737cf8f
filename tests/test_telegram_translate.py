"""Telegram translation on recorded Bot API payloads, and outbound text shaping (pure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.telegram import translate
from adapters.telegram.config import TelegramConfig
from bridge.model import Attachment, Button, Message, Sender, decode, encode

FIXTURES = Path(__file__).parent / "fixtures" / "telegram"
TOKEN = "123456789:AAFakeTokenForTestsOnly_abcdefghijk"


def fixture(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8")))


def translated(name: str) -> Message:
    message = translate.update_to_message(fixture(name), "telegram", "support_bot")
    assert message is not None
    return decode(encode(message))  # what the engine reads back from the stream


def test_private_text() -> None:
    m = translated("private_text")
    assert (m.kind, m.channel, m.address) == ("customer", "telegram", "55501")
    assert m.dedupe_key == "telegram:910000001"
    assert m.text == "URGENT: production line stopped, controller board fails"
    assert m.sender == Sender(id="55501", name="Maria Santos", username="msantos", language="en")
    assert m.platform_ms == 1763900000_000
    assert not m.edited
    assert m.data["chat_type"] == "private"


def test_group_is_one_conversation_and_keeps_who_wrote() -> None:
    m = translated("group_text")
    assert m.address == "-1001234567890"
    assert m.sender is not None
    assert (m.sender.id, m.sender.name, m.sender.language) == ("777000111", "Иван Петров", "ru")
    assert m.data["chat_type"] == "supergroup" and m.data["chat_title"] == "Acme Purchasing"


def test_photo_with_caption_keeps_the_largest_size_as_metadata() -> None:
    m = translated("photo_caption")
    assert m.text == "Burnt connector on the PCB"
    assert m.attachments == [Attachment(name="photo_AQADlarge.jpg", mime="image/jpeg", size=88120,
                                        ref="AgACAgIAAxkBAAIBlarge")]


def test_document_metadata_and_language_with_region() -> None:
    m = translated("document")
    assert m.text == ""
    assert m.attachments == [Attachment(name="发票-2026-11.pdf", mime="application/pdf", size=245301,
                                        ref="BQACAgIAAxkBAAIBdoc")]
    assert m.sender is not None and m.sender.language == "zh-hans"


def test_edited_message_is_marked_with_its_own_dedupe_key() -> None:
    m = translated("edited")
    assert m.edited
    assert m.text == "URGENT: production line 2 stopped"
    assert m.dedupe_key == "telegram:910000005"
    assert m.platform_ms == 1763900090_000


def test_callback_query_carries_the_value_and_shows_the_label() -> None:
    m = translated("callback_query")
    assert m.address == "55501"
    assert m.text == "😀 Great"
    assert m.data["callback"] == "survey:5"
    assert m.data["callback_query_id"] == "4382bfdwdsb323b2d9"


def test_start_command_is_recognised() -> None:
    m = translated("start_ru")
    assert m.data["command"] == "start" and m.data["args"] == ""
    assert m.sender is not None and m.sender.language == "ru"


def test_a_command_for_another_bot_is_plain_text() -> None:
    m = translated("start_other_bot")
    assert "command" not in m.data
    assert m.text == "/start@other_bot"


def test_service_messages_are_ignored() -> None:
    assert translate.update_to_message(fixture("service_join")) is None


def test_tagalog_text_keeps_the_language_hint() -> None:
    m = translated("tagalog_text")
    assert m.sender is not None and m.sender.language == "tl" and m.sender.name == "Jose"


@pytest.mark.parametrize(("language", "expected_start"), [
    ("ru", "Здравствуйте"), ("zh-hans", "您好"), ("tl", "Kumusta"), ("ms", "Helo"), ("en-GB", "Hello"),
    ("pt-br", "Hello"), ("", "Hello"),
])
def test_greeting_in_the_customers_language(language: str, expected_start: str) -> None:
    assert translate.greeting_for(language).startswith(expected_start)


def test_greeting_overrides_from_config() -> None:
    assert translate.greeting_for("pt-BR", {"pt": "Olá!"}) == "Olá!"


# -- outbound text -------------------------------------------------------------------------

HOSTILE = [
    "*bold* _italic_ __underline__ ~strike~ ||spoiler|| `code` ```pre```",
    "[link](http://evil.example) ![img](x) <a href='http://evil.example'>click</a>",
    "<b>not bold</b> <script>alert(1)</script> &amp; &lt; & < > \" '",
    "1 + 1 = 2. (yes!) {braces} #hash >quote |pipe| - minus \\ backslash \\\\",
    "escaped already: \\*not\\* \\_a\\_ \\[link\\]",
    "@everyone /start@support_bot https://example.com/?a=1&b=<2>",
    "emoji 👩‍👩‍👧‍👦 flags 🇵🇭🇲🇾 skin 👍🏽 and combining é",
    "RTL \u202e override \u200b zero width \u2066isolate\u2069",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_are_sent_as_written(text: str) -> None:
    """No parse_mode: one part, the text unchanged (Telegram renders it literally)."""
    assert translate.split_text(text) == [text.strip()]


def _assert_parts(parts: list[str], limit: int) -> None:
    for part in parts:
        assert part and translate.utf16_len(part) <= limit
        part.encode("utf-8")  # raises on a lone surrogate
        assert not translate._glued(part[0]), "a part starts with a combining mark or joiner"


def test_split_prefers_paragraphs_then_lines_then_spaces() -> None:
    paragraph = "word " * 500  # 2500 chars
    text = paragraph.strip() + "\n\n" + paragraph.strip() + "\n\n" + "end"
    parts = translate.split_text(text)
    assert parts == [paragraph.strip(), paragraph.strip() + "\n\nend"]

    lines = "\n".join(f"line {i:04d} " + "x" * 40 for i in range(200))
    parts = translate.split_text(lines)
    _assert_parts(parts, 4096)
    assert "\n".join(parts) == lines
    assert all(p.startswith("line ") for p in parts)

    words = " ".join(["supercalifragilistic"] * 600)
    parts = translate.split_text(words)
    _assert_parts(parts, 4096)
    assert " ".join(parts) == words


def test_split_never_cuts_a_surrogate_pair_or_emoji_sequence() -> None:
    family = "👩‍👩‍👧‍👦"  # 11 UTF-16 units, one visible emoji
    text = family * 1000
    parts = translate.split_text(text)
    _assert_parts(parts, 4096)
    assert "".join(parts) == text
    assert all(p.count(family) * len(family) == len(p) for p in parts)

    accents = "e\u0301" * 5000  # e + combining acute, no spaces
    parts = translate.split_text(accents)
    _assert_parts(parts, 4096)
    assert "".join(parts) == accents


def test_split_counts_utf16_units_like_telegram() -> None:
    text = "😀" * 3000  # 3000 characters, 6000 UTF-16 units
    parts = translate.split_text(text)
    assert [len(p) for p in parts] == [2048, 952]


def test_short_text_is_one_part_and_empty_is_none() -> None:
    assert translate.split_text("hi") == ["hi"]
    assert translate.split_text("  \n ") == []


def test_buttons_keyboard_and_text_fallback() -> None:
    stars = [Button(label=str(i), value=f"survey:{i}") for i in range(1, 6)]
    assert translate.keyboard_rows(stars) == [[(str(i), f"survey:{i}") for i in range(1, 6)]]
    long_value = [Button(label="Yes", value="x" * 65)]
    assert translate.keyboard_rows(long_value) is None
    assert translate.buttons_as_text(stars[:2]) == "1. 1\n2. 2"


def test_agent_name_on_the_first_line() -> None:
    reply = Message(kind="reply", channel="telegram", address="1", text="Your order ships today.",
                    sender=Sender(id="U1", name="Anna", is_agent=True))
    assert translate.agent_prefix(reply, True) + reply.text == "Anna:\nYour order ships today."
    assert translate.agent_prefix(reply, False) == ""


def test_config_checks_token_and_webhook_secret() -> None:
    base = {"token": TOKEN}
    assert TelegramConfig.model_validate(base).mode == "polling"
    with pytest.raises(ValueError, match="not a Telegram bot token"):
        TelegramConfig.model_validate({"token": "nope"})
    with pytest.raises(ValueError, match="webhook_secret is required"):
        TelegramConfig.model_validate({**base, "mode": "webhook"})
    with pytest.raises(ValueError, match="secret_token"):
        TelegramConfig.model_validate({**base, "mode": "webhook", "webhook_secret": "has space"})
    assert "AAFake" not in repr(TelegramConfig.model_validate(base))


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_polling_and_webhook_translate_alike(name: str) -> None:
    """Polling hands the translator PTB's ``Update.to_dict()``, the webhook Telegram's JSON."""
    from telegram import Bot, Update

    raw = fixture(name)
    via_ptb = Update.de_json(raw, Bot(TOKEN)).to_dict()
    a = translate.update_to_message(raw, "telegram", "support_bot")
    b = translate.update_to_message(via_ptb, "telegram", "support_bot")
    if a is None or b is None:
        assert a is None and b is None
        return
    b.id, b.created_ms = a.id, a.created_ms
    assert b == a
