"""Engine events -> Slack messages (fallback text + Block Kit), as pure functions.

Anything that came from a customer is either escaped for mrkdwn (`escape`) or put in a
``plain_text`` object, which Slack never parses for mentions, links or formatting; so a
customer's ``<!channel>`` shows as those characters and pings nobody. Only the
operator's configured mention is written raw.
"""

from __future__ import annotations

from typing import Any

from adapters.slack.escape import clip, escape, literal
from bridge.model import Message

Block = dict[str, Any]

PLAIN_TEXT_MAX = 3000  # Slack's limit for a section's text
MAX_BLOCKS = 50
MESSAGE_TEXT_MAX = 36_000  # stay under chat.postMessage's 40,000-character text limit
FALLBACK_MAX = 3000  # the notification text; the blocks carry the whole message

CLAIM_ACTION = "bridge:claim"
RESOLVE_ACTION = "bridge:resolve"
REOPEN_ACTION = "bridge:reopen"


def summary(event: Message) -> dict[str, Any]:
    value = event.data.get("conversation")
    return value if isinstance(value, dict) else {}


def customer_name(event: Message) -> str:
    conv = summary(event)
    name = str(conv.get("customer") or "") or (event.sender.name if event.sender else "")
    return name or str(conv.get("address") or "") or "customer"


def split_text(text: str, limit: int = MESSAGE_TEXT_MAX) -> list[str]:
    """``text`` in parts of at most ``limit`` characters, in order, each cut at the last
    line break or space that fits (that one character is dropped), else hard."""
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit + 1]  # a space just past the limit is a clean cut too
        cut = max(window.rfind("\n"), window.rfind(" "))
        if cut > 0:
            parts.append(rest[:cut])
            rest = rest[cut + 1:]
        else:
            parts.append(rest[:limit])
            rest = rest[limit:]
    return [*parts, rest]


def _chunks(text: str, size: int) -> list[str]:
    text = text[:MESSAGE_TEXT_MAX]
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def plain_sections(text: str, limit_blocks: int = MAX_BLOCKS - 5) -> list[Block]:
    """The customer's text, literal, in as many plain_text sections as it needs."""
    chunks = _chunks(text, PLAIN_TEXT_MAX)
    if len(chunks) > limit_blocks:
        chunks = [*chunks[: limit_blocks - 1], chunks[limit_blocks - 1][: PLAIN_TEXT_MAX - 1] + "…"]
    return [{"type": "section", "text": {"type": "plain_text", "text": c, "emoji": False}} for c in chunks if c]


def _fallback(text: str) -> str:
    return clip(escape(text), FALLBACK_MAX)


def _attachments_block(event: Message) -> list[Block]:
    if not event.attachments:
        return []
    lines = []
    for a in event.attachments[:20]:
        size = f", {a.size} bytes" if a.size else ""
        name = escape(a.name or "file")
        if _linkable(a.url):  # a link the customer's channel offers (e.g. a signed bridge link)
            name = f"<{escape(a.url)}|{name}>"
        lines.append(f"• {name} ({escape(a.mime)}{size})")
    return [{"type": "context", "elements": [{"type": "mrkdwn", "text": clip("\n".join(lines), PLAIN_TEXT_MAX)}]}]


def _linkable(url: str) -> bool:
    return url.startswith(("https://", "http://")) and not any(c in url for c in "<>| \n")


FIELD_VALUE_MAX = 500  # Slack allows 2,000 characters per field; names and reasons are short


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": f"*{label}*\n{literal(_clip(value, FIELD_VALUE_MAX)) if value else '—'}"}


def _button(label: str, action_id: str, value: str, style: str = "") -> Block:
    button: Block = {"type": "button", "action_id": action_id, "text": {"type": "plain_text", "text": label},
                     "value": value}
    if style:
        button["style"] = style
    return button


def opening(event: Message, *, urgent: bool, mention: str = "") -> tuple[str, list[Block]]:
    """The first post of a conversation's thread: who, where, how urgent, the message, its
    status and buttons. Rendered again (chat.update) when the conversation's state changes."""
    conv = summary(event)
    name = _clip(customer_name(event), 200)
    urgency = str(conv.get("urgency") or ("urgent" if urgent else "routine"))
    reason = str(conv.get("urgency_reason") or "")
    kind = "Urgent" if urgent else "New"
    lead = f"{mention} " if urgent and mention else ""
    title = f"{lead}{':rotating_light: ' if urgent else ''}*{kind} conversation from {literal(name)}*"
    fields = [
        _field("Customer", name),
        _field("Channel", str(conv.get("channel") or event.data.get("channel") or "")),
        _field("Language", str(conv.get("language") or "")),
        _field("Urgency", f"{urgency} ({reason})" if reason else urgency),
        _field("Queue", str(conv.get("queue") or "")),
        _field("Conversation", str(conv.get("id") or event.conversation_id)),
    ]
    conversation_id = str(conv.get("id") or event.conversation_id)
    status = str(conv.get("status") or "open")
    assignee = str(conv.get("assignee") or "")
    status_line = f"*Status:* {literal(status)} · " + (f"*Assigned to:* {literal(assignee)}" if assignee
                                                       else "unassigned")
    if status == "resolved":
        buttons = [_button("Reopen", REOPEN_ACTION, conversation_id)]
    else:
        buttons = [_button("Claim", CLAIM_ACTION, conversation_id, style="" if assignee else "primary"),
                   _button("Resolve", RESOLVE_ACTION, conversation_id)]
    blocks: list[Block] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": title}},
        {"type": "section", "fields": fields},
        *plain_sections(event.text),
        *_attachments_block(event),
        {"type": "context", "block_id": "bridge:status", "elements": [{"type": "mrkdwn", "text": status_line}]},
        {"type": "actions", "block_id": "bridge:conversation", "elements": buttons},
    ]
    text = f"{lead}{kind} conversation from {literal(name)}: {_fallback(event.text)}"
    return clip(text, FALLBACK_MAX + 200), blocks


def customer_message(event: Message) -> tuple[str, list[Block]]:
    """A customer's follow-up, in the thread."""
    name = customer_name(event)
    blocks: list[Block] = [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"*{literal(name)}* wrote:"}]},
        *plain_sections(event.text),
        *_attachments_block(event),
    ]
    return f"{clip(literal(name), 200)}: {_fallback(event.text)}", blocks


def delivery(event: Message) -> tuple[str, list[Block]]:
    """Whether an agent's reply reached the customer."""
    status = str(event.data.get("status") or "")
    reason = str(event.data.get("reason") or event.text or "")
    if status == "delivered":
        text = ":white_check_mark: sent to customer"
    else:
        text = f":warning: not delivered: {escape(reason) or 'unknown reason'}"
    return text, [{"type": "context", "elements": [{"type": "mrkdwn", "text": clip(text, PLAIN_TEXT_MAX)}]}]


_STATE_FIELDS = ("status", "assignee", "urgency", "queue")


def state(event: Message) -> tuple[str, list[Block]]:
    """A state change (claimed, assigned, resolved, reopened, urgency)."""
    parts = []
    changes = event.data.get("changes")
    if isinstance(changes, dict):
        for key, value in changes.items():
            parts.append(f"{escape(str(key))}: {escape(str(value)) or '—'}")
    else:
        for key in _STATE_FIELDS:
            if key in event.data:
                parts.append(f"{key}: {escape(str(event.data[key])) or '—'}")
    by = event.sender.name if event.sender and event.sender.is_agent and event.sender.name else ""
    text = event.text and escape(event.text)
    line = text or ", ".join(parts) or "state changed"
    if by and not text:
        line += f" (by {escape(by)})"
    line = f":arrows_counterclockwise: {line}"
    return line, [{"type": "context", "elements": [{"type": "mrkdwn", "text": clip(line, PLAIN_TEXT_MAX)}]}]


def translation(event: Message) -> tuple[str, list[Block]]:
    """A customer message's translation (``translation``) or an agent's reply as sent
    (``reply_translation``), posted under the original in the thread; a failure says so."""
    data = event.data
    source, target = str(data.get("source") or "?"), str(data.get("target") or "?")
    if data.get("error"):
        title = f":warning: *translation unavailable* ({escape(str(data['error']))})"
        tail = "the original is above" if event.name == "translation" else "sent to the customer as written"
        line = f"{title}: {tail}"
        return line, [{"type": "context", "elements": [{"type": "mrkdwn", "text": clip(line, PLAIN_TEXT_MAX)}]}]
    what = "Translation" if event.name == "translation" else "Sent to the customer"
    title = f":globe_with_meridians: *{what}* ({literal(source)} → {literal(target)})"
    blocks: list[Block] = [{"type": "context", "elements": [{"type": "mrkdwn", "text": title}]},
                           *plain_sections(event.text)]
    return f"{title}: {_fallback(event.text)}", blocks


ICONS = {"sla_warning": ":hourglass_flowing_sand: ", "sla_breach": ":alarm_clock: ", "survey_result": ":star: ",
         "dispute_step": ":scales: "}


def generic(event: Message, *, mention: str = "") -> tuple[str, list[Block]]:
    """Any other event (sla_warning, sla_breach, survey_result, ...): its name and text
    (plain text: a survey comment is the customer's)."""
    label, text = event.name.replace("_", " "), event.text
    if text.lower().startswith(label.lower() + ":"):  # "SLA warning: ..." is not labelled twice
        label, text = text[: len(label)], text[len(label) + 1:].lstrip()
    title = f"{mention + ' ' if mention else ''}{ICONS.get(event.name, '')}*{literal(label)}*"
    blocks: list[Block] = [{"type": "context", "elements": [{"type": "mrkdwn", "text": title}]}]
    blocks.extend(plain_sections(text))
    return f"{title}: {_fallback(text)}" if text else title, blocks


def notice(text: str) -> tuple[str, list[Block]]:
    """A line from the bridge itself (e.g. an unknown command), trusted text, escaped."""
    line = escape(text)
    return line, [{"type": "context", "elements": [{"type": "mrkdwn", "text": clip(line, PLAIN_TEXT_MAX)}]}]


def escalated(event: Message, *, mention: str = "") -> tuple[str, list[Block]]:
    """A conversation that already has a thread here became urgent, or was reopened while urgent."""
    conv = summary(event)
    reason = str(conv.get("urgency_reason") or "")
    lead = f"{mention} " if mention else ""
    what = "reopened by the customer (urgent)" if event.data.get("reopened") else "now urgent"
    line = f"{lead}:rotating_light: *{what}*" + (f" ({escape(reason)})" if reason else "")
    blocks: list[Block] = [{"type": "section", "text": {"type": "mrkdwn", "text": line}}, *plain_sections(event.text)]
    return f"{line}: {_fallback(event.text)}", blocks
