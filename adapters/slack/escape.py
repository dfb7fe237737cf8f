"""Slack mrkdwn in both directions, as pure functions.

Out: anything a customer wrote goes through `escape` before it reaches a mrkdwn field.
Slack parses mentions and links only inside ``<...>`` and decodes only ``&amp;``,
``&lt;`` and ``&gt;``; escaping those three characters turns ``<!channel>``,
``<@U123>`` and ``<http://x|y>`` into visible text that pings and links nothing. Plain
``@channel`` stays plain text because we never post with ``link_names``.

In: an agent's message arrives in Slack's wire format (entities escaped, mentions and
links as ``<...>`` tokens); `to_plain` turns it into the text a customer should read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))


def escape(text: str) -> str:
    """Escape text for any mrkdwn field: nothing in it can mention, link or ping."""
    for raw, entity in _ESCAPES:
        text = text.replace(raw, entity)
    return text


_MARK = re.compile(r"([*_~`])")
_PARTIAL_ENTITY = re.compile(r"&(?:a(?:m(?:p)?)?|l(?:t)?|g(?:t)?)?$")


def literal(text: str) -> str:
    """`escape`, and Slack's formatting marks (``* _ ~`` and the backtick) kept from pairing up: mrkdwn
    has no escape for them, so each is fenced with zero-width spaces. For names and
    values shown inside our own formatting (``*Maria_K* wrote:``)."""
    return _MARK.sub("\u200b\\1\u200b", escape(text))


def clip(text: str, limit: int, ellipsis: str = "…") -> str:
    """Escaped text cut to at most ``limit`` characters, never inside an ``&amp;`` entity."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - len(ellipsis))]
    return _PARTIAL_ENTITY.sub("", cut) + ellipsis


def unescape(text: str) -> str:
    """Undo Slack's three entities (``&amp;`` last, so ``&amp;lt;`` stays ``&lt;``)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


_TOKEN = re.compile(r"<([^<>\n]*)>")


def _token_text(token: str, users: Mapping[str, str]) -> str:
    target, _, label = token.partition("|")
    if target.startswith("@"):  # <@U123> or <@U123|name>
        user_id = target[1:]
        return "@" + (users.get(user_id) or label or user_id)
    if target.startswith("#"):  # <#C123|general>
        return "#" + (label or target[1:])
    if target.startswith("!"):  # <!here>, <!channel>, <!subteam^S1|@team>, <!date^...|fallback>
        if label:
            return label
        word = target[1:].split("^", 1)[0]
        return "@" + word
    if target.startswith("mailto:"):
        return label or target[len("mailto:"):]
    if not label or label == target or target.endswith(label):
        return target
    return f"{label} ({target})"


def to_plain(text: str, users: Mapping[str, str] | None = None) -> str:
    """Slack wire text -> what a person reads: mentions as ``@name``, links as URLs.

    ``users`` maps Slack user ids to display names for ``<@U123>`` mentions.
    """
    names = users or {}
    parts: list[str] = []
    last = 0
    for match in _TOKEN.finditer(text):
        parts.append(unescape(text[last:match.start()]))
        parts.append(_token_text(unescape(match.group(1)), names))
        last = match.end()
    parts.append(unescape(text[last:]))
    return "".join(parts)


def mentioned_users(text: str) -> list[str]:
    """User ids mentioned as ``<@U123>`` / ``<@U123|name>`` in Slack wire text."""
    return re.findall(r"<@([A-Z0-9]+)(?:\|[^<>]*)?>", text)


_SPECIAL = {"@here": "<!here>", "@channel": "<!channel>", "@everyone": "<!everyone>"}


def mention_markup(mention: str) -> str:
    """The operator's configured mention in Slack syntax, so that it really pings.

    Accepts Slack syntax as is (``<!here>``, ``<@U123>``, ``<!subteam^S123>``) and the
    forms people write in a config file: ``@here``, ``@channel``, ``@everyone``, a user id
    ``U0123ABCD`` (or ``@U0123ABCD``) and a user group id ``S0123ABCD``. Anything else is
    escaped and shown as text (Slack cannot ping a group by its handle through the API).
    """
    parts = []
    for word in mention.split():
        bare = word.lstrip("@")
        if word.startswith("<") and word.endswith(">"):
            parts.append(word)
        elif word.lower() in _SPECIAL:
            parts.append(_SPECIAL[word.lower()])
        elif re.fullmatch(r"[UW][A-Z0-9]{6,}", bare):
            parts.append(f"<@{bare}>")
        elif re.fullmatch(r"S[A-Z0-9]{6,}", bare):
            parts.append(f"<!subteam^{bare}>")
        else:
            parts.append(escape(word))
    return " ".join(parts)
