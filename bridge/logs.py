"""Structured logs: one JSON object per line (or plain text), with the fields a record
carries in ``extra`` (conversation ids, channels, reasons). Known secrets are masked."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class _Redactor(logging.Filter):
    """Masks every known secret in a record: its message, its extras (rendered when they
    are not strings), and its traceback (rendered here, then masked)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        found = set(self.secrets) | {s for s in secrets if s and len(s) >= 4}
        self.secrets = sorted(found, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        record.msg = self.mask(record.getMessage())
        record.args = ()
        for key, value in list(vars(record).items()):
            if key in _STANDARD:
                continue
            if isinstance(value, str):
                setattr(record, key, self.mask(value))
            elif not isinstance(value, bool | int | float | type(None)):
                rendered = json.dumps(value, ensure_ascii=False, default=str)
                if self.mask(rendered) != rendered:
                    setattr(record, key, self.mask(rendered))
        if record.exc_info:
            record.exc_text = self.mask(_PLAIN.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


_PLAIN = logging.Formatter()
_REDACTORS: list[_Redactor] = []  # the installed handlers' filters (one, after setup)


def add_secret(value: str) -> None:
    """Mask ``value`` from now on: a secret the bridge generated or derived at run time."""
    for redactor in _REDACTORS:
        redactor.add([value])


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_"))
        line = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += f" [{extras}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        return line


def setup(level: str = "INFO", fmt: str = "json", secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    redactor = _Redactor(secrets)
    handler.addFilter(redactor)
    _REDACTORS[:] = [redactor]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "httpx", "telegram", "slack_bolt", "slack_sdk"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
