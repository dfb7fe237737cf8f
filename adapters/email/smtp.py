"""Sending over SMTP with aiosmtplib; SMTP replies mapped to the bridge's send errors.

4xx (and any network trouble) -> `TransientError` (the dispatcher retries on a capped
backoff); 5xx -> `PermanentError` (dead letter), ``unreachable`` when the server
refused the recipient's mailbox; a refused login -> `IntegrationBroken`.
"""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from adapters.email.config import EmailConfig
from bridge.errors import IntegrationBroken, PermanentError, SendError, TransientError

_MAILBOX_CODES = {550, 551, 553}  # the mailbox does not exist / is not ours / bad name


def classify(code: int, text: str, *, recipient_refused: bool = False) -> SendError:
    reason = f"SMTP {code} {text}".strip()
    if 400 <= code < 500:
        return TransientError(reason)
    if code in (530, 534, 535):
        return IntegrationBroken(f"{reason} (check channels.email.smtp_user / smtp_password)")
    if 500 <= code < 600:
        return PermanentError(reason, unreachable=recipient_refused and code in _MAILBOX_CODES)
    return TransientError(reason)


async def send(config: EmailConfig, message: EmailMessage, *, sender: str, recipients: list[str]) -> str:
    """Send one message to exactly ``recipients`` (never the addresses in its headers)."""
    password = config.smtp_password.get_secret_value() if config.smtp_password else None
    try:
        _, response = await aiosmtplib.send(
            message,
            sender=sender,
            recipients=recipients,
            hostname=config.smtp_host,
            port=config.smtp_port,
            username=config.smtp_user,
            password=password,
            use_tls=config.smtp_tls == "tls",
            start_tls=config.smtp_tls == "starttls",
            tls_context=config.tls_context() if config.smtp_tls != "none" else None,
            timeout=config.smtp_timeout_s,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        first = exc.recipients[0]
        raise classify(first.code, first.message, recipient_refused=True) from None
    except aiosmtplib.SMTPAuthenticationError as exc:
        raise IntegrationBroken(f"SMTP login refused: {exc.code} {exc.message} "
                                "(check channels.email.smtp_user / smtp_password)") from None
    except aiosmtplib.SMTPResponseException as exc:
        raise classify(exc.code, exc.message) from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        raise TransientError(f"SMTP server {config.smtp_host}:{config.smtp_port} unreachable: {exc}") from None
    return response
