"""The composition root's list of parts: the only place `bridge` names adapters and flows.

Entries are import paths, imported lazily, so a channel's heavy library is loaded only
when that channel is configured.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bridge.adapter import Capabilities

# channel name -> (config model, adapter class)
CHANNELS: dict[str, tuple[str, str]] = {
    "api": ("adapters.api.config:ApiConfig", "adapters.api.adapter:ApiAdapter"),
    "widget": ("adapters.widget.config:WidgetConfig", "adapters.widget.adapter:WidgetAdapter"),
    "null": ("adapters.null:NullConfig", "adapters.null:NullAdapter"),
    "telegram": ("adapters.telegram.config:TelegramConfig", "adapters.telegram.adapter:TelegramAdapter"),
    "slack": ("adapters.slack.config:SlackConfig", "adapters.slack.adapter:SlackAdapter"),
    "email": ("adapters.email.config:EmailConfig", "adapters.email.adapter:EmailAdapter"),
}

# step name -> factory building the step from a flows.turn.FlowConfig
STEPS: dict[str, str] = {
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
}

# steps that always run first / last, whatever engine.steps says
REQUIRED_FIRST = ["commands"]

ENGINE = "flows.engine:Engine"

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


def load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def channel_config_model(name: str) -> Any:
    return load(CHANNELS[name][0])


def adapter_class(name: str) -> Any:
    return load(CHANNELS[name][1])


def capabilities(channels: Iterable[str]) -> dict[str, Capabilities]:
    """What each configured channel's adapter declares it can do, for the flows."""
    return {name: adapter_class(name).capabilities for name in channels if name in CHANNELS}
