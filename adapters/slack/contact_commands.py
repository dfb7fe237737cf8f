"""``!contact`` in a conversation's thread: the customer's contact (the person, fields,
conversations on every channel), set a field, link (shown first, made on ``confirm``)
and unlink. The logic is bridge.contacts; this renders its answers as Slack mrkdwn, with
every value from customers or agents made literal (no mention, link or formatting)."""

from __future__ import annotations

import time
from typing import Any

from adapters.slack.blocks import PLAIN_TEXT_MAX, Block
from adapters.slack.escape import clip, literal
from bridge.contacts import FIELDS, ContactBook, ContactError, PersonView

VIA = "slack"
MAX_CONVERSATIONS = 10


async def run(book: ContactBook | None, conversation_id: str, data: dict[str, Any], agent: str,
              prefix: str = "!") -> tuple[str, list[Block]]:
    """The answer to one ``!contact`` command, as (fallback text, blocks)."""
    try:
        if book is None:
            raise ContactError("contacts are not available in this process")
        if not conversation_id:
            raise ContactError("this thread's conversation is not known yet; try again in a moment")
        contact = await book.for_conversation(conversation_id)
        action = data.get("action")
        if action == "set":
            field, value = str(data.get("field", "")), str(data.get("value", ""))
            view = await book.set_fields(contact.id, {field: value}, agent=agent, via=VIA)
            change = f"set to {literal(value)}" if value else "cleared"
            lead = f"*{literal(field)}* {change} by {literal(agent)}"
            return _answer(lead, view)
        if action == "link":
            other = await book.find(str(data.get("query", "")))
            if not data.get("confirmed"):
                if other.id == contact.id or other.id in contact.linked:
                    raise ContactError(f"{other.id} is already this person")
                mine, theirs = await book.view(contact.id), await book.view(other.id)
                lead = (f"*Same person?* Link only if you made sure (never on the customer's word alone); "
                        f"then write `{prefix}contact link {other.id} confirm`")
                text = "\n\n".join([lead, "*This contact*\n" + describe(mine), "*The other*\n" + describe(theirs)])
                return _blocks(text)
            view = await book.link(contact.id, other.id, agent=agent, via=VIA, confirmed=True)
            return _answer(f"linked with {literal(other.id)} by {literal(agent)}", view)
        if action == "unlink":
            other = await book.find(str(data.get("query", "")))
            view = await book.unlink(contact.id, other.id, agent=agent, via=VIA)
            return _answer(f"{literal(other.id)} unlinked by {literal(agent)}", view)
        return _answer("", await book.view(contact.id))
    except ContactError as exc:
        return _blocks(literal(str(exc)))


def describe(view: PersonView) -> str:
    """A person in a few lines of mrkdwn."""
    me = view.contacts[0]
    lines = [f"*{literal(me.name or '(no name)')}*" + (f" · {literal(me.email)}" if me.email else "")
             + f" · id {literal(me.id)}"]
    fields = [f"{name}: {literal(view.contact.fields[name])}" for name in FIELDS if view.contact.fields.get(name)]
    if fields:
        lines.append(" · ".join(fields))
    for other in view.contacts[1:]:
        lines.append(f"same person: {literal(other.name or other.email or other.id)} "
                     f"({literal(', '.join(other.addresses))}) · id {literal(other.id)}")
    now_ms = int(time.time() * 1000)
    for c in view.conversations[:MAX_CONVERSATIONS]:
        lines.append(f"• {literal(c.channel)} · {literal(c.status)}{' · urgent' if c.urgency == 'urgent' else ''}"
                     f" · {_ago(now_ms - c.updated_ms)} · {literal(c.id)}")
    if len(view.conversations) > MAX_CONVERSATIONS:
        lines.append(f"… and {len(view.conversations) - MAX_CONVERSATIONS} more")
    return "\n".join(lines)


def _answer(lead: str, view: PersonView) -> tuple[str, list[Block]]:
    return _blocks((lead + "\n" if lead else "") + describe(view))


def _blocks(text: str) -> tuple[str, list[Block]]:
    fallback = clip(text, 300)
    return fallback, [{"type": "section", "text": {"type": "mrkdwn", "text": clip(text, PLAIN_TEXT_MAX)}}]


def _ago(ms: int) -> str:
    s = max(0, ms // 1000)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit} ago"
    return f"{s}s ago"
