"""What an agent's message in a conversation thread means: a reply, a note or a command.

Pure functions over Slack wire text (entities escaped, mentions as ``<@U123>``), so
they are tested on recorded payloads without a server.

- A command starts with the command prefix (``!`` by default): ``!claim``,
  ``!assign @user``, ``!resolve``, ``!reopen``, ``!urgency urgent|routine``
  (``!urgent`` and ``!routine`` for short); ``!contact`` shows the customer's contact,
  ``!contact set <field> <text>`` sets a field, ``!contact link <who>`` shows both
  contacts and ``!contact link <who> confirm`` links them, ``!contact unlink <who>``
  (adapters/slack/contact_commands.py answers these in the thread). ``!tr <reply>``
  sends the reply translated into the customer's language (``translation:``), the
  original kept in the thread.
- With ``replies: default_out`` a thread reply goes to the customer unless it starts
  with a note prefix (``note:``); with ``replies: explicit`` only a reply starting with
  a reply marker (``reply:``, ``>>``) goes out and everything else is an internal note.
  A note prefix always wins: ``note: >> draft`` stays internal in both modes, and so
  does a prefix in Slack formatting (``*note:*``, ``_note:_``, ``~note:~``, `` `note:` ``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from adapters.slack.escape import escape, mentioned_users, to_plain, unescape

ReplyMode = Literal["default_out", "explicit"]

COMMANDS = ("claim", "assign", "resolve", "reopen", "urgency", "contact")
CONTACT_USAGE = ("{p}contact, {p}contact set company|tier|notes <text>, {p}contact link <contact id|email|"
                 "channel:address> (then ... confirm), {p}contact unlink <contact>")
TRANSLATE = ("tr", "translate")  # !tr <reply>: sent to the customer in their language
URGENCIES = ("urgent", "routine")


@dataclass(frozen=True)
class Parsed:
    """``kind``: reply (to the customer), note (internal), command, or invalid (a
    malformed command, with ``error`` to show the agent)."""

    kind: Literal["reply", "note", "command", "invalid"]
    text: str = ""  # Slack wire text with the marker or prefix removed
    name: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    error: str = ""


_MARKS = "*_~`"  # Slack formatting an agent may wrap a prefix in: *note:*, _note:_, `note:`


def _strip_prefix(text: str, prefixes: Sequence[str]) -> str | None:
    """The text after the first matching prefix (case-insensitive, in or out of Slack
    formatting marks), or None. The prefix is matched on the wire text, where ``>``
    arrives as ``&gt;``."""
    marks = f"[{re.escape(_MARKS)}]*"
    for prefix in prefixes:
        if not prefix:
            continue
        body = marks.join(re.escape(escape(ch)) for ch in prefix)
        match = re.match(rf"\s*{marks}{body}{marks}", text, re.IGNORECASE)
        if match:
            return text[match.end():].strip()
    return None


def parse_command(text: str, prefix: str = "!") -> Parsed | None:
    """A command, an invalid command, or None when the text is not a command at all."""
    stripped = text.strip()
    if not prefix or not stripped.startswith(prefix):
        return None
    words = stripped[len(prefix):].split()
    if not words:
        return None
    word = words[0].lower()
    args = words[1:]
    if word in TRANSLATE:
        rest = stripped[len(prefix):].lstrip()[len(word):].strip()
        if not rest:
            return Parsed("invalid", error=f"{prefix}{word} needs the reply: {prefix}{word} <text for the customer>")
        return Parsed("reply", text=rest, data={"translate": True})
    usage = f"commands: {prefix}claim, {prefix}assign @user, {prefix}resolve, {prefix}reopen, " \
            f"{prefix}urgency urgent|routine, {prefix}contact, {prefix}tr <reply in the customer's language>"
    if word in URGENCIES and not args:
        return Parsed("command", name="urgency", data={"urgency": word})
    if word not in COMMANDS:
        return Parsed("invalid", error=f"unknown command {prefix}{word}; {usage}")
    if word == "assign":
        users = mentioned_users(stripped)
        if users:
            return Parsed("command", name="assign", data={"assignee_id": users[0]})
        if len(args) == 1:
            return Parsed("command", name="assign", data={"assignee": unescape(args[0]).lstrip("@")})
        return Parsed("invalid", error=f"{prefix}assign needs one person: {prefix}assign @user")
    if word == "contact":
        return _contact(stripped[len(prefix):].strip()[len(words[0]):].strip(), prefix)
    if word == "urgency":
        if len(args) == 1 and args[0].lower() in URGENCIES:
            return Parsed("command", name="urgency", data={"urgency": args[0].lower()})
        return Parsed("invalid", error=f"{prefix}urgency needs urgent or routine")
    if args:
        return Parsed("invalid", error=f"{prefix}{word} takes no arguments; {usage}")
    return Parsed("command", name=word)


def _contact(rest: str, prefix: str) -> Parsed:
    """``contact`` (show), ``contact set <field> <text>``, ``contact link <who> [confirm]``,
    ``contact unlink <who>``; ``rest`` is wire text (an email arrives as ``<mailto:…|…>``)."""
    words = rest.split(None, 2)
    action = words[0].lower() if words else "show"
    usage = CONTACT_USAGE.format(p=prefix)
    if action == "show" and len(words) <= 1:
        return Parsed("command", name="contact", data={"action": "show"})
    if action == "set" and len(words) >= 2:
        value = to_plain(words[2]).strip() if len(words) == 3 else ""
        return Parsed("command", name="contact", data={"action": "set", "field": words[1].lower(), "value": value})
    args = to_plain(rest).split()[1:]
    if action == "link" and len(args) in (1, 2) and args[1:] in ([], ["confirm"]):
        return Parsed("command", name="contact",
                      data={"action": "link", "query": args[0], "confirmed": args[1:] == ["confirm"]})
    if action == "unlink" and len(args) == 1:
        return Parsed("command", name="contact", data={"action": "unlink", "query": args[0]})
    return Parsed("invalid", error=f"contact commands: {usage}")


def parse(text: str, *, mode: ReplyMode = "default_out", note_prefixes: Sequence[str] = ("note:",),
          reply_markers: Sequence[str] = ("reply:", ">>"), command_prefix: str = "!") -> Parsed:
    """Classify one thread message written by an agent (Slack wire text)."""
    command = parse_command(text, command_prefix)
    if command is not None:
        return command
    note = _strip_prefix(text, note_prefixes)
    if note is not None:
        return Parsed("note", text=note)
    marked = _strip_prefix(text, reply_markers)
    if mode == "explicit":
        return Parsed("reply", text=marked) if marked is not None else Parsed("note", text=text.strip())
    return Parsed("reply", text=marked if marked is not None else text.strip())
