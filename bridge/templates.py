"""Reply templates per language: built-in defaults, overridden by ``replies:`` in config."""

from __future__ import annotations

from typing import Any

from bridge.errors import ConfigError

DEFAULTS: dict[str, dict[str, str]] = {
    "urgent": {
        "en": "We have received your urgent message and alerted our team. A person will contact you within minutes.",
        "zh": "我们已收到您的紧急消息并已通知团队，工作人员将在几分钟内与您联系。",
        "ru": "Мы получили ваше срочное сообщение и уже передали его команде. Сотрудник свяжется с вами в течение нескольких минут.",
        "tl": "Natanggap namin ang iyong apurahang mensahe at naabisuhan na ang aming team. Makikipag-ugnayan sa iyo ang isang tao sa loob ng ilang minuto.",
        "ms": "Kami telah menerima mesej segera anda dan memaklumkan pasukan kami. Seorang kakitangan akan menghubungi anda dalam beberapa minit.",
    },
    "ack": {
        "en": "Thank you for your message. Our team will reply within {reply_within}. Your reference: {reference}.",
        "zh": "感谢您的来信。我们的团队将在{reply_within}内回复。您的编号：{reference}。",
        "ru": "Спасибо за сообщение. Наша команда ответит в течение {reply_within}. Номер обращения: {reference}.",
        "tl": "Salamat sa iyong mensahe. Sasagot ang aming team sa loob ng {reply_within}. Ang iyong reference: {reference}.",
        "ms": "Terima kasih atas mesej anda. Pasukan kami akan membalas dalam masa {reply_within}. Rujukan anda: {reference}.",
    },
    "ack_by": {
        "en": "Thank you for your message. Our team will reply by {reply_by}. Your reference: {reference}.",
        "zh": "感谢您的来信。我们的团队将在{reply_by}之前回复。您的编号：{reference}。",
        "ru": "Спасибо за сообщение. Наша команда ответит до {reply_by}. Номер обращения: {reference}.",
        "tl": "Salamat sa iyong mensahe. Sasagot ang aming team bago ang {reply_by}. Ang iyong reference: {reference}.",
        "ms": "Terima kasih atas mesej anda. Pasukan kami akan membalas sebelum {reply_by}. Rujukan anda: {reference}.",
    },
    "minutes": {
        "en": "{n} minutes",
        "zh": "{n}分钟",
        "ru": "{n} мин",
        "tl": "{n} minuto",
        "ms": "{n} minit",
    },
    "hours": {
        "en": "{n} hours",
        "zh": "{n}小时",
        "ru": "{n} ч",
        "tl": "{n} oras",
        "ms": "{n} jam",
    },
}


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def template_error(text: str) -> str | None:
    """Why ``text`` would fail when rendered (an unclosed ``{``, a positional ``{0}``), or
    None; checked with the renderer itself, so check-config and the engine agree."""
    try:
        text.format_map(_Missing())
    except (ValueError, IndexError, KeyError, AttributeError, TypeError) as exc:
        return f"{text!r} cannot be rendered: {exc}; write {{{{ and }}}} for literal braces"
    return None


class Templates:
    """Looks a template up in the customer's language, falling back to the default one."""

    def __init__(self, overrides: dict[str, dict[str, str]] | None = None, default_language: str = "en") -> None:
        self.default_language = default_language
        self.table: dict[str, dict[str, str]] = {name: dict(langs) for name, langs in DEFAULTS.items()}
        problems = [f"replies.{name}.{lang}: {error}" for name, langs in (overrides or {}).items()
                    for lang, text in langs.items() if (error := template_error(text))]
        if problems:
            raise ConfigError(problems)
        for name, langs in (overrides or {}).items():
            self.table.setdefault(name, {}).update(langs)

    def has(self, name: str, language: str) -> bool:
        return language in self.table.get(name, {})

    def render(self, name: str, language: str, **values: Any) -> str:
        langs = self.table.get(name)
        if not langs:
            raise KeyError(f"no reply template named {name!r}")
        text = langs.get(language) or langs.get(self.default_language) or next(iter(langs.values()))
        return text.format_map(_Missing(values))
