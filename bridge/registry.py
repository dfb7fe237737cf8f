"""The composition root's list of parts: the only place `bridge` names adapters and flows.

Entries are import paths, imported lazily, so a channel's heavy library is loaded only
when that channel is configured. A separate package adds a channel or a step without
editing the core by declaring an entry point::

    [project.entry-points."bridge.channels"]
    sms = "bridge_sms.adapter:SmsAdapter"      # an `Adapter` subclass with its `config_model`

    [project.entry-points."bridge.steps"]
    loyalty = "bridge_loyalty:build"           # a factory: FlowConfig -> step

A plug-in cannot replace a built-in name (it is ignored with a warning).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from bridge.adapter import Capabilities

log = logging.getLogger("bridge.registry")

CHANNEL_GROUP = "bridge.channels"
STEP_GROUP = "bridge.steps"

# channel name -> (config model, adapter class); a plug-in's config model is its adapter's
BUILTIN_CHANNELS: dict[str, tuple[str, str]] = {
    "api": ("adapters.api.config:ApiConfig", "adapters.api.adapter:ApiAdapter"),
    "widget": ("adapters.widget.config:WidgetConfig", "adapters.widget.adapter:WidgetAdapter"),
    "null": ("adapters.null:NullConfig", "adapters.null:NullAdapter"),
    "telegram": ("adapters.telegram.config:TelegramConfig", "adapters.telegram.adapter:TelegramAdapter"),
    "slack": ("adapters.slack.config:SlackConfig", "adapters.slack.adapter:SlackAdapter"),
    "email": ("adapters.email.config:EmailConfig", "adapters.email.adapter:EmailAdapter"),
}

# step name -> factory building the step from a bridge.turn.FlowConfig
BUILTIN_STEPS: dict[str, str] = {
    "commands": "flows.commands:build",
    "triage": "flows.triage:build",
    "routing": "flows.routing:build",
    "language": "flows.language:build",
    "urgency": "flows.urgency:build",
    "topics": "flows.topics:build",
    "kb": "flows.kb:build",
    "order_status": "flows.order_status:build",
    "hours": "flows.hours:build",
    "sla": "flows.sla:build",
    "survey": "flows.survey:build",
    "dispute": "flows.dispute:build",
    "translation": "flows.translation:build",  # added before routing when translation.provider is set
}

# steps that always run first / last, whatever engine.steps says
REQUIRED_FIRST = ["commands"]

# `bridge triage train` / `bridge triage eval`
TRIAGE_TRAIN = "flows.labels:train_command"
TRIAGE_EVAL = "flows.labels:eval_command"


def example_faq() -> Path:
    """The example knowledge base shipped with the flows (an electronics distributor's FAQ)."""
    spec = importlib.util.find_spec("flows")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "data" / "faq.yaml"


def without_config() -> dict[str, Any]:
    """The configuration with no config file at all: the web chat widget for customers and its
    agent console, with the support flows on the example FAQ, so `bridge run` on a fresh
    machine is a working support desk with no external account."""
    return {
        "channels": {"widget": {}},
        "agents": {"channels": ["widget"]},
        "engine": {"steps": ["survey", "triage", "kb", "routing", "sla"]},
        "flows": {"triage": {"multilingual": True}, "kb": {"path": str(example_faq())},
                  "survey": {"delay_min": 1}},  # a minute after resolving, to see it when trying
    }


def _plugins(group: str, builtin: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for point in entry_points(group=group):
        if point.name in builtin:
            log.warning("a plug-in's name is taken by a built-in part; ignored",
                        extra={"group": group, "plugin": point.name, "value": point.value})
        else:
            found[point.name] = point.value
    return found


@functools.cache
def channels() -> dict[str, tuple[str, str]]:
    """Every channel: built-in ones and those installed packages declare."""
    plugins = {name: ("", value) for name, value in _plugins(CHANNEL_GROUP, BUILTIN_CHANNELS).items()}
    return {**BUILTIN_CHANNELS, **plugins}


@functools.cache
def steps() -> dict[str, str]:
    """Every step factory: built-in ones and those installed packages declare."""
    return {**BUILTIN_STEPS, **_plugins(STEP_GROUP, BUILTIN_STEPS)}


def load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def channel_config_model(name: str) -> Any:
    config_path, adapter_path = channels()[name]
    return load(config_path) if config_path else load(adapter_path).config_model


def adapter_class(name: str) -> Any:
    return load(channels()[name][1])


def capabilities(names: Iterable[str]) -> dict[str, Capabilities]:
    """What each configured channel's adapter declares it can do, for the flows."""
    known = channels()
    return {name: adapter_class(name).capabilities for name in names if name in known}
