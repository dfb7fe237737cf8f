"""What the console shows of translations (flows/translation.py keeps them in the transcript).

A customer message's translation (the ``translation`` event, ``data.of`` naming the
message) and an agent's reply as sent translated (the reply with ``data.translation_of``)
are shown with the message they belong to, never in its place: the original is the item's
``text``, the translation its ``translation`` or ``sent_as``.
"""

from __future__ import annotations

from typing import Any

from bridge.adapter import DeskSettings
from bridge.model import Message
from bridge.translation import base, language_name, same_language


def agent_language(desk: DeskSettings, agent: str) -> str:
    return base(desk.agent_languages.get(agent) or desk.agents_language)


def me(desk: DeskSettings, agent: str) -> dict[str, Any]:
    """The console's translation switch: on, and the agent's language."""
    language = agent_language(desk, agent)
    return {"enabled": desk.translation_enabled, "language": language,
            "language_name": language_name(language) if language else ""}


def attach(messages: list[Message], items: list[dict[str, Any]], language: str) -> list[dict[str, Any]]:
    """``items`` (one per message shown) with translations moved onto their messages."""
    by_id = {item["id"]: item for item in items}
    folded: set[str] = set()
    for message in messages:
        data = message.data
        if message.kind == "event" and message.name == "translation" and data.get("of") in by_id:
            shown = _shown(message, language)
            if shown is not None:
                by_id[data["of"]]["translation"] = shown
            folded.add(message.id)
        elif message.kind == "reply" and data.get("translation_of") in by_id and data.get("as_written"):
            folded.add(message.id)  # in the customer's language already: the agent's message says it all
        elif message.kind == "reply" and data.get("translation_of") in by_id:
            target = str(data.get("target", ""))
            by_id[data["translation_of"]]["sent_as"] = {
                "text": "" if data.get("error") else message.text, "language": target,
                "language_name": language_name(target), "error": str(data.get("error", ""))}
            folded.add(message.id)
    return [item for item in items if item["id"] not in folded]


def _shown(event: Message, language: str) -> dict[str, Any] | None:
    """The translation for a reader of ``language``; None when the message is in it."""
    data = event.data
    texts = data.get("texts") if isinstance(data.get("texts"), dict) else {}
    failed = data.get("failed") if isinstance(data.get("failed"), dict) else {}
    assert isinstance(texts, dict) and isinstance(failed, dict)
    if language in texts or language in failed:
        target = language
    elif same_language(str(data.get("source", "")), language):
        return None
    else:  # a language no one configured when the message came: the agents' default
        target = str(data.get("target", ""))
    text = texts.get(target, "")
    error = "" if text else str(failed.get(target) or data.get("error") or "no translation")
    return {"text": text, "language": target, "source": str(data.get("source", "")),
            "source_name": language_name(str(data.get("source", ""))), "language_name": language_name(target),
            "error": error}
