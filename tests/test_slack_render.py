"""Slack text in both directions: escaping, agents' wire text, commands, Block Kit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from adapters.slack import blocks, commands
from adapters.slack.escape import escape, literal, to_plain, unescape
from bridge.model import Attachment, Message, Sender

# strings a customer may send that must render exactly as written and ping, link or
# format nothing in Slack
HOSTILE = [
    "<!channel> the line is down",
    "<!here|here> <!everyone>",
    "hi <@U123> and <@U456|boss>",
    "<http://evil.example|click for your invoice>",
    "<mailto:ceo@example.com|ceo>",
    "<#C0123|general>",
    "<!subteam^S0123|@oncall>",
    "<!date^1392734382^{date_num}|fallback>",
    "a & b < c > d",
    "&lt;already escaped&gt; &amp;amp;",
    "*bold* _italic_ ~strike~ `code` ```block```",
    "> quoted\n>> double",
    ":rotating_light: @channel @here",
    "\u202eevil right-to-left\u202c and emoji 😀 漢字 Привет",
    "line1\r\nline2\ttab",
    "",
]


def mrkdwn_tokens(text: str) -> list[str]:
    """What Slack would parse as a mention or link in a mrkdwn string."""
    return re.findall(r"<[^<>]*>", text)


def all_mrkdwn(blocks_: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(str(node.get("text", "")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks_)
    return found


def plain_text_of(blocks_: list[dict[str, Any]]) -> str:
    return "".join(b["text"]["text"] for b in blocks_
                   if b.get("type") == "section" and b.get("text", {}).get("type") == "plain_text")


def event(name: str, text: str, **data: Any) -> Message:
    conversation = {"id": "abc123abc123-1", "channel": "telegram", "address": "42", "language": "en",
                    "urgency": "urgent", "urgency_reason": "keyword 'production line stopped'", "queue": "default",
                    "customer": "Maria", **data.pop("conversation", {})}
    return Message(kind="event", channel="slack", name=name, conversation_id="abc123abc123-1", text=text,
                   sender=Sender(id="42", name="Maria"), data={"conversation": conversation, **data})


@pytest.mark.parametrize("text", HOSTILE)
def test_escape_round_trips_and_leaves_no_tokens(text: str) -> None:
    escaped = escape(text)
    assert mrkdwn_tokens(escaped) == []
    assert "<" not in escaped and ">" not in escaped
    assert unescape(escaped) == text


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_customer_text_renders_literally_in_the_first_post(text: str) -> None:
    fallback, body = blocks.opening(event("escalation", text, conversation={"customer": text}), urgent=True,
                                    mention="<!subteam^S999>")
    assert plain_text_of(body) == text
    for mrkdwn in all_mrkdwn(body):
        assert [t for t in mrkdwn_tokens(mrkdwn) if t != "<!subteam^S999>"] == []
    assert [t for t in mrkdwn_tokens(fallback) if t != "<!subteam^S999>"] == []
    # the customer's name shows (escaped, formatting marks fenced) in the title and the Customer field
    assert literal(text) in all_mrkdwn(body)[0] and escape(text) in all_mrkdwn(body)[0].replace("\u200b", "")


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_follow_up_renders_literally(text: str) -> None:
    fallback, body = blocks.customer_message(event("customer_message", text))
    assert plain_text_of(body) == text
    assert mrkdwn_tokens(fallback) == [] and all(mrkdwn_tokens(m) == [] for m in all_mrkdwn(body))
    assert unescape(fallback) == f"Maria: {text}"


def test_first_post_shows_the_case_and_buttons() -> None:
    fallback, body = blocks.opening(event("escalation", "URGENT: production line stopped"), urgent=True,
                                    mention="<!here>")
    assert fallback.startswith("<!here> ")
    fields = {f["text"].split("\n")[0].strip("*"): f["text"].split("\n", 1)[1] for f in body[1]["fields"]}
    assert fields == {"Customer": "Maria", "Channel": "telegram", "Language": "en",
                      "Urgency": "urgent (keyword 'production line stopped')", "Queue": "default",
                      "Conversation": "abc123abc123-1"}
    assert plain_text_of(body) == "URGENT: production line stopped"
    (actions,) = [b for b in body if b["type"] == "actions"]
    assert [(e["text"]["text"], e["action_id"], e["value"]) for e in actions["elements"]] == [
        ("Claim", "bridge:claim", "abc123abc123-1"), ("Resolve", "bridge:resolve", "abc123abc123-1")]


def test_routine_first_post_has_no_mention() -> None:
    fallback, body = blocks.opening(event("new_conversation", "invoice please", conversation={"urgency": "routine"}),
                                    urgent=False, mention="<!here>")
    assert "<!here>" not in fallback and all("<!here>" not in m for m in all_mrkdwn(body))
    assert "New conversation from Maria" in fallback


def test_long_text_is_split_into_sections_and_kept_whole() -> None:
    text = "x" * 7000
    _, body = blocks.customer_message(event("customer_message", text))
    sections = [b for b in body if b.get("text", {}).get("type") == "plain_text"]
    assert len(sections) == 3 and plain_text_of(body) == text
    assert len(body) <= blocks.MAX_BLOCKS


def test_attachments_are_listed() -> None:
    message = event("customer_message", "photo of the defect")
    message.attachments = [Attachment(name="<b>defect</b>.jpg", mime="image/jpeg", size=1234)]
    _, body = blocks.customer_message(message)
    (context,) = [b for b in body if b["type"] == "context" and "defect" in b["elements"][0]["text"]]
    assert context["elements"][0]["text"] == "• &lt;b&gt;defect&lt;/b&gt;.jpg (image/jpeg, 1234 bytes)"


def test_delivery_and_state_lines() -> None:
    ok, _ = blocks.delivery(event("delivery", "", status="delivered"))
    assert ok == ":white_check_mark: sent to customer"
    failed, _ = blocks.delivery(event("delivery", "bot was blocked by the user", status="failed",
                                      reason="telegram: <403> blocked"))
    assert failed == ":warning: not delivered: telegram: &lt;403&gt; blocked"
    state, _ = blocks.state(event("state", "resolved by Alice", change="resolve"))
    assert state == ":arrows_counterclockwise: resolved by Alice"


# -- agents' wire text -> what the customer reads ---------------------------------------


@pytest.mark.parametrize(("wire", "plain"), [
    ("Hi <@U0CUST>, thanks", "Hi @Maria, thanks"),
    ("see <https://track.example.com/1|track.example.com/1>", "see https://track.example.com/1"),
    ("see <https://track.example.com/1|here>", "see here (https://track.example.com/1)"),
    ("<https://example.com>", "https://example.com"),
    ("mail <mailto:help@example.com|help@example.com>", "mail help@example.com"),
    ("in <#C0123|general>", "in #general"),
    ("<!here> fyi", "@here fyi"),
    ("a &amp; b &lt; c &gt; d", "a & b < c > d"),
    ("&amp;lt; stays", "&lt; stays"),
    ("<@U0NOBODY>", "@U0NOBODY"),
])
def test_agent_wire_text_to_plain(wire: str, plain: str) -> None:
    assert to_plain(wire, {"U0CUST": "Maria"}) == plain


@pytest.mark.parametrize(("text", "mode", "kind", "out"), [
    ("Your part ships today", "default_out", "reply", "Your part ships today"),
    ("note: VIP, be nice", "default_out", "note", "VIP, be nice"),
    ("NOTE: shouting", "default_out", "note", "shouting"),
    ("reply: hello", "default_out", "reply", "hello"),
    ("&gt;&gt; hello", "default_out", "reply", "hello"),
    ("Your part ships today", "explicit", "note", "Your part ships today"),
    ("reply: Your part ships today", "explicit", "reply", "Your part ships today"),
    ("&gt;&gt; Your part ships today", "explicit", "reply", "Your part ships today"),
    ("&gt;&gt;a &amp; b", "explicit", "reply", "a &amp; b"),
    ("note: &gt;&gt; draft", "explicit", "note", "&gt;&gt; draft"),
    ("  note:  spaced", "explicit", "note", "spaced"),
])
def test_reply_or_note(text: str, mode: commands.ReplyMode, kind: str, out: str) -> None:
    parsed = commands.parse(text, mode=mode)
    assert (parsed.kind, parsed.text) == (kind, out)


@pytest.mark.parametrize(("text", "name", "data"), [
    ("!claim", "claim", {}),
    ("!resolve", "resolve", {}),
    ("!reopen", "reopen", {}),
    ("!assign <@U0BOB>", "assign", {"assignee_id": "U0BOB"}),
    ("!assign <@U0BOB|bob>", "assign", {"assignee_id": "U0BOB"}),
    ("!assign bob", "assign", {"assignee": "bob"}),
    ("!urgency urgent", "urgency", {"urgency": "urgent"}),
    ("!urgency ROUTINE", "urgency", {"urgency": "routine"}),
    ("!urgent", "urgency", {"urgency": "urgent"}),
    ("!Resolve", "resolve", {}),
])
def test_commands(text: str, name: str, data: dict[str, str]) -> None:
    parsed = commands.parse(text)
    assert (parsed.kind, parsed.name, parsed.data) == ("command", name, data)


@pytest.mark.parametrize("text", ["!frobnicate", "!assign", "!urgency maybe", "!resolve now please"])
def test_bad_commands_are_explained_not_sent(text: str) -> None:
    parsed = commands.parse(text)
    assert parsed.kind == "invalid" and parsed.error


def test_a_lone_bang_is_a_reply() -> None:
    assert commands.parse("!").kind == "reply"


# -- setting it up -------------------------------------------------------------------------


def test_the_app_manifest_asks_for_what_the_adapter_uses() -> None:
    import yaml

    from adapters.slack.config import SlackConfig

    manifest = yaml.safe_load((Path(__file__).parents[1] / "deploy" / "slack-app-manifest.yaml").read_text())
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"chat:write", "channels:history", "groups:history", "users:read", "users:read.email",
            "files:read"} <= scopes
    settings = manifest["settings"]
    assert {"message.channels", "message.groups"} <= set(settings["event_subscriptions"]["bot_events"])
    path = SlackConfig.model_fields["events_path"].default
    assert settings["event_subscriptions"]["request_url"].endswith(path)
    assert settings["interactivity"]["is_enabled"] and settings["interactivity"]["request_url"].endswith(path)


def _load(tmp_path: Path, slack: dict[str, Any], env: dict[str, str]) -> Any:
    from tests.harness import load_config

    return load_config(tmp_path, {"channels": {"slack": slack}, "agents": {"channels": ["slack"]}}, env)


def test_check_config_accepts_a_good_section(tmp_path: Path) -> None:
    env = {"T_SLACK_BOT": "xoxb-1-2-abc", "T_SLACK_SECRET": "s3cret"}
    settings, channels = _load(tmp_path, {"bot_token": "${T_SLACK_BOT}", "signing_secret": "${T_SLACK_SECRET}",
                                          "agents_channel": "C0AGENTS01", "urgent_channel": "#support-urgent"}, env)
    assert channels["slack"].agents_channel == "C0AGENTS01" and settings.agents.channels == ["slack"]


@pytest.mark.parametrize(("section", "env", "expected"), [
    ({"bot_token": "${T_SLACK_BOT}", "signing_secret": "${T_SLACK_SECRET}", "agents_channel": "C0AGENTS01"},
     {"T_SLACK_BOT": "xapp-wrong-kind", "T_SLACK_SECRET": "s"}, "channels.slack.bot_token: Value error, a bot token"),
    ({"bot_token": "${T_SLACK_BOT}", "agents_channel": "C0AGENTS01"},
     {"T_SLACK_BOT": "xoxb-1"}, "mode events needs signing_secret"),
    ({"bot_token": "${T_SLACK_BOT}", "mode": "socket", "agents_channel": "C0AGENTS01"},
     {"T_SLACK_BOT": "xoxb-1"}, "mode socket needs app_token"),
    ({"bot_token": "${T_SLACK_BOT}", "signing_secret": "${T_SLACK_SECRET}", "agents_channel": "support"},
     {"T_SLACK_BOT": "xoxb-1", "T_SLACK_SECRET": "s"}, "channels.slack.agents_channel"),
    ({"bot_token": "xoxb-literal-in-the-file", "signing_secret": "${T_SLACK_SECRET}", "agents_channel": "C0AGENTS01"},
     {"T_SLACK_SECRET": "s"}, "channels.slack.bot_token: secrets must come from the environment"),
])
def test_check_config_names_the_problem(tmp_path: Path, section: dict[str, Any], env: dict[str, str],
                                        expected: str) -> None:
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, section, env)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


@pytest.mark.parametrize(("configured", "markup"), [
    ("<!here>", "<!here>"),
    ("@here", "<!here>"),
    ("@channel", "<!channel>"),
    ("U0ONCALL1", "<@U0ONCALL1>"),
    ("@U0ONCALL1 @W0ONCALL2", "<@U0ONCALL1> <@W0ONCALL2>"),
    ("S0ONCALL1", "<!subteam^S0ONCALL1>"),
    ("<!subteam^S0ONCALL1|@oncall>", "<!subteam^S0ONCALL1|@oncall>"),
    ("@oncall", "@oncall"),
    ("a<b", "a&lt;b"),
    ("", ""),
])
def test_configured_mentions_become_slack_markup(configured: str, markup: str) -> None:
    from adapters.slack.escape import mention_markup

    assert mention_markup(configured) == markup


def test_attachments_with_a_link_are_linked_and_others_are_not() -> None:
    message = event("customer_message", "see photos")
    message.attachments = [Attachment(name="defect.jpg", mime="image/jpeg", url="https://bridge.example/f/1?a=1&b=2"),
                           Attachment(name="x|y.png", mime="image/png", url="https://evil.example/<!channel>"),
                           Attachment(name="local.bin", url="data:application/octet-stream;base64,AAAA")]
    _, body = blocks.customer_message(message)
    (context,) = [b for b in body if b["type"] == "context" and "defect" in b["elements"][0]["text"]]
    text = context["elements"][0]["text"]
    assert text.splitlines() == ["• <https://bridge.example/f/1?a=1&amp;b=2|defect.jpg> (image/jpeg)",
                                 "• x|y.png (image/png)", "• local.bin (application/octet-stream)"]
