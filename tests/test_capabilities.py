"""Flows decide by what a channel can do (its adapter's `Capabilities`), never by its name:
a channel the flows never heard of gets buttons, tickets and confirmations by capability."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from bridge import registry
from bridge.adapter import NO_CAPABILITIES, Capabilities
from bridge.model import Contact
from bridge.turn import FlowConfig
from flows import routing, survey
from tests.test_flows_helpers import Chat, Clock, make_config, replies

ROOT = Path(__file__).parent.parent


def test_flows_compare_no_value_with_a_channel_name() -> None:
    names = set(registry.BUILTIN_CHANNELS)
    for path in (ROOT / "flows").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Compare):
                continue
            for part in ast.walk(node):
                if isinstance(part, ast.Constant) and part.value in names:
                    raise AssertionError(f"{path}:{node.lineno}: decides by the channel name {part.value!r}; "
                                         "ask its capabilities (FlowConfig.can)")


def test_every_channel_declares_its_capabilities() -> None:
    declared = registry.capabilities(registry.BUILTIN_CHANNELS)
    assert set(declared) == set(registry.BUILTIN_CHANNELS)
    assert all(caps is not NO_CAPABILITIES for name, caps in declared.items() if name != "null")
    assert declared["telegram"].max_text_length == 4096
    assert [name for name, caps in declared.items() if caps.email_addresses] == ["email"]


def with_sms(clock: Clock, **caps: bool) -> FlowConfig:
    """A plug-in channel ``sms`` (not a built-in name) beside the built-in ones."""
    config = make_config({"survey": {"delay_min": 30}}, clock=clock, channels=("slack", "email"),
                         queues={"default": {"email": "support@example.com"}})
    config.channels = config.channels | {"sms"}
    config.capabilities = {**config.capabilities, "sms": Capabilities(**caps)}
    return config


async def test_a_channel_that_declares_buttons_gets_the_survey_as_buttons() -> None:
    for has_buttons, buttons in ((True, 5), (False, 0)):
        clock = Clock()
        config = with_sms(clock, buttons=has_buttons)
        c = Chat(config, [survey.build(config)], channel="sms")
        await c.say("my order is late")
        await c.command("resolve")
        clock.advance(minutes=30)
        (ask,) = replies(await c.fire_due())
        assert len(ask.buttons) == buttons


async def test_tickets_go_to_the_channel_whose_addresses_are_email_addresses() -> None:
    clock = Clock()
    config = with_sms(clock)
    # the email channel's adapter, under another name: tickets follow the capability
    config.capabilities = {"slack": config.can("slack"), "mailer": dataclasses.replace(NO_CAPABILITIES,
                                                                                        email_addresses=True)}
    c = Chat(config, [routing.build(config)], channel="sms", contact=Contact(id="c1"))
    turn = await c.say("Could you send the invoice again?")
    assert [(m.channel, m.name, m.address) for m in turn.outbound if m.name == "ticket"] == [
        ("mailer", "ticket", "support@example.com")]
