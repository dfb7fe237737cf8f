"""The email section of the config: secrets only from the environment, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.email.config import EmailConfig
from bridge.errors import ConfigError
from tests.harness import load_config


def section(**extra: Any) -> dict[str, Any]:
    return {"channels": {"email": {"address": "support@example.com", "imap_host": "imap.example.com",
                                   "imap_user": "support@example.com", **extra}}}


def test_passwords_come_from_the_environment(tmp_path: Path) -> None:
    _, channels = load_config(tmp_path, section(imap_password="${T_IMAP}"), {"T_IMAP": "s3cret"})
    config = channels["email"]
    assert isinstance(config, EmailConfig) and config.imap_password is not None
    assert config.imap_password.get_secret_value() == "s3cret" and "s3cret" not in repr(config)
    with pytest.raises(ConfigError) as literal:
        load_config(tmp_path, section(imap_password="s3cret"))
    assert "channels.email.imap_password: secrets must come from the environment" in str(literal.value)
    assert "s3cret" not in str(literal.value)


@pytest.mark.parametrize(("extra", "message"), [
    ({"imap_password": None}, "imap_user and imap_password"),
    ({"imap_password": "${T_IMAP}", "imap_tls": "ssl"}, "channels.email.imap_tls"),
    ({"imap_password": "${T_IMAP}", "address": "not an address"}, "channels.email.address"),
    ({"imap_password": "${T_IMAP}", "address": "support+x@example.com"}, "no plus-tag"),
    ({"imap_password": "${T_IMAP}", "idle_renew_s": 1800}, "channels.email.idle_renew_s"),
    ({"imap_password": "${T_IMAP}", "smtp_user": "u"}, "smtp_user and smtp_password"),
])
def test_config_errors_name_the_key(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path, section(**extra), {"T_IMAP": "x"})
    assert message in str(error.value)
