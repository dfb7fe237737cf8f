"""Helpers shared by the support-flow steps: their config, templates and message tests."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from bridge.config import format_validation
from bridge.errors import ConfigError
from bridge.model import Message, Sender
from bridge.turn import FlowConfig, Turn

DATA_DIR = Path(__file__).parent / "data"


M = TypeVar("M", bound=BaseModel)


def step_settings(config: FlowConfig, step: str, model: type[M]) -> M:
    """Validate ``flows.<step>`` with ``model``; a bad value raises ConfigError naming its key."""
    raw = config.settings.flows.get(step) or {}
    if not isinstance(raw, dict):
        raise ConfigError([f"flows.{step}: must be a mapping of settings"])
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation(exc, f"flows.{step}")) from None


@cache
def builtin_templates() -> dict[str, dict[str, str]]:
    """The flows' reply templates for en/zh/ru/tl/ms (flows/data/templates.yaml)."""
    data = yaml.safe_load((DATA_DIR / "templates.yaml").read_text(encoding="utf-8"))
    return {str(name): {str(k): str(v) for k, v in langs.items()} for name, langs in data.items()}


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(turn: Turn, name: str, language: str | None = None, **values: Any) -> str:
    """A template in the customer's language: config (``replies:``) first, then built-ins."""
    lang = language or turn.language
    templates = turn.config.templates
    if templates.has(name, lang):
        return templates.render(name, lang, **values)
    builtin = builtin_templates().get(name, {})
    text = builtin.get(lang)
    if text is None and name in templates.table:
        return templates.render(name, lang, **values)
    if text is None:
        text = builtin.get(templates.default_language) or builtin.get("en")
    if text is None:
        raise KeyError(f"no reply template named {name!r}")
    return text.format_map(_Missing(values))


def shown_to_customer(sender: Sender | None) -> Sender | None:
    """What a customer's reply says of the agent: the display name, never a login or a
    platform user id (docs/console.md)."""
    return Sender(name=sender.name, is_agent=True) if sender is not None else None


def is_auto(message: Message) -> bool:
    """An auto-reply (out-of-office, bounce): never answered, never counted as a score."""
    return bool(message.data.get("auto"))


def is_customer_text(turn: Turn) -> bool:
    """A customer's own message with text that the bot may answer."""
    message = turn.message
    return message.kind == "customer" and not is_auto(message) and bool(message.text.strip())


def state_dict(turn: Turn, key: str) -> dict[str, Any]:
    """The triage steps' reasons for one flow (``conversation.data[key]``), a plain dict
    created empty. Flows with state that others read keep a typed record instead
    (bridge/flowstate.py)."""
    state = turn.conversation.data.get(key)
    if not isinstance(state, dict):
        state = {}
        turn.conversation.data[key] = state
    return state
